"""Build info recorded by setup.py, and the import-time check of the build against the running torch."""
import pathlib
import subprocess
import sys

import pytest
import torch

from sam_fused import _compat

CUDA_BUILD = dict(VERSION="0.1.0+cu130torch2.14", TORCH_VERSION="2.14.1", TORCH_MAJOR_MINOR="2.14",
                  CUDA_VERSION="13.0", CUDA_TOOLKIT_VERSION="13.0", TORCH_CUDA_ARCH_LIST="8.0;9.0+PTX",
                  GIT_REVISION="abc", BUILD_MODE="cuda")
CPU_BUILD = dict(CUDA_BUILD, VERSION="0.1.0+cputorch2.14", CUDA_VERSION=None, CUDA_TOOLKIT_VERSION=None,
                 TORCH_CUDA_ARCH_LIST=None, BUILD_MODE="cpu")


@pytest.fixture
def build_info(monkeypatch):
    """Replace the recorded build info with a given one."""
    def use(info):
        monkeypatch.setattr(_compat, "load_build_info", lambda: info)
    monkeypatch.delenv(_compat.SKIP_ENV, raising=False)
    return use


def test_build_info_matches_the_torch_it_was_built_with():
    info = _compat.load_build_info()
    assert info is not None, "setup.py did not write sam_fused/_build_info.py"
    assert info["TORCH_MAJOR_MINOR"] == ".".join(torch.__version__.split(".")[:2])
    assert info["BUILD_MODE"] in ("cpu", "cuda")
    assert (info["CUDA_VERSION"] is None) == (info["BUILD_MODE"] == "cpu")
    assert _compat.mismatch(info, torch.__version__, torch.version.cuda) is None
    if info["BUILD_MODE"] == "cuda":  # nvcc's release, which may be an older minor than torch's CUDA
        toolkit_major, toolkit_minor = map(int, info["CUDA_TOOLKIT_VERSION"].split("."))
        torch_major, torch_minor = map(int, info["CUDA_VERSION"].split("."))
        assert toolkit_major == torch_major and toolkit_minor <= torch_minor
    else:
        assert info["CUDA_TOOLKIT_VERSION"] is None


@pytest.mark.parametrize("info, torch_version, torch_cuda", [
    (CUDA_BUILD, "2.14.1+cu130", "13.0"),
    (CUDA_BUILD, "2.14.0", "13.2"),   # same torch minor and CUDA major: ABI compatible
    (CPU_BUILD, "2.14.1+cpu", None),
    (CPU_BUILD, "2.14.1+cu130", "13.0"),  # a CPU build only registers CPU kernels: loads anywhere
])
def test_compatible_builds_pass(info, torch_version, torch_cuda):
    assert _compat.mismatch(info, torch_version, torch_cuda) is None


@pytest.mark.parametrize("info, torch_version, torch_cuda, expected", [
    (CUDA_BUILD, "2.13.0+cu130", "13.0", "built for torch 2.14, but torch 2.13 is running"),
    (CUDA_BUILD, "2.14.1+cu128", "12.8", "built with CUDA 13.0, but the running torch uses CUDA 12.8"),
    (CUDA_BUILD, "2.14.1+cpu", None, "the running torch is a CPU-only build"),
    (CPU_BUILD, "2.15.0", None, "built for torch 2.14, but torch 2.15 is running"),
])
def test_mismatched_torch_raises_a_clear_import_error(build_info, info, torch_version, torch_cuda, expected):
    build_info(info)
    loaded = []
    with pytest.raises(ImportError) as raised:
        _compat.load_extension((torch_version, torch_cuda), import_module=loaded.append)
    message = str(raised.value)
    assert not loaded, "the library must not be loaded into a mismatched torch"
    assert expected in message
    assert f"built:   sam_fused {info['VERSION']} built for torch 2.14.1" in message
    assert f"running: torch {torch_version}" in message
    assert "pip install --no-build-isolation ." in message and "docs/wheels.md" in message


def test_skip_env_loads_anyway(build_info, monkeypatch):
    build_info(CUDA_BUILD)
    monkeypatch.setenv(_compat.SKIP_ENV, "1")
    loaded = []
    _compat.load_extension(("2.13.0", "13.0"), import_module=loaded.append)
    assert loaded == ["sam_fused._C"]


def test_undefined_symbol_becomes_a_clear_import_error(build_info):
    build_info(CUDA_BUILD)

    def broken_library(name):
        raise ImportError(f"{name}: undefined symbol: _ZN3c1017RegisterOperatorsD1Ev")
    with pytest.raises(ImportError) as raised:
        _compat.load_extension(("2.14.1", "13.0"), import_module=broken_library)
    message = str(raised.value)
    assert "the compiled library failed to load" in message and "undefined symbol" in message
    assert "built:   sam_fused 0.1.0+cu130torch2.14" in message and "pip install --no-build-isolation ." in message


def test_missing_library_says_how_to_build(build_info):
    build_info(None)

    def not_built(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    with pytest.raises(ImportError, match="build_ext --inplace"):
        _compat.load_extension(("2.14.1", "13.0"), import_module=not_built)


def test_info_command_prints_the_build_info():
    info = _compat.load_build_info()
    result = subprocess.run([sys.executable, "-m", "sam_fused", "--info"], capture_output=True, text=True,
                            check=True, cwd=pathlib.Path(__file__).parents[1])
    for key, value in info.items():
        assert f"{key}" in result.stdout and str(value) in result.stdout
    assert f"running torch {torch.__version__}" in result.stdout
