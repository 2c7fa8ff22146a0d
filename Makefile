# Everything runs from a project virtual environment (.venv), created on first use: `make run` needs only
# the core install (onnxruntime, no torch); `make test` adds the dev extras (torch CPU, Pythia, weaver-core).
PY      ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
PIP_OPTS = -c .ci/constraints.txt --only-binary=pythia8mc,fastjet

.PHONY: install install-dev triton test lint docs run samples notebook clean

$(VENV)/.core:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(PIP_OPTS) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core
	$(BIN)/pip install -q $(PIP_OPTS) -e ".[dev]"
	touch $@

install: $(VENV)/.core
install-dev: $(VENV)/.dev

# a local Triton server (PyTriton ships tritonserver; it needs numpy < 2, hence its own environment):
# src/jettagger_coffea/triton_server.py serves `jettagger export --triton` repositories from it
TRITON_VENV ?= .venv-triton
$(TRITON_VENV)/.ok:
	$(PY) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install -q --upgrade pip
	$(TRITON_VENV)/bin/pip install -q "nvidia-pytriton==0.7.0" "onnxruntime>=1.17"
	touch $@
triton: $(TRITON_VENV)/.ok

lint: install-dev
	$(BIN)/ruff check src tests processors examples benchmarks
	$(BIN)/ruff format --check src tests processors examples benchmarks
	$(BIN)/mypy

docs: install-dev
	$(BIN)/mkdocs build --strict --site-dir site

test: install-dev triton lint docs
	$(BIN)/python -m pytest --durations=25

run: install
	$(BIN)/jettagger run

# the example notebook, executed in place with the default model (its outputs are committed)
notebook: install-dev
	$(BIN)/jupyter-execute --inplace examples/tag_fatjets.ipynb

# larger, uncommitted training / test sets (seeded; R = 0.8 multi-class and R = 1.0 W/Z vs QCD)
samples: install-dev
	$(BIN)/jettagger generate --process qcd wqq zqq tbqq --njets 25000 --seed 11 --jobs 2 --format jetclass -o samples/train
	$(BIN)/jettagger generate --process qcd wqq zqq tbqq --njets 5000 --seed 12 --jobs 2 --format jetclass -o samples/test
	$(BIN)/jettagger generate --process qcd wqq zqq --njets 15000 --seed 21 --radius 1.0 --jobs 2 --format jetclass -o samples/train_r10
	$(BIN)/jettagger generate --process qcd wqq zqq --njets 2000 --seed 22 --radius 1.0 --jobs 2 --format jetclass -o samples/test_r10

clean:
	rm -rf $(VENV) $(TRITON_VENV) .pytest_cache .ruff_cache site
