# Two entry points: `make run` serves the weather example, `make test` runs the suite.
# Each creates the virtualenv it needs on first use (Python >= 3.11).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench bench-distributed soak clean

$(BIN)/agentd: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("agentd needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e ".[test,models]"
	touch $@

tests/js/node_modules/.package-lock.json: tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error

run: $(BIN)/agentd
	$(BIN)/agentd serve --config examples/weather/langgraph.json

# PostgreSQL is checked first: when it is down, tests/with_postgres.py starts a throwaway one for
# the run (or stops with one line saying what is missing), so no PostgreSQL test is ever skipped.
test: $(BIN)/agentd tests/js/node_modules/.package-lock.json
	$(BIN)/ruff check .
	$(BIN)/python tests/with_postgres.py -- $(BIN)/pytest -n auto -q

lint: $(BIN)/agentd
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(BIN)/agentd
	bash bench/setup-reference.sh
	$(BIN)/python bench/run.py

bench-distributed: $(BIN)/agentd
	bash bench/setup-reference.sh
	$(BIN)/python bench/distributed.py

soak: $(BIN)/agentd
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) tests/js/node_modules
