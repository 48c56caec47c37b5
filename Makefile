# Two entry points for a fresh machine (see README): `make bench` and `make test`.
# Each creates .venv, installs what it needs, builds the extension against the installed torch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.14.1
export MAX_JOBS ?= 2
export TORCH_CUDA_ARCH_LIST ?= 8.0;9.0+PTX

.PHONY: bench test build cmake-check release-wheels clean

$(VENV)/.deps: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" "setuptools>=77" wheel "ninja>=1.11" "pybind11>=2.12"
	$(BIN)/pip install -q "pytest>=8.0" "pytest-benchmark>=4.0" "hypothesis>=6.100" "numpy>=1.26" \
	    "matplotlib>=3.8" "tqdm>=4.66" "nvidia-cuda-cuobjdump>=13.0" "nvidia-cuda-nvdisasm>=13.0"
	touch $@

build: $(VENV)/.deps
	$(BIN)/pip install -q --no-build-isolation -e .

bench: build
	$(BIN)/python -m sam_fused.check
	$(BIN)/python -m sam_fused.demo --out bench-results/sann_demo.png
	$(BIN)/python -m pytest benchmarks/ --quick -q -p no:cacheprovider

test: build
	$(BIN)/python -m pytest tests -q

# CMakeLists.txt (the op library for C++ users) built once against the CPU-only torch wheel,
# then loaded into Python and run once.
cmake-check:
	$(PYTHON) -m venv .venv-cmake
	.venv-cmake/bin/pip install -q torch==2.13.0 numpy
	cmake -S . -B build-cmake -DCMAKE_BUILD_TYPE=Release \
	    -DCMAKE_PREFIX_PATH="$$(.venv-cmake/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build build-cmake -j $(MAX_JOBS)
	.venv-cmake/bin/python -c "import torch; torch.ops.load_library('build-cmake/libsam_fused.so'); \
	    x = torch.randn(2, 4, 5, 3); out, q = torch.ops.sam_fused.spatial_attention_fwd(x, torch.ones(1, 1, 3, 1), None, 'mean', False); \
	    s = torch.sigmoid(torch.nn.functional.conv2d(x.mean(1, keepdim=True), torch.ones(1, 1, 3, 1), padding=(1, 0))); \
	    torch.testing.assert_close(out, x * s); print('cmake build: libsam_fused.so loads and matches the reference')"

# Release check (docs/wheels.md): the cu13, cu12 and CPU wheels, each built in a fresh venv and
# smoke-tested in another. About 26 min on 2 cores (measured); not part of CI.
release-wheels:
	$(PYTHON) tools/build_wheel.py --torch 2.14.1 --cuda 13.0 --smoke
	$(PYTHON) tools/build_wheel.py --torch 2.10.0 --cuda 12.8 --fetch-toolkit --smoke
	$(PYTHON) tools/build_wheel.py --torch 2.13.0 --cpu --smoke

clean:
	rm -rf build build-cmake $(VENV) .venv-cmake sam_fused/*.so
