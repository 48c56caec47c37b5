# Two entry points for a fresh machine (see README): `make bench` and `make test`.
# Each creates .venv, installs what it needs, builds the extension against the installed torch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.14.1
export MAX_JOBS ?= 2
export TORCH_CUDA_ARCH_LIST ?= 8.0;9.0+PTX

.PHONY: bench test build clean

$(VENV)/.deps: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" "setuptools>=77" wheel "ninja>=1.11" "pybind11>=2.12"
	$(BIN)/pip install -q "pytest>=8.0" "pytest-benchmark>=4.0" "hypothesis>=6.100" "numpy>=1.26" \
	    "matplotlib>=3.8" "tqdm>=4.66"
	touch $@

build: $(VENV)/.deps
	$(BIN)/pip install -q --no-build-isolation -e .

bench: build
	$(BIN)/python -m sam_fused.check
	$(BIN)/python -m sam_fused.demo --out bench-results/sann_demo.png
	$(BIN)/python -m pytest benchmarks/ --quick -q -p no:cacheprovider

test: build
	$(BIN)/python -m pytest tests -q

clean:
	rm -rf build $(VENV) sam_fused/*.so
