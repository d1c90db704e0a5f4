"""A package, so this folder's conftest does not take the name `conftest` from the one above."""
