"""tools/gpu_check.py (`make gpu-check`): the dry run lists every step, a machine without a GPU
gets a clear "no CUDA GPU" and a non-zero exit, and the logs are judged right (sanitizer
summaries, Nsight Compute's CSV, timeouts) without a GPU."""
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import gpu_check  # noqa: E402
import gpu_sanitize_driver  # noqa: E402
import ncu_report  # noqa: E402

STEP_COMMANDS = {
    "env": "-c", "build": "setup.py build_ext --inplace", "tests": "pytest tests/test_cuda.py",
    "check": "sam_fused.check --device cuda --dtype float32 --dtype float64 --dtype float16 --dtype bfloat16",
    "memcheck": "--tool memcheck", "racecheck": "--tool racecheck", "synccheck": "--tool synccheck",
    "initcheck": "--tool initcheck", "ncu": "--kernel-name regex:block_program_kernel",
    "bench": "pytest benchmarks/ --quick -k cuda", "predicted": "benchmarks/predicted_report.py",
}


def run(*args, **kw):
    return subprocess.run([sys.executable, "tools/gpu_check.py", *args], cwd=ROOT, capture_output=True, text=True, **kw)


def test_dry_run_prints_every_step():
    done = run("--dry-run", "--out", "somewhere", "--jobs", "16")
    assert done.returncode == 0, done.stderr
    for name, command in STEP_COMMANDS.items():
        assert f"[{name}]" in done.stdout and command in done.stdout, name
    assert "MAX_JOBS=16" in done.stdout and "gpu_sanitize_driver.py" in done.stdout


def test_steps_runs_only_the_named_steps():
    # tools/device_run.sh short runs these through gpu_check (one list of commands, not two)
    short = "tests,check,determinism,memcheck,racecheck,times"
    done = run("--dry-run", "--steps", short)
    assert done.returncode == 0, done.stderr
    shown = {line.split("]")[0][1:] for line in done.stdout.splitlines() if line.startswith("[")}
    assert shown == {"env", *short.split(",")}
    bad = run("--dry-run", "--steps", "tests,nope")
    assert bad.returncode == 2 and "no step nope" in bad.stderr
    device_run = (Path(ROOT) / "tools" / "device_run.sh").read_text()
    assert f"--steps {short}" in device_run


def test_make_n_shows_the_steps():
    # --no-print-directory: under a parent make (CI's `make test`) make would end with "Leaving directory"
    command = ["make", "-n", "--no-print-directory", "gpu-check", f"PYTHON={sys.executable}", "OUT=elsewhere"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert all(f"[{name}]" in done.stdout for name in STEP_COMMANDS)
    last = done.stdout.rstrip().splitlines()[-1]  # the command make would run
    assert last.startswith(f"{sys.executable} tools/gpu_check.py --out elsewhere --jobs ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_a_gpu_says_so_and_exits_non_zero(tmp_path):
    done = run("--skip-build", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "no CUDA GPU" in done.stdout
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# sam_fused GPU check: no CUDA GPU") and "| memcheck | skipped |" in summary
    steps = {s["name"]: s["status"] for s in json.loads((tmp_path / "summary.json").read_text())["steps"]}
    assert steps["env"] == "pass" and steps["build"] == steps["tests"] == steps["ncu"] == "skipped"
    probe = (tmp_path / "01-env.log").read_text().split("PROBE ", 1)[1].splitlines()[0]
    assert json.loads(probe)["cuda_available"] is False
    done = run("--skip-build", "--out", str(tmp_path / "some"), "--steps", "tests,times")
    assert done.returncode == 2
    steps = {s["name"]: s for s in json.loads((tmp_path / "some" / "summary.json").read_text())["steps"]}
    assert steps["tests"]["detail"] == "no CUDA GPU" and steps["memcheck"]["detail"] == "not asked (--steps)"


def judged(tmp_path, name, text, rc=0):
    step = gpu_check.Step(name, [], 1, log=tmp_path / f"{name}.log", rc=rc)
    step.log.write_text(text)
    gpu_check.judge(step, tmp_path)
    return step


def test_sanitizer_logs_are_judged(tmp_path):
    clean = "driver: start\ndriver: ok: 256 spatial calls\n========= ERROR SUMMARY: 0 errors\n"
    assert judged(tmp_path, "memcheck", clean).status == gpu_check.PASS
    race = "driver: start\ndriver: ok\n========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n"
    assert judged(tmp_path, "racecheck", race).status == gpu_check.PASS
    dirty = ("driver: start\n========= Invalid __shared__ read of size 4\ndriver: ok\n"
             "========= ERROR SUMMARY: 3 errors\n")
    step = judged(tmp_path, "initcheck", dirty, rc=1)
    assert step.status == gpu_check.FAIL and "3 errors" in step.detail
    no_tool = "========= Error: Device not supported\n"
    assert judged(tmp_path, "synccheck", no_tool, rc=1).status == gpu_check.NOT_AVAILABLE
    crashed = ("driver: start\nTraceback (most recent call last):\nRuntimeError: boom\n"
               "========= ERROR SUMMARY: 0 errors\n")
    assert judged(tmp_path, "memcheck", crashed, rc=1).status == gpu_check.FAIL


KERNEL = "void sam_fused::block::block_program_kernel<sam_fused::block::{}, sam_fused::block::Args<float>>(T2)"
NCU_ROWS = [  # kernel, grid, block, then ncu_report.METRICS in order: time (ns), DRAM read, write (bytes), DRAM %,
    # achieved and theoretical occupancy %, registers, dynamic smem
    ("FwdMain<float, false, int>", "(264, 1, 1)", "(256, 1, 1)", "10,000", "18,874,368", "18,874,368", "85.5", "24.0",
     "25", "62", "90000"),
    ("BwdMain<float, false, int>", "(264, 1, 1)", "(256, 1, 1)", "20,000", "37,748,736", "18,874,368", "80", "23", "25",
     "48", "95000"),
    ("DwReduce<float>", "(1, 1, 1)", "(128, 1, 1)", "2,000", "1000", "64", "1", "3", "100", "32", "0"),
    ("FwdPool<float, true, int>", "(64, 1, 1)", "(256, 1, 1)", "5,000", "100", "0", "50", "50", "100", "32", "0"),
    ("FwdMain<float, true, int>", "(64, 1, 1)", "(256, 1, 1)", "5,000", "100", "100", "50", "50", "25", "62", "80000"),
    ("BwdMain<float, true, int>", "(64, 1, 1)", "(256, 1, 1)", "5,000", "300", "0", "50", "50", "25", "62", "80000"),
]


def ncu_csv():
    """Nsight Compute's raw page: program output, a header, a units row, one row per kernel."""
    text = io.StringIO()
    writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(["ID", "Kernel Name", "Grid Size", "Block Size", *ncu_report.METRICS])
    writer.writerow(["", "", "", "", "nsecond", "byte", "byte", "%", "%", "%", "register/thread", "byte"])
    writer.writerows([str(i), KERNEL.format(name), *rest] for i, (name, *rest) in enumerate(NCU_ROWS))
    return "==PROF== Connected to process 1\n" + text.getvalue()


def test_ncu_csv_becomes_per_call_table():
    floor = 2 * 4718592 * 4  # UCI-HAR block 1 forward, float32
    table, kernels = ncu_report.render(ncu_csv(), [("UCI-HAR b1", "fwd", floor), ("UCI-HAR b1", "bwd", 3 * floor // 2),
                                                 ("CBAM", "fwd", 200), ("CBAM", "bwd", 300)])
    assert kernels == 6
    rows = [ln for ln in table.splitlines() if ln.startswith("| UCI-HAR") or ln.startswith("| CBAM")]
    assert rows[0].split("|")[3:9] == [" 1 ", " 10.0 ", " 37.75 MB ", " 37.75 MB ", " 1.000 ", " 85.5 "]
    assert rows[1].split("|")[3] == " 2 " and rows[2].split("|")[3] == " 2 " and rows[3].split("|")[6] == " 0.00 MB "
    assert "| FwdMain<float, NHWC, i32> | (64, 1, 1) |" in table


def test_steps_past_their_time_limit_are_stopped(tmp_path):
    sleep = gpu_check.Command([sys.executable, "-c", "import time; time.sleep(60)"])
    quick = gpu_check.Command([sys.executable, "-c", "print('done')"])
    steps = [gpu_check.Step("sleep", [sleep], 1, log=tmp_path / "sleep.log"),
             gpu_check.Step("two", [quick, sleep], 60, log=tmp_path / "two.log", leave=10),
             gpu_check.Step("quick", [quick, quick], 60, log=tmp_path / "quick.log")]
    gpu_check.run_group(steps, dict(os.environ), deadline=time.time() + 12)  # "two" stops at deadline - leave
    assert [s.status for s in steps[:2]] == [gpu_check.TIMEOUT] * 2 and all(s.seconds < 30 for s in steps)
    assert steps[2].rc == 0 and steps[2].log.read_text().splitlines().count("done") == 2
    assert "done" in steps[1].log.read_text().splitlines()  # its first command ran before the limit


def test_sanitizer_driver_covers_every_plan_feature(capsys):
    # on the CPU the driver compares the CPU op with itself: this runs its code, and its plan coverage
    assert gpu_sanitize_driver.main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "NOT COVERED" not in out and "driver: ok" in out
