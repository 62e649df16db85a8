# Two commands on a fresh machine with Python 3.11+ and pip:
#   make run    installs into .venv and runs the default experiment
#   make test   installs into .venv (with the dev extra) and runs the tests
# torch is installed before the project, pinned, so that installing the project never pulls
# another torch as a side effect. TORCH_SPEC is what that first pip install receives: here
# torch==2.13.0 resolves to the CPU build; elsewhere pass the build you want (see README.md):
#   make run TORCH_SPEC="torch==2.13.0 --index-url <PyTorch's CPU or CUDA wheel index>"

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
ARGS ?=
PYTEST_ARGS ?= -n 2 --dist loadfile
BIN := $(VENV)/bin

.PHONY: install run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python -m mimo_l2o $(ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/generate_docs.py

clean:
	rm -rf $(VENV) .cache outputs multirun mlflow.db mlruns mlartifacts
