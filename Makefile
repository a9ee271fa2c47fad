# One-command set-up: `make run` installs and starts the service, `make test` installs and
# runs the whole test suite. Both create the virtualenv in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-bench run test lint format bench-engine bench-service bench-tpe bench-lists clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

install-bench: install
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'

run: install
	$(BIN)/backprop standalone

# Everything a fresh machine needs: the venv, Redis, PostgreSQL and Chromium (see the script).
test: install
	bash scripts/test-services.sh
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy --strict core
	$(BIN)/mypy api workers cli client
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .

bench-engine: install-bench
	$(BIN)/python bench/engine.py

bench-service: install
	$(BIN)/python bench/service.py

bench-tpe: install-bench
	$(BIN)/python bench/tpe_vs_random.py --seeds 5 --budget 30 --epochs 10 --startup 10

bench-lists: install
	$(BIN)/python bench/list_runs.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info backprop.db*
