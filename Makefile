# Shortcuts for the commands in the README; each works without make too.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint ci clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/mcp-broker demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check mcp_broker tests
	$(BIN)/ruff format --check mcp_broker tests
	$(BIN)/mypy

ci:
	bash .ci/run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
