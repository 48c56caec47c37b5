"""One command that checks the CUDA kernels on a machine with a GPU: `make gpu-check` (OUT=dir).

    python3 tools/gpu_check.py [--out gpu-results] [--jobs N] [--dry-run] [--skip-build] [--steps a,b,...]

Steps, each logged to OUT/NN-step.log (OUT/summary.md: the table of results and the numbers;
OUT/summary.json: the same for programs):
  env        torch, the GPU, the tools and modules found
  build      the extension against the installed torch, in place, for this GPU's architecture
  tests, check, determinism, memcheck, racecheck, synccheck, initcheck   (side by side)
             tests/test_cuda.py; python -m sam_fused.check --device cuda in four dtypes;
             tools/gpu_determinism.py (same bits call after call, and where not);
             compute-sanitizer over tools/gpu_sanitize_driver.py (every kernel variant)
  times      tools/gpu_kernel_times.py: device time per call by CUDA events (fused, eager, clone;
             torch.compile at CBAM 64 channels)
  ncu        Nsight Compute on the main kernels at the UCI-HAR and CBAM shapes
  bench      pytest benchmarks/ --quick -k cuda (table + JSON)
  predicted  measured benchmark times beside the time model's floor (benchmarks/time_model.py)
             and the phase model's prediction (benchmarks/phase_model.py)
Uses the interpreter that runs it (no venv, no network). A tool missing or not working on this
machine is "not available" and does not fail the run. Exit status: 0 all steps passed or not
available, 1 a step failed, 2 no CUDA GPU (after the build).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import gpu_profile_driver  # noqa: E402  (its case table; torch is imported only by its main)
import ncu_report  # noqa: E402

SANITIZERS = ("memcheck", "racecheck", "synccheck", "initcheck")
DTYPES = ("float32", "float64", "float16", "bfloat16")
PASS, FAIL, NOT_AVAILABLE, SKIPPED, TIMEOUT = "pass", "FAIL", "not available", "skipped", "TIMEOUT"
NO_GPU = "no CUDA GPU"
PROBE = r"""
import importlib.util, json, sys
info = {"python": sys.version.split()[0], "executable": sys.executable}
info["modules"] = {m: importlib.util.find_spec(m) is not None
                   for m in ("torch", "setuptools", "ninja", "pytest", "pytest_benchmark", "hypothesis", "numpy")}
try:
    import torch
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if info["cuda_available"]:
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1), gpus=torch.cuda.device_count())
except Exception as err:
    info["torch_error"] = repr(err)
print("PROBE " + json.dumps(info))
"""


@dataclass
class Command:
    argv: list[str]
    stdout: Path | None = None  # else the step's log


@dataclass
class Step:
    name: str
    commands: list[Command]
    timeout: float
    env: dict = field(default_factory=dict)
    tool: str | None = None          # executable it needs (absent: "not available")
    modules: tuple = ()              # Python modules it needs
    parallel: bool = False           # runs side by side with the neighbouring parallel steps
    leave: float = 0                 # seconds of the budget it leaves to the steps after it
    status: str = SKIPPED
    detail: str = "not run"
    seconds: float = 0.0
    log: Path | None = None          # OUT/NN-name.log
    rc: int = 0
    began: float = 0.0


def find_tool(name: str) -> str | None:
    """`name` on PATH, else in the CUDA toolkit's usual places."""
    cuda = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    candidates = [shutil.which(name), cuda / "bin" / name, cuda / "compute-sanitizer" / name]
    candidates += sorted(cuda.glob(f"nsight-compute*/{name}"))
    candidates += sorted(Path("/opt/nvidia").glob(f"nsight-compute/*/{name}"))
    return next((str(c) for c in candidates if c and os.access(c, os.X_OK) and Path(c).is_file()), None)


def plan_steps(py: str, out: Path, jobs: int, arch: str, have_gpu: bool, budget: float,
               sanitizer_timeout: float = 300) -> list[Step]:
    driver = ["tools/gpu_sanitize_driver.py"]
    sanitizer = find_tool("compute-sanitizer") or "compute-sanitizer"
    ncu = find_tool("ncu") or "ncu"
    # Each tensor its own cudaMalloc, so memcheck/initcheck see torch allocations exactly. API
    # errors are torch's own probing at start-up; a failed launch of ours raises in the driver.
    sanitize_env = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
    rep = out / "ncu-kernels"
    smi = find_tool("nvidia-smi")
    steps = [
        Step("env", [Command([py, "-c", PROBE])] + ([Command([smi])] if smi else []), 120),
        Step("build", [Command([py, "setup.py", "build_ext", "--inplace"])], budget,
             env={"SAM_FUSED_BUILD": "cuda" if have_gpu else "auto", "TORCH_CUDA_ARCH_LIST": arch,
                  "MAX_JOBS": str(jobs)},
             modules=("setuptools",)),
        Step("tests", [Command([py, "-m", "pytest", "tests/test_cuda.py", "-q", "-p", "no:cacheprovider", "-rs",
                                "--junitxml", str(out / "tests-junit.xml")])], 360, modules=("pytest",), parallel=True),
        Step("check", [Command([py, "-m", "sam_fused.check", "--device", "cuda"]
                               + [a for d in DTYPES for a in ("--dtype", d)])], 300, parallel=True),
        Step("determinism", [Command([py, "tools/gpu_determinism.py"])], 180, parallel=True),
    ]
    steps += [Step(tool, [Command([sanitizer, "--tool", tool, "--report-api-errors", "no", "--error-exitcode", "1",
                                   py, *driver])], sanitizer_timeout, env=sanitize_env, tool=sanitizer, parallel=True)
              for tool in SANITIZERS]
    steps += [
        # torch.compile for one case (its compiles take tens of seconds each): CBAM 64 channels,
        # where the fused backward was predicted closest to it
        Step("times", [Command([py, "tools/gpu_kernel_times.py", "--out", str(out / "kernel_times.md"),
                                "--compile", "CBAM 64ch"])], 240),
        Step("ncu", [Command([ncu, "--profile-from-start", "off", "--kernel-name", "regex:block_program_kernel",
                              "--metrics", ",".join(ncu_report.METRICS), "--export", str(rep), "--force-overwrite",
                              py, "tools/gpu_profile_driver.py"]),
                     Command([ncu, "--import", f"{rep}.ncu-rep", "--csv", "--page", "raw", "--print-units", "base"],
                             stdout=out / "ncu.csv")], 180, tool=ncu),
        # a benchmark file that fails to import (a module missing here) does not stop the others
        Step("bench", [Command([py, "-m", "pytest", "benchmarks/", "--quick", "-k", "cuda", "-q", "-p",
                                "no:cacheprovider", "--continue-on-collection-errors", "--benchmark-json",
                                str(out / "bench.json")])], 300,
             modules=("pytest", "pytest_benchmark"), leave=45),
        Step("predicted", [Command([py, "benchmarks/predicted_report.py", "--model", str(out / "bench.json")],
                                   stdout=out / "predicted.md")], 90),
    ]
    for i, step in enumerate(steps, start=1):
        step.log = out / f"{i:02d}-{step.name}.log"
    return steps


def render_command(step: Step, cmd: Command) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in step.env.items())
    text = " ".join(shlex.quote(a) if "\n" not in a else "'<probe script>'" for a in cmd.argv)
    return (env + " " if env else "") + text + (f" > {cmd.stdout}" if cmd.stdout else "")


# ----------------------------------------------------------------------------- running

def default_sigint() -> None:
    """In the child before exec: SIGINT back to its default. A shell runs a background job
    (`make gpu-check &`) with SIGINT ignored, children inherit that, and Python then installs no
    KeyboardInterrupt handler: stop()'s SIGINT would do nothing and only SIGKILL, 20 s later,
    would end the step (without pytest's summary and JSON)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(step: Step, cmd: Command, env: dict, log) -> subprocess.Popen:
    log.write(f"$ {render_command(step, cmd)}\n")
    log.flush()
    popen = dict(cwd=ROOT, env={**env, **step.env}, stderr=log, start_new_session=True, text=True,
                 preexec_fn=default_sigint)
    if not cmd.stdout:
        return subprocess.Popen(cmd.argv, stdout=log, **popen)
    with open(cmd.stdout, "w") as stdout:  # the child keeps its own descriptor
        return subprocess.Popen(cmd.argv, stdout=stdout, **popen)


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGINT first (pytest then still writes its JSON and summary), SIGKILL to those still
    running 20 s later; all at once, so stopping side-by-side steps takes 20 s, not 20 s each."""
    for sig, grace in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
        for proc in procs:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        end = time.time() + grace
        while any(p.poll() is None for p in procs) and time.time() < end:
            time.sleep(0.2)
        procs = [p for p in procs if p.poll() is None]
        if not procs:
            return


def run_group(steps: list[Step], env: dict, deadline: float) -> None:
    """Runs the steps side by side, each its commands in turn, each until its timeout."""
    running = {}
    for step in steps:
        step.log_file = open(step.log, "w")
        step.began, step.index, step.rc = time.time(), 0, 0
        running[step.name] = (step, start(step, step.commands[0], env, step.log_file))
    while running:
        time.sleep(0.5)
        expired = [(s, p) for s, p in running.values()
                   if p.poll() is None and time.time() >= min(s.began + s.timeout, deadline - s.leave)]
        stop([p for _, p in expired])
        for step, proc in expired:
            step.rc, step.status = proc.returncode, TIMEOUT
            step.detail = f"stopped after {time.time() - step.began:.0f} s (time limit)"
        for name, (step, proc) in list(running.items()):
            if proc.poll() is None:
                continue
            if step.status != TIMEOUT:
                step.rc = step.rc or proc.returncode
                step.index += 1
                if step.index < len(step.commands):
                    running[name] = (step, start(step, step.commands[step.index], env, step.log_file))
                    continue
            step.seconds = time.time() - step.began
            step.log_file.close()
            del running[name]


def tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ----------------------------------------------------------------------------- judging the logs

def judge(step: Step, out: Path) -> None:
    """Sets status and detail of a finished step from its return code and log."""
    if step.status == TIMEOUT:
        return
    text = step.log.read_text(errors="replace")
    ok = step.rc == 0
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    step.status, step.detail = (PASS if ok else FAIL), last[:200]
    if step.name == "build":
        built = sorted((ROOT / "sam_fused").glob("_C*.so"))
        step.status = PASS if ok and built else FAIL
        step.detail = f"{built[0].name} built" if ok and built else last[:200]
    elif step.name in ("tests", "bench"):  # pytest: something must have run (all skipped = no GPU seen)
        summary = [ln for ln in text.splitlines()
                   if " in " in ln and any(w in ln for w in ("passed", "failed", "skipped"))]
        step.detail = summary[-1].strip("= ") if summary else last[:200]
        step.status = PASS if ok and summary and "passed" in summary[-1] else FAIL
    elif step.name == "check":
        step.status = PASS if ok and "parity: all variants match" in text else FAIL
    elif step.name == "determinism":
        step.status = PASS if ok and "determinism: every case" in text else FAIL
    elif step.name == "times":
        step.detail = "device times: kernel_times.md" if ok else last[:200]
    elif step.name in SANITIZERS:
        judge_sanitizer(step, text)
    elif step.name == "ncu":
        judge_ncu(step, text, out)
    elif step.name == "predicted":
        step.detail = ("measured beside predicted: predicted.md" if ok else
                       "no bench.json (the bench step wrote none)" if not (out / "bench.json").exists() else last[:200])


def judge_sanitizer(step: Step, text: str) -> None:
    summaries = [ln.strip("= ").strip() for ln in text.splitlines() if "SUMMARY:" in ln]
    driver_ran = "driver: start" in text
    if not driver_ran and "Traceback" not in text and any(ln.startswith("========= Error") for ln in text.splitlines()):
        step.status = NOT_AVAILABLE
        step.detail = "compute-sanitizer could not run here: " + text.strip().splitlines()[-1][:160]
        return
    clean = bool(summaries) and all(" 0 errors" in s or " 0 hazards" in s for s in summaries)
    step.status = PASS if step.rc == 0 and clean and "driver: ok" in text else FAIL
    driver_lines = [ln for ln in text.splitlines() if ln.startswith("driver: ")]
    step.detail = "; ".join(summaries) or (driver_lines[-1] if driver_lines else "no summary")


def judge_ncu(step: Step, text: str, out: Path) -> None:
    if "ERR_NVGPUCTRPERM" in text:
        step.status, step.detail = NOT_AVAILABLE, "no permission for GPU performance counters (ERR_NVGPUCTRPERM)"
        return
    csv_text = (out / "ncu.csv").read_text(errors="replace") if (out / "ncu.csv").exists() else ""
    cases = [(name, d, gpu_profile_driver.floor_bytes(name, d, 4)) for name in gpu_profile_driver.CASES
             for d in ("fwd", "bwd")]
    table, kernels = ncu_report.render(csv_text, cases) if csv_text else ("", 0)
    if kernels == 0 and "Traceback" not in text and "==ERROR==" in text:
        errors = [ln for ln in text.splitlines() if ln.startswith("==ERROR==")]
        step.status, step.detail = NOT_AVAILABLE, f"ncu could not profile here: {errors[0][:160]}"
        return
    (out / "ncu.md").write_text(table)
    step.status = PASS if step.rc == 0 and kernels else FAIL
    step.detail = f"{kernels} kernels profiled: ncu.md" if kernels else "no kernel profiled"


# ----------------------------------------------------------------------------- summary

def write_summary(out: Path, steps: list[Step], env_info: dict, verdict: str) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    gpu = env_info.get("gpu", NO_GPU)
    lines = [f"# sam_fused GPU check: {verdict}", "",
             f"- when: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
             f"- commit: {commit or 'unknown'}{' (with local changes)' if dirty else ''}",
             f"- GPU: {gpu} (sm {env_info.get('capability', '-')}, {env_info.get('sms', '-')} SMs, "
             f"{env_info.get('memory_gib', '-')} GiB)",
             f"- torch {env_info.get('torch', '?')}, CUDA {env_info.get('torch_cuda', '?')}, "
             f"Python {env_info.get('python', '?')}", "",
             "| step | status | time | detail | log |", "|---|---|---:|---|---|"]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.0f} s | {s.detail.replace('|', '/')} | {s.log.name} |"
              for s in steps]
    for title, name in (("Device time per call (CUDA events, tools/gpu_kernel_times.py)", "kernel_times.md"),
                        ("Nsight Compute (float32; DRAM bytes against the 2N / 3N e floor)", "ncu.md"),
                        ("Measured beside predicted (benchmarks/time_model.py, phase_model.py)", "predicted.md")):
        if (out / name).exists() and (out / name).stat().st_size:
            lines += ["", f"## {title}", "", (out / name).read_text()]
    failed = [s for s in steps if s.status in (FAIL, TIMEOUT)]
    for s in failed:
        lines += ["", f"## {s.name}: last lines of {s.log.name}", "", "```", tail(s.log, 15), "```"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(
        {"verdict": verdict, "commit": commit, "dirty": bool(dirty), "env": env_info,
         "steps": [dict(name=s.name, status=s.status, seconds=round(s.seconds, 1), detail=s.detail, log=s.log.name)
                   for s in steps]}, indent=2) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-results", help="results folder (default gpu-results)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 4, help="parallel compile jobs (MAX_JOBS)")
    parser.add_argument("--arch", help="TORCH_CUDA_ARCH_LIST (default: the GPU's compute capability)")
    parser.add_argument("--budget", type=float, default=470,
                        help="seconds for all steps, the build included (default 470: a 10-minute command limit)")
    parser.add_argument("--sanitizer-timeout", type=float, default=300,
                        help="seconds for each compute-sanitizer tool (default 300); one cut short is TIMEOUT")
    parser.add_argument("--dry-run", action="store_true", help="print every step's command; run nothing")
    parser.add_argument("--skip-build", action="store_true", help="use the extension already built in the tree")
    parser.add_argument("--steps", help="run only these steps (comma-separated names; env always runs): the "
                        "others are skipped, e.g. tools/device_run.sh short's tests,check,determinism,memcheck,"
                        "racecheck,times")
    args = parser.parse_args(argv)
    out = (ROOT / args.out).resolve() if not os.path.isabs(args.out) else Path(args.out)
    py = sys.executable
    # the build step's architecture is set from the probe below (a placeholder for --dry-run)
    steps = plan_steps(py, out, args.jobs, args.arch or ("<GPU capability, e.g. 9.0>" if args.dry_run else ""),
                       True, args.budget, args.sanitizer_timeout)
    names = [s.name for s in steps]
    asked = set(args.steps.split(",")) if args.steps else set(names)
    if unknown := asked - set(names):
        parser.error(f"--steps: no step {', '.join(sorted(unknown))} (steps: {', '.join(names)})")

    if args.dry_run:
        for step in steps:
            if step.name != "env" and step.name not in asked:
                continue
            mode = "side by side" if step.parallel else "alone"
            print(f"[{step.name}] ({mode}, at most {step.timeout:.0f} s, log {step.log.relative_to(out.parent)})")
            for cmd in step.commands:
                print(f"    {render_command(step, cmd)}")
        print(f"Results in {out}/ (summary.md first); no CUDA GPU: build, then exit 2.")
        return 0

    out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    by_name = {s.name: s for s in steps}

    run_group([by_name["env"]], env, deadline)
    probe = next((ln[6:] for ln in by_name["env"].log.read_text().splitlines() if ln.startswith("PROBE ")), "{}")
    info = json.loads(probe)
    for tool in ("nvcc", "compute-sanitizer", "ncu", "nvidia-smi"):
        info.setdefault("tools", {})[tool] = find_tool(tool)
    by_name["env"].log.write_text(by_name["env"].log.read_text() + json.dumps(info, indent=2) + "\n")
    have_gpu = bool(info.get("cuda_available"))
    by_name["env"].status = PASS if "torch" in info else FAIL
    by_name["env"].detail = (f"{info.get('gpu', NO_GPU)}, torch {info.get('torch', info.get('torch_error'))}, "
                             f"tools: {', '.join(t for t, p in info['tools'].items() if p) or 'none'}"
                             + ("" if info.get("modules", {}).get("ninja") else
                                "; no ninja: the build compiles serially"))
    arch = args.arch or info.get("capability") or os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    by_name["build"].env.update(SAM_FUSED_BUILD="cuda" if have_gpu else "auto", TORCH_CUDA_ARCH_LIST=arch)
    write_summary(out, steps, info, "running")

    phases = [["build"], ["tests", "check", "determinism", *SANITIZERS], ["times"], ["ncu"], ["bench"], ["predicted"]]
    for phase in phases:
        group = [by_name[n] for n in phase if n in asked]
        for n in phase:
            if n not in asked:
                by_name[n].detail = "not asked (--steps)"
        if not group:
            continue
        if phase == ["build"] and args.skip_build:
            group[0].status, group[0].detail = SKIPPED, "--skip-build"
            continue
        if phase != ["build"] and not have_gpu:
            for s in group:
                s.detail = NO_GPU
            continue
        runnable = []
        for s in group:
            missing = [m for m in s.modules if not info.get("modules", {}).get(m)]
            if s.tool and not find_tool(Path(s.tool).name):
                s.status, s.detail = NOT_AVAILABLE, f"{Path(s.tool).name} not found"
            elif missing:
                s.status, s.detail = NOT_AVAILABLE, f"Python module(s) {', '.join(missing)} not installed"
            elif s.name == "predicted" and by_name["bench"].status == NOT_AVAILABLE:
                s.status, s.detail = NOT_AVAILABLE, "no benchmarks (bench not available)"
            elif time.time() > deadline - s.leave - 5:
                s.status, s.detail = TIMEOUT, "not started: time budget spent"
            else:
                runnable.append(s)
        if runnable:
            run_group(runnable, env, deadline)
            for s in runnable:
                judge(s, out)
        write_summary(out, steps, info, "running")

    failed = [s.name for s in steps if s.status in (FAIL, TIMEOUT)]
    if not have_gpu:
        verdict = (f"{NO_GPU} (torch {info.get('torch', '?')}, CUDA {info.get('torch_cuda')}): nothing ran on a GPU"
                   + (f"; the build: {by_name['build'].status}" if by_name["build"].status != SKIPPED else ""))
    else:
        missing = [s.name for s in steps if s.status == NOT_AVAILABLE]
        verdict = (f"FAILED ({', '.join(failed)})" if failed else "PASS") + (
            f"; not available here: {', '.join(missing)}" if missing else "")
    write_summary(out, steps, info, verdict)
    print((out / "summary.md").read_text())
    print(f"gpu-check: {verdict}; results in {out}")
    return 2 if not have_gpu else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
