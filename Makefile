# The README's two commands: `make serve` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install serve test lint typecheck examples clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

examples: $(STAMP)
	$(BIN)/python examples/train.py examples/models

serve: examples
	$(BIN)/servekit serve examples/models

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy src

test: lint
	$(BIN)/pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info
