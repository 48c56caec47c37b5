"""The phase model's predictions for the CUDA benchmark cases (benchmarks/phase_model.py).

    python benchmarks/model_report.py [--card H100-fit|H100|H200|A100] [--bandwidth TB/s] [--full] [--detail]
                                      [--flight N] [--launch-bound]

Per case: the plan and its launches (grid x resident blocks per SM, waves), the predicted time,
the predicted % of copy bandwidth on the 2N (fwd) / 3N (bwd) floor, the limiting phase, and an
assumed torch.compile time. --detail adds every launch's phases; --flight N asks what if every
loop kept at least N loads in flight. `predicted_report.py --model` prints the same table, or
puts the prediction beside measured times.
"""
from __future__ import annotations

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import phase_model  # noqa: E402
from phase_model import COMPILE_EFFICIENCY, LAUNCH_BOUND_REGS, Card, Prediction, built_registers, predict  # noqa: E402


def _bench_conftest():
    spec = importlib.util.spec_from_file_location("sam_fused_bench_conftest", os.path.join(HERE, "conftest.py"))
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


HEADLINE = [("CBAM 64ch", "cbam", (32, 64, 56, 56))]  # the CBAM gate at 64 channels of the performance review


def benchmark_cases(full: bool = False) -> list[tuple]:
    """(label, layer, case, shape, dtype) of the CUDA benchmarks: quick mode's workloads (fwd and
    bwd) in float32 and bfloat16 plus the 64-channel CBAM shape; full: every CUDA workload of
    the full matrix."""
    import torch

    conf = _bench_conftest()
    if full:
        return [(w.label, w.layer, w.case, w.shape, w.dtype) for w in conf.build_workloads(quick=False)
                if w.device == "cuda"]
    shapes = []
    for w in conf.build_workloads(quick=True):
        if w.device == "cuda" and (w.label, w.layer, w.shape) not in shapes:
            shapes.append((w.label, w.layer, w.shape))
    shapes += HEADLINE
    return [(label, layer, case, shape, dtype) for label, layer, shape in shapes
            for dtype in (torch.float32, torch.bfloat16) for case in ("fwd", "bwd")]


HEADER = ("| case | workload | shape | dtype | plan | launches (grid x resident/SM, waves) | predicted µs |"
          " % copy BW on floor | limiting phase | assumed compile µs | fused vs assumed compile |")


def render_row(p: Prediction) -> str:
    launches = ", ".join(f"{lt.kernel} {lt.grid}x{lt.resident} {lt.waves:.2f}{'*' if lt.overlapped else ''}"
                         for lt in p.launches)
    ratio = p.compile_seconds / p.seconds
    verdict = f"{ratio:.2f}x {'faster' if ratio > 1 else 'slower'}"
    return (f"| {p.case} | {p.label} | {'x'.join(map(str, p.shape))} | {p.dtype} | {p.plan} | {launches} |"
            f" {p.seconds * 1e6:.1f} | {100 * p.floor_fraction:.0f}% | {p.limiting} | {p.compile_seconds * 1e6:.1f} |"
            f" {verdict} |")


def calibration_note(card: Card) -> str:
    if card.stream_efficiency != 1.0:
        return (f"Fitted figures: DRAM phases at {card.stream_efficiency:.0%} of copy bandwidth, "
                f"{card.dram_latency * 1e6:.2f} µs DRAM, {card.l2_latency * 1e6:.2f} µs L2, "
                f"{card.smem_latency * 1e9:.0f} ns shared latency (benchmarks/calibrate_model.py; effective, not "
                "physical; about +-30% on the plans they were fitted on, docs/gpu-model.md).")
    return ("Assumed figures, not calibrated: at 3bb8fe2 an H100 took 1.24-3.36x these device times (geomean 1.85; "
            "docs/gpu-results.md); --card H100-fit is fitted on its plan sweep.")


def render(predictions: list, card: Card, registers: dict) -> str:
    lines = [f"Card: {card.name}, {card.sms} SMs ({card.arch} limits), DRAM latency {card.dram_latency * 1e6:.2f} µs, "
             f"L2 {card.l2_latency * 1e6:.2f} µs, {card.clock_hz / 1e9:.2f} GHz, CPI {card.cpi:g}, "
             f"{card.launch_overhead * 1e6:.0f} µs per launch; registers: "
             + ("cuobjdump of the built library" if registers else f"launch bound ({LAUNCH_BOUND_REGS})") + ".",
             "predicted = device time + launches x overhead; % copy BW = 2N (fwd) / 3N (bwd) e bytes / copy bandwidth"
             " / device time; * = blocks overlap (>= 2 resident, > 1 wave); compile = Triton at "
             f"{COMPILE_EFFICIENCY:.0%} of copy bandwidth on 3N / 5N e bytes (assumed; measured on an H100 at CBAM "
             "(32,64,56,56): 6-18% of copy, the fused op 3.3-7.5x faster, docs/gpu-results.md).",
             calibration_note(card), "", HEADER,
             "|---|---|---|---|---|---|---:|---:|---|---:|---|"]
    return "\n".join(lines + [render_row(p) for p in predictions])


def render_detail(p: Prediction) -> str:
    """Every launch of a prediction with its phases (lock-step seconds and what bounds each)."""
    lines = [f"{p.case} {p.label} {'x'.join(map(str, p.shape))} {p.dtype}:"]
    for lt in p.launches:
        lines.append(f"  {lt.kernel}: grid {lt.grid}, {lt.threads} threads, {lt.smem} B smem, {lt.registers} regs, "
                     f"{lt.resident}/SM, {lt.waves:.2f} waves{' overlapped' if lt.overlapped else ''}: "
                     f"{lt.seconds * 1e6:.1f} µs, {lt.dram_bytes / 1e6:.2f} MB")
        lines += [f"    {ph.name:<24}{ph.seconds * 1e6:>8.1f} µs  {ph.bound}" for ph in lt.phases]
    return "\n".join(lines)


def table(card: Card, full: bool = False, registers: dict | None = None, detail: bool = False) -> str:
    """The predictions of every benchmark case, rendered (registers None: from the built library)."""
    registers = built_registers(card.arch) if registers is None else registers
    preds = [predict(*case, card, registers) for case in benchmark_cases(full)]
    text = render(preds, card, registers)
    if detail:
        text += "\n\nPhases (lock step, summed over the waves):\n" + "\n".join(render_detail(p) for p in preds)
    return text


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--card", default="H100-fit", choices=sorted(phase_model.CARDS),
                        help="H100-fit: fitted on a plan sweep (calibrate_model.py); H100: the assumed figures")
    parser.add_argument("--bandwidth", type=float, help="copy bandwidth in TB/s (replaces the card's)")
    parser.add_argument("--full", action="store_true", help="every CUDA workload of the full benchmark matrix")
    parser.add_argument("--launch-bound", action="store_true", help="ignore the built library's registers")
    parser.add_argument("--detail", action="store_true", help="also every launch's phases")
    parser.add_argument("--flight", type=int, metavar="N",
                        help="what if every loop kept at least N loads in flight (LOOPS is not changed on disk)")
    args = parser.parse_args(argv)
    card = phase_model.with_copy_bandwidth(phase_model.CARDS[args.card], args.bandwidth and args.bandwidth * 1e12)
    saved = phase_model.LOOPS
    if args.flight:
        phase_model.LOOPS = phase_model.at_least_in_flight(args.flight)
        print(f"What if: every loop keeps at least {args.flight} loads in flight.")
    try:
        print(table(card, args.full, {} if args.launch_bound else None, args.detail))
    finally:
        phase_model.LOOPS = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
