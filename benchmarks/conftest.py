"""pytest-benchmark suite of the spatial-attention layer: which workloads run, and the report.

``pytest benchmarks/ --quick`` times fp32 at the UCI-HAR shapes on CPU (about a minute or two),
and on CUDA also CBAM stage 1, forward, backward and both (``-k cuda``: the CUDA cases only);
``pytest benchmarks/`` runs the full matrix (all HAR datasets of docs/design.md §7, CBAM ResNet-50
stages, fwd / fwd+bwd / bwd, bf16 and fp16, a size sweep on CUDA).

Every run writes the pytest-benchmark JSON (default ``bench-results/latest.json``) and prints
the table of `report.py`, with its PNG and Markdown next to the JSON.
"""
from __future__ import annotations

import importlib.util
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

CASES = ("fwd", "fwdbwd", "bwd")

# HAR datasets of docs/design.md §7: (window length T, sensor channels M).
HAR_DATASETS = {
    "UCI-HAR": (128, 9),
    "PAMAP2": (171, 40),
    "OPPORTUNITY": (30, 113),
    "UniMiB-SHAR": (151, 3),
    "WISDM": (200, 3),
    "USC-HAD": (512, 6),
    "DASA": (125, 45),
}
SANN_CHANNELS = (64, 128, 256, 512)
CBAM_RESNET50_STAGES = ((32, 256, 56, 56), (32, 512, 28, 28), (32, 1024, 14, 14), (32, 2048, 7, 7))
# Quick mode on CUDA: torch.compile only for these workloads (its warm-up dominates otherwise).
QUICK_CUDA_COMPILE = ("UCI-HAR b1", "CBAM s1")
# CUDA size sweep: SAM input (B, 64, 16, 9) with B chosen so that N ~ 1e4 * sqrt(10)^k up to 1e8.
SWEEP_SAMPLE = (64, 16, 9)


@dataclass(frozen=True)
class Workload:
    """One timed configuration; every implementation of the layer runs on the same one."""

    label: str  # where the shape comes from, e.g. "UCI-HAR b1" (SANN block 1)
    layer: str  # "har": mean pool, 3x1 conv with bias; "cbam": mean+max pool, 7x7 conv, no bias
    case: str  # "fwd", "fwdbwd" or "bwd"
    shape: tuple[int, int, int, int]
    dtype: torch.dtype
    device: str
    threads: int | None = None  # torch.set_num_threads while timed; None: the session's count

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def shape_name(self) -> str:
        return "x".join(map(str, self.shape))

    @property
    def id(self) -> str:
        threads = f"-t{self.threads}" if self.threads else ""
        return f"{self.case}-{self.label.replace(' ', '.')}-{self.shape_name}-{self.dtype_name}-{self.device}{threads}"

    @property
    def group(self) -> str:
        threads = f", {self.threads} thread{'s' if self.threads > 1 else ''}" if self.threads else ""
        return f"{self.case} {self.shape_name} {self.dtype_name} {self.device} ({self.label}{threads})"

    @property
    def compiled_in_quick_mode(self) -> bool:
        if self.device == "cuda":
            return self.label in QUICK_CUDA_COMPILE and self.case != "bwd"
        return self.shape[0] >= 128 and not self.threads  # the batch-128 shapes at the session's threads

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def floor_bytes(self) -> int:
        """docs/design.md §3 memory floor: fwd reads x and writes out (2Ne), bwd reads g and x and
        writes dx (3Ne), fwd+bwd both (5Ne)."""
        passes = {"fwd": 2, "bwd": 3, "fwdbwd": 5}[self.case]
        return passes * self.numel * self.dtype.itemsize


def sann_sam_shapes(batch: int, T: int, M: int) -> list[tuple[int, int, int, int]]:
    """SAM input shapes of the four SANN blocks: each block conv (3,1)/stride (2,1)/pad (1,0)
    halves the time axis rounding up, so block k sees ceil(T / 2^k) rows."""
    return [(batch, C, -(-T // 2**k), M) for k, C in enumerate(SANN_CHANNELS, start=1)]


def har_shapes(quick: bool) -> list[tuple[str, tuple]]:
    """(label, shape) of the HAR workloads: in quick mode the four UCI-HAR blocks at batch 128
    and block 1 at batch 16 (cache-resident: where instructions, not memory, set the time) and
    1; in full mode every dataset's first and last block (all four for UCI-HAR) at batch 128
    and 1."""
    if quick:
        T, M = HAR_DATASETS["UCI-HAR"]
        blocks = [(f"UCI-HAR b{k}", s) for k, s in enumerate(sann_sam_shapes(128, T, M), start=1)]
        return blocks + [("UCI-HAR b1", sann_sam_shapes(batch, T, M)[0]) for batch in (16, 1)]
    shapes = []
    for batch in (128, 1):
        for name, (T, M) in HAR_DATASETS.items():
            blocks = list(enumerate(sann_sam_shapes(batch, T, M), start=1))
            if name != "UCI-HAR":
                blocks = [blocks[0], blocks[-1]]
            shapes += [(f"{name} b{k}", s) for k, s in blocks]
    return shapes


def sweep_shapes() -> list[tuple[str, tuple]]:
    per_sample = math.prod(SWEEP_SAMPLE)
    batches = sorted({max(1, round(10 ** (4 + k / 2) / per_sample)) for k in range(9)})
    return [("sweep", (b, *SWEEP_SAMPLE)) for b in batches]


def build_workloads(quick: bool) -> list[Workload]:
    if quick:
        # Each shape at the session's thread count, and but batch 1 once more at one thread: a
        # single core must stream reads and writes alone, the hardest case for a fused kernel.
        shapes = har_shapes(quick=True)
        cpu = [Workload(label, "har", case, shape, torch.float32, "cpu", threads)
               for threads in (None, 1) for label, shape in shapes if not (threads and shape[0] == 1)
               for case in ("fwd", "fwdbwd")]
        cuda = [Workload(label, "har", case, shape, torch.float32, "cuda")
                for label, shape in shapes if shape[0] >= 128 for case in CASES]
        cuda += [Workload("CBAM s1", "cbam", case, CBAM_RESNET50_STAGES[0], torch.float32, "cuda") for case in CASES]
        return cpu + cuda
    workloads = []
    for device in ("cpu", "cuda"):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for case in CASES:
                workloads += [Workload(label, "har", case, s, dtype, device) for label, s in har_shapes(quick=False)]
                workloads += [Workload(f"CBAM s{k}", "cbam", case, s, dtype, device)
                              for k, s in enumerate(CBAM_RESNET50_STAGES, start=1)]
    workloads += [Workload(label, "har", case, s, torch.float32, "cuda")
                  for case in ("fwd", "fwdbwd") for label, s in sweep_shapes()]
    return _unique(workloads)


def _unique(workloads):
    seen = {}
    for w in workloads:
        seen.setdefault(w.id, w)
    return list(seen.values())


@dataclass(frozen=True)
class TimingBudget:
    """How long each benchmark is timed: rounds = seconds / (time of one call), clamped."""

    seconds: float
    min_rounds: int
    max_rounds: int


QUICK_BUDGET = TimingBudget(seconds=0.4, min_rounds=5, max_rounds=200)
FULL_BUDGET = TimingBudget(seconds=1.5, min_rounds=7, max_rounds=1000)


# ----------------------------------------------------------------------------- options, params

def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", default=False,
                     help="sam_fused benchmarks: fp32, UCI-HAR shapes (CUDA: and CBAM stage 1), few rounds")
    parser.addoption("--torch-threads", type=int, default=None, metavar="N",
                     help="sam_fused benchmarks: torch.set_num_threads(N) for every implementation "
                          "(default: torch's own choice). 1 gives stable CPU numbers on a busy machine.")


def pytest_configure(config):
    config._sam_session_start = time.time()
    if config.getoption("--torch-threads"):
        torch.set_num_threads(config.getoption("--torch-threads"))
    # Runs before pytest-benchmark's own pytest_configure (trylast), so these defaults reach it.
    if config.getoption("benchmark_json", None) is None:
        results = config.rootpath / "bench-results"
        results.mkdir(exist_ok=True)
        config.option.benchmark_json = results / "latest.json"
    if config.getoption("--quick") and config.getoption("benchmark_columns", None) is None:
        config.option.benchmark_columns = ["median", "iqr", "rounds"]


def _workloads(config) -> dict[str, Workload]:
    if not hasattr(config, "_sam_workloads"):
        config._sam_workloads = {w.id: w for w in build_workloads(config.getoption("--quick"))}
    return config._sam_workloads


def pytest_generate_tests(metafunc):
    if "workload" not in metafunc.fixturenames:
        return
    cuda_only = metafunc.definition.get_closest_marker("cuda") is not None
    params = []
    for w in _workloads(metafunc.config).values():
        if w.device == "cuda":
            marks = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
        elif cuda_only:
            continue
        else:
            marks = ()
        params.append(pytest.param(w.id, marks=marks, id=w.id))
    metafunc.parametrize("workload", params, indirect=True)


@pytest.fixture
def workload(request) -> Workload:
    return _workloads(request.config)[request.param]


@pytest.fixture(scope="session")
def timing_budget(pytestconfig) -> TimingBudget:
    return QUICK_BUDGET if pytestconfig.getoption("--quick") else FULL_BUDGET


@pytest.fixture(scope="session")
def start_compiler(pytestconfig):
    """Call with a device before a torch.compile benchmark: compiles a trivial function once per
    device so inductor's one-off start-up (imports, worker pool, C++/Triton toolchain) is not
    counted in the first benchmark's compile_s. The start-up times go into machine_info."""
    startup_s = pytestconfig._sam_compiler_startup_s = {}

    def start(device: str) -> None:
        if device not in startup_s:
            begin = time.perf_counter()
            torch._dynamo.reset()
            torch.compile(lambda t: t * 2, dynamic=False)(torch.ones(4, device=device))
            startup_s[device] = time.perf_counter() - begin
    return start


def pytest_collection_modifyitems(config, items):
    # Run all implementations of one workload back to back (same inputs, warm caches, readable
    # progress), first; other benchmarks in this folder follow in their own order.
    order = {wid: i for i, wid in enumerate(_workloads(config))}

    def workload_index(item):
        callspec = getattr(item, "callspec", None)
        return order.get(callspec.params.get("workload")) if callspec else None

    ours = [it for it in items if workload_index(it) is not None]
    others = [it for it in items if workload_index(it) is None]
    items[:] = sorted(ours, key=workload_index) + others


# ----------------------------------------------------------------------------- machine, report

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_kernel_info() -> dict:
    """The instruction set the fused CPU kernels choose (SAM_FUSED_CPU_ISA may force one) and the
    cache sizes they plan their blocks with."""
    try:
        import sam_fused  # noqa: F401  (registers the ops)
        l1d, l2, l3 = torch.ops.sam_fused._cpu_cache_sizes()
        return {"cpu_isa": torch.ops.sam_fused._cpu_isa(), "cache_bytes": {"L1d": l1d, "L2": l2, "L3": l3}}
    except (ImportError, AttributeError, RuntimeError, ValueError) as err:
        return {"cpu_isa": f"unknown ({err})", "cache_bytes": {}}


def _cpu_header() -> str:
    info = cpu_kernel_info()
    caches = ", ".join(f"{k} {v // 1024} KiB" for k, v in info["cache_bytes"].items() if v)
    return (f"CPU {cpu_model()}: {os.cpu_count()} cores, {caches or 'cache sizes unknown'}; "
            f"sam_fused CPU ISA {info['cpu_isa']}; torch threads {torch.get_num_threads()}")


def pytest_report_header(config):
    return [f"sam_fused: {_cpu_header()}"]


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["sam_fused"] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        **cpu_kernel_info(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "mode": "quick" if config.getoption("--quick") else "full",
        "compiler_startup_s": getattr(config, "_sam_compiler_startup_s", {}),
    }


def _load_report_module():
    spec = importlib.util.spec_from_file_location("sam_fused_bench_report", Path(__file__).with_name("report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own table
def pytest_terminal_summary(terminalreporter, config):
    # pytest-benchmark wrote the JSON in pytest_sessionfinish, which runs before this hook; an
    # older file (nothing was timed this session, e.g. --collect-only) is not reported.
    json_path = config.getoption("benchmark_json", None)
    if hasattr(json_path, "flush"):  # --benchmark-json on the command line: a file, open or not
        if not json_path.closed:  # some pytest-benchmark versions close it after writing
            json_path.flush()
        json_path = json_path.name
    if (json_path is None or not Path(json_path).is_file()
            or Path(json_path).stat().st_mtime < config._sam_session_start):
        return
    report = _load_report_module()
    data = report.load(json_path)
    if not report.rows(data):
        return
    png, md = Path(json_path).with_suffix(".png"), Path(json_path).with_suffix(".md")
    text = report.render_text(data)
    md.write_text(report.render_markdown(data))
    try:
        report.plot(data, png)
    except ImportError:  # a GPU machine without matplotlib still gets the table and the JSON
        png = "none (matplotlib not installed)"
    terminalreporter.write_sep("=", "sam_fused benchmark summary")
    terminalreporter.write_line(text)
    terminalreporter.write_line(f"JSON {json_path}, table {md}, plot {png}")
