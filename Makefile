# Two entry points for a fresh machine (see README): `make bench` and `make test`.
# Each creates .venv, installs what it needs, builds the extension against the installed torch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.14.1
export MAX_JOBS ?= 2
export TORCH_CUDA_ARCH_LIST ?= 8.0;9.0+PTX

.PHONY: bench test build lint format cmake-check release-wheels gpu-check resource-report clean

$(VENV)/.deps: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-cache-dir --upgrade pip
	$(BIN)/pip install -q --no-cache-dir "$(TORCH)" "setuptools>=77" wheel "ninja>=1.11"
	$(BIN)/pip install -q --no-cache-dir "pytest>=8.0" "pytest-benchmark>=4.0" "hypothesis>=6.100" "numpy>=1.26" \
	    "matplotlib>=3.8" "tqdm>=4.66" "onnx>=1.17" "onnxscript>=0.6" "onnxruntime>=1.20" "scipy>=1.11" \
	    "nvidia-cuda-cuobjdump>=13.0" "nvidia-cuda-nvdisasm>=13.0"
	touch $@

# The editable install is redone only when a source or the build script changed; ninja then
# recompiles only the changed files (setup.py keeps the objects in build/).
BUILD_INPUTS := setup.py $(shell find csrc -type f) $(VENV)/.deps
$(VENV)/.built: $(BUILD_INPUTS)
	$(BIN)/pip install -q --no-build-isolation -e .
	touch $@

build: $(VENV)/.built

bench: build
	$(BIN)/python -m sam_fused.check
	$(BIN)/python -m sam_fused.demo --out bench-results/sann_demo.png
	$(BIN)/python -m pytest benchmarks/ --quick -q -p no:cacheprovider

test: build
	$(BIN)/python -m pytest tests -q

# Style checks CI runs (config: [tool.ruff] in pyproject.toml, .clang-format): every C++/CUDA
# file under csrc/ (`make format` rewrites them).
CLANG_FORMAT_FILES = $(shell git ls-files 'csrc/*.h' 'csrc/*.cuh' 'csrc/*.cpp' 'csrc/*.cu')

# Linters only (no torch): ruff for Python, clang-format for C++/CUDA. clang-format's output
# changes between major releases, so the check pins one major.
$(VENV)/.lint-deps:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "ruff>=0.17" "clang-format>=23.1,<24"
	touch $@

lint: $(VENV)/.lint-deps
	$(BIN)/ruff check .
	$(BIN)/clang-format --dry-run --Werror $(CLANG_FORMAT_FILES)

format: $(VENV)/.lint-deps
	$(BIN)/clang-format -i $(CLANG_FORMAT_FILES)

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
	    torch.testing.assert_close(out, x * s); \
	    torch.testing.assert_close(torch.ops.sam_fused.pointwise_attention_fwd(x, x), x * torch.sigmoid(x)); \
	    print('cmake build: libsam_fused.so loads and matches the reference')"

# Release check (docs/wheels.md): the cu13, cu12 and CPU wheels, each built in a fresh venv and
# smoke-tested in another. About 26 min on 2 cores (measured); not part of CI.
release-wheels:
	$(PYTHON) tools/build_wheel.py --torch 2.14.1 --cuda 13.0 --smoke
	$(PYTHON) tools/build_wheel.py --torch 2.10.0 --cuda 12.8 --fetch-toolkit --smoke
	$(PYTHON) tools/build_wheel.py --torch 2.13.0 --cpu --smoke

# On a machine with a CUDA GPU and a CUDA torch (no venv, no network; README "GPU check"):
# build in place for this GPU, CUDA tests, parity in four dtypes, compute-sanitizer, ncu, the
# quick CUDA benchmarks and measured-vs-predicted times, all under $(OUT)/ (summary.md first).
# `make -n gpu-check` prints every step's command; GPU_CHECK_ARGS="--budget 1500" allows more time.
OUT ?= gpu-results
GPU_JOBS ?= $(shell nproc 2>/dev/null || echo 4)
GPU_CHECK_ARGS ?=
gpu-check:
ifneq (,$(findstring n,$(firstword -$(MAKEFLAGS))))
	+@$(PYTHON) tools/gpu_check.py --dry-run --out $(OUT) --jobs $(GPU_JOBS) $(GPU_CHECK_ARGS)
endif
	$(PYTHON) tools/gpu_check.py --out $(OUT) --jobs $(GPU_JOBS) $(GPU_CHECK_ARGS)

# Registers, spills, shared memory and occupancy of the CUDA kernels from ptxas (no GPU needed).
resource-report: $(VENV)/.deps
	$(BIN)/python benchmarks/resource_report.py

clean:
	rm -rf build build-cmake $(VENV) .venv-cmake sam_fused/*.so
