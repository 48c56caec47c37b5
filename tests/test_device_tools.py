"""The tools for a lent GPU machine (tools/device_bundle.py, tools/device_run.sh, the sanitizer
driver): the parts that run without a GPU or a build."""
import csv
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_device_run_without_a_bundle_says_how_to_make_one(tmp_path):
    r = subprocess.run(["bash", os.path.join(ROOT, "tools", "device_run.sh"), "check"], capture_output=True, text=True,
                       env=dict(os.environ, BUNDLE=str(tmp_path), RESULTS=str(tmp_path / "out")))
    assert r.returncode == 2
    assert "device_bundle.py" in r.stderr


def test_device_run_is_valid_bash():
    assert subprocess.run(["bash", "-n", os.path.join(ROOT, "tools", "device_run.sh")]).returncode == 0


def test_device_bundle_help():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "device_bundle.py"), "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "--torch" in r.stdout and "--arch" in r.stdout


def test_sanitizer_driver_covers_every_required_plan_feature():
    # the compute-sanitizer driver checks its plan coverage only when run (on a GPU machine, with
    # device minutes counting); --plans-only runs that check here, through the CPU emulation
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_sanitize_driver.py"), "--plans-only"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fwd halo" in r.stdout and "fwd two pass" in r.stdout


def test_ncu_source_summary_totals_and_ranks_per_kernel(tmp_path):
    # tools/ncu_source_summary.py over a CSV shaped like `ncu --page source --csv --print-source
    # sass`: a kernel block printed twice (ncu prints a page per view) counts once
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import ncu_source_summary as summary

    header = ["Address", "Source", summary.SAMPLES, summary.SHARED, summary.SHARED_IDEAL, summary.SHARED_EXCESS,
              summary.GLOBAL, summary.GLOBAL_EXCESS]
    name = "void sam_fused::block::block_program_kernel<sam_fused::block::FwdMain<float, (bool)0, int, (bool)0>, " \
           "sam_fused::block::Args<float>>(T2)"
    block = [["Kernel Name", name], header,
             ["0x10", "LDS R43, [R44]", "5", "16", "4", "12", "0", "0"],
             ["0x20", "FMUL R8, R8, R43", "70", "0", "0", "0", "0", "0"],
             ["0x30", "LDG.E R1, desc[UR4][R2.64]", "1", "0", "0", "0", "1,024", "512"]]
    path = tmp_path / "sass.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(block + block)
    with open(path, newline="") as f:
        text = summary.summarise(list(csv.reader(f)), top=2)
    assert text.count("FwdMain<float, (bool)0, int, (bool)0>:") == 1
    assert "shared wavefronts 16 (excess 12), global sectors 1024 (excess 512), stall samples 76" in text
    lines = text.splitlines()
    assert "LDS R43" in lines[lines.index("  top excess wavefronts:") + 1]
    assert "FMUL R8" in lines[lines.index("  top stall samples:") + 1]


class _FakeCuda:
    """Just enough of torch.cuda for tools/gpu_kernel_times.per_call_us: each call of the timed
    function costs 2 ms of fake device time, a graph replay 1 ms per captured call; capture fails
    when `capture_fails`."""

    def __init__(self, capture_fails=False):
        self.clock, self.capturing, self.capture_fails = 0.0, None, capture_fails
        cuda = self

        class Event:
            def __init__(self, enable_timing=False):
                self.t = None

            def record(self):
                self.t = cuda.clock

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return end.t - self.t

        class Graph:
            def __init__(self):
                self.calls = 0

            def replay(self):
                cuda.clock += self.calls * 1.0

        class Capture:
            def __init__(self, graph):
                self.graph = graph

            def __enter__(self):
                if cuda.capture_fails:
                    raise RuntimeError("capture failed")
                cuda.capturing = self.graph

            def __exit__(self, *exc):
                cuda.capturing = None

        class Stream:
            def wait_stream(self, other):
                pass

        self.Event, self.CUDAGraph, self.graph, self.Stream = Event, Graph, Capture, Stream
        self.current_stream = Stream
        self.stream = lambda s: __import__("contextlib").nullcontext()

    def synchronize(self):
        pass

    def call(self):
        if self.capturing is not None:
            self.capturing.calls += 1
        else:
            self.clock += 2.0


def test_per_call_us_times_batches_and_graph_replays():
    import types

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from gpu_kernel_times import per_call_us

    for fails, expected_us, captured in ((False, 1000.0, True), (True, 2000.0, False)):
        cuda = _FakeCuda(capture_fails=fails)
        torch = types.SimpleNamespace(cuda=cuda)
        stats = {}
        assert per_call_us(torch, cuda.call, 5, stats=stats) == 2000.0  # 2 ms a call, in µs
        assert stats["host_us"] >= 0 and "graph" in stats and stats["graph"] is False
        stats = {}
        assert per_call_us(torch, cuda.call, 5, graph=True, stats=stats) == expected_us
        assert stats["graph"] is captured


def test_cold_call_us_flushes_l2_before_every_timed_call():
    import types

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from gpu_kernel_times import cold_call_us

    cuda = _FakeCuda()
    flushes = []

    class Buffer:
        def __init__(self, n):
            self.n = n

        def zero_(self):
            flushes.append(self.n)
            cuda.clock += 50.0  # outside the events: not in the time

    cuda.get_device_properties = lambda i: types.SimpleNamespace(L2_cache_size=50 << 20)
    torch = types.SimpleNamespace(cuda=cuda, uint8="uint8", empty=lambda n, dtype, device: Buffer(n))
    assert cold_call_us(torch, cuda.call, 7) == 2000.0
    assert flushes == [100 << 20] * 7


def test_host_time_tool_runs_on_the_cpu():
    # tools/gpu_host_time.py is for a GPU machine; --device cpu runs the same table and profile
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_host_time.py"), "--device", "cpu",
                        "--shape", "2,4,6,3", "--calls", "20"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for row in ("| x.clone() |", "| torch.ops.sam_fused.spatial_attention_fwd |",
                "| forward + backward through autograd |"):
        assert row in r.stdout
    assert "sam_fused::spatial_attention_bwd" in r.stdout
