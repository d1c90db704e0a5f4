"""Contract tier: the store contract every backend passes (``store_contract.StoreContract``)."""

import pytest

# The suite's asserts live outside a test_ module; have pytest explain their failures all the same.
pytest.register_assert_rewrite(
    "contract.store_contract",
    "contract.traffic_contract",
    "contract.features_contract",
    "contract.namespace_contract",
)
