# Two commands on a fresh machine with Python 3.10+:
#   make demo   the main job on the embedded default model (results in ./results)
#   make test   the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RESULTS ?= results
PYTEST_ARGS ?=

.PHONY: demo test test-fast bench notebooks-clean clean

$(BIN)/lape: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(BIN)/lape

demo: $(BIN)/lape
	$(BIN)/lape run --out $(RESULTS)

test: $(BIN)/lape
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(BIN)/lape
	$(BIN)/python -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

bench: $(BIN)/lape
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) $(RESULTS) .pytest_cache
