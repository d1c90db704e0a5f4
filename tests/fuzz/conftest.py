"""Settings of the fuzz tier, read once from the environment (the suite scrubs MCP_BROKER_* per test)."""

from __future__ import annotations

import os

# MCP_BROKER_FUZZ_SEED: the same seed generates the same cases. MCP_BROKER_FUZZ_CASES: generated tool
# calls in one run (the default suite runs 300 in about 20 s; a long run: MCP_BROKER_FUZZ_CASES=5000).
SEED = int(os.environ.get("MCP_BROKER_FUZZ_SEED", "9"))
CASES = int(os.environ.get("MCP_BROKER_FUZZ_CASES", "300"))
