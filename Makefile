# Two commands do all the set-up on a fresh machine (Python 3.10+):
#   make demo   build the embedded task and base model if missing, then train TRAPO on it (CPU)
#   make test   run the test suite (ruff check and format, mypy on the core, pytest with a coverage table)
# Both create .venv and install trapo into it on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first, so that no multi-GB CUDA build is pulled in.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,lab]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/trapo demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/ruff format --check src tests benchmarks experiments
	$(BIN)/mypy
	$(BIN)/python -m pytest --cov --cov-report=term:skip-covered

.PHONY: install demo test
