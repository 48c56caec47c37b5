"""Calibrate the phase model (benchmarks/phase_model.py) on plans timed on a GPU.

    python benchmarks/calibrate_model.py [--sweep CSV ...] [--card H100] [--bandwidth TB/s] [--no-fit] [--split]
                                         [--groups]

A plan sweep (tools/gpu_plan_sweep.py; kept in docs/gpu-data/plan_sweep_<card>_<commit>.csv) times
every distinct plan of each benchmark case. Each row is planned again here with the same overrides
(variant, rows, threads) by the emulated planner, or, where the planner changed since, the same
rows and threads under another test variant; a row no override plans as timed is left out. A
plan timed more than once (the two H100 sweeps agree within 3% on 618 of their 690 common plans)
keeps its fastest time; each plan is predicted by the phase model. The card's assumed figures
(latencies, CPI, the fraction of copy bandwidth its DRAM phases reach, a device cost per launch)
are then fitted (scipy's Powell search) to minimise the mean Huber loss of log(measured /
predicted), and the report shows, before and after:
- the error: geomean and range of measured / predicted, root mean square of its log;
- whether the model can choose plans: per case, the measured time of the plan the model predicts
  fastest against the fastest measured (the planner's plan beside it), and the rank correlation
  of predicted and measured times over the case's plans.
--split fits on half the cases (UCI-HAR, then CBAM) and reports the other half: how well the fitted
figures carry over to shapes they were not fitted on.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import statistics
import sys
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import phase_model  # noqa: E402
from phase_model import Card  # noqa: E402

DEFAULT_SWEEPS = [os.path.join(ROOT, "docs", "gpu-data", f"plan_sweep_h100_{c}.csv") for c in ("0f5258f", "3bb8fe2")]

# (Card field, lower bound, upper bound): what the fit may move, within physically sensible ranges
PARAMS = (("dram_latency", 0.2e-6, 5e-6), ("l2_latency", 0.05e-6, 5e-6), ("smem_latency", 5e-9, 2e-6),
          ("cpi", 0.5, 16.0), ("stream_efficiency", 0.3, 1.2), ("launch_gap", 0.0, 10e-6))


@dataclass
class Sample:
    """One timed plan: its case, the plan's overrides, the measured seconds per call, the model's
    launches of that plan (card-free, phase_model.Launch)."""
    label: str
    direction: str
    shape: tuple
    dtype: str
    overrides: tuple  # (variant, rows, threads) as given to the planner; (0, 0, 0): the planner's plan
    measured: float
    launches: list
    plan: tuple = ()  # (two_pass, rows, blocks, threads, staged_x, chunk_rows) as timed

    @property
    def group(self) -> tuple:
        return self.label, self.shape, self.dtype, self.direction

    def predicted(self, card: Card) -> float:
        return phase_model.device_seconds([launch.time(card) for launch in self.launches], card)


def layer_of(label: str) -> tuple[str, tuple]:
    """(pool, kernel) of a sweep case: CBAM cases are the 7x7 mean+max gate, the others the HAR layer."""
    return phase_model.LAYERS["cbam" if label.startswith("CBAM") else "har"]


VARIANTS = range(6)  # sam_fused.emulation's test variants, 0 = the planner's choice


def load_sweep(path: str, arch: str = "sm_90", registers: dict | None = None,
               column: str = "us") -> tuple[list[Sample], int]:
    """(samples, rows left out because no override today gives the plan they timed); `column`: the
    timing to take (us: back to back; cold_us: L2 flushed before each call). A row is planned
    with its own overrides, then, where the planner has changed since, with the same rows and
    threads under each test variant (an older sweep's planner chunked where today's needs the
    chunked variant to): the first that gives the plan timed stands for it."""
    import torch

    samples, skipped = [], 0
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            shape = tuple(int(v) for v in row["shape"].split("x"))
            dtype = getattr(torch, row["dtype"])
            pool, kernel = layer_of(row["case"])
            given = tuple(int(row[k]) for k in ("variant", "rows_arg", "threads_arg"))
            timed = tuple(int(row[k]) for k in ("two_pass", "rows", "blocks", "threads", "staged_x", "chunk_rows"))
            found = None
            for overrides in [given] + [(v, *given[1:]) for v in VARIANTS if v != given[0]]:
                try:
                    plan, launches = phase_model.call_launches(shape, dtype, pool, kernel, row["direction"] == "bwd",
                                                               arch, registers, *overrides)
                except (RuntimeError, ValueError):
                    continue
                if timed == (int(plan.two_pass), plan.rows, plan.blocks, plan.threads, int(plan.staged_x),
                             plan.chunk_rows):
                    found = overrides, launches
                    break
            if found is None:
                skipped += 1
                continue
            measured = float(row[column]) * 1e-6
            samples.append(Sample(row["case"], row["direction"], shape, row["dtype"], found[0], measured, found[1],
                                  timed))
    return samples, skipped


def merge(samples: list[Sample]) -> list[Sample]:
    """One sample per case and plan, the fastest of its timings (sweeps of different sessions, or
    one plan reached by several overrides: a timing is only ever slowed by what else ran). It
    counts as the planner's plan when any of its rows was one (re-planned today with no override
    and found the same)."""
    best: dict[tuple, Sample] = {}
    planner = set()
    for s in samples:
        key = (s.group, s.plan)
        if s.overrides == (0, 0, 0):
            planner.add(key)
        if key not in best or s.measured < best[key].measured:
            best[key] = s
    return [dataclasses.replace(s, overrides=(0, 0, 0)) if key in planner else s for key, s in best.items()]


def log_errors(samples: list[Sample], card: Card) -> list[float]:
    return [math.log(s.measured / s.predicted(card)) for s in samples]


HUBER = 0.25  # log error beyond which a plan counts linearly: a mis-timed plan (the second H100 sweep
#               timed six plans of its first case 2.4-5.6x slower than the first sweep) must not move the fit


def loss(samples: list[Sample], card: Card) -> float:
    """Mean Huber loss of the log errors."""
    errors = log_errors(samples, card)
    return sum(e * e / 2 if abs(e) <= HUBER else HUBER * (abs(e) - HUBER / 2) for e in errors) / len(errors)


def fit(samples: list[Sample], card: Card, params=PARAMS, max_evaluations: int = 600) -> Card:
    """The card with `params` fitted to the samples: scipy's Powell search within the bounds, in log
    space for all but the additive launch gap (the loss has kinks and steps, from max() and
    ceil() in the model, so no gradients)."""
    import numpy as np
    from scipy.optimize import minimize

    logs = [lo > 0 for _, lo, _ in params]

    def card_at(u) -> Card:
        return dataclasses.replace(card, **{name: math.exp(v) if lg else float(v)
                                            for (name, _, _), v, lg in zip(params, u, logs)})

    def clip(value, lo, hi):
        return min(max(value, lo), hi)

    x0 = [math.log(clip(getattr(card, n), lo, hi)) if lg else clip(getattr(card, n), lo, hi)
          for (n, lo, hi), lg in zip(params, logs)]
    bounds = [(math.log(lo), math.log(hi)) if lg else (lo, hi) for (_, lo, hi), lg in zip(params, logs)]
    scale = np.array([hi - lo for lo, hi in bounds])  # Powell steps in units of each bound's width
    lows = np.array([lo for lo, _ in bounds])
    result = minimize(lambda z: loss(samples, card_at(lows + z * scale)), (np.array(x0) - lows) / scale,
                      method="Powell", bounds=[(0.0, 1.0)] * len(params),
                      options=dict(maxfev=max_evaluations, xtol=1e-3, ftol=1e-5))
    fitted = card_at(lows + result.x * scale)
    return fitted if loss(samples, fitted) <= loss(samples, card) else card


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (scipy's), nan below three plans."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) >= 3 else float("nan")


@dataclass
class GroupReport:
    group: tuple
    plans: int
    best: float      # s, the fastest measured plan
    planner: float   # s, the planner's plan (nan if not timed)
    chosen: float    # s, measured time of the plan the model predicts fastest
    rank: float      # Spearman of predicted against measured over the group's plans


def group_reports(samples: list[Sample], card: Card) -> list[GroupReport]:
    groups: dict[tuple, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.group, []).append(s)
    out = []
    for key, members in groups.items():
        predicted = [s.predicted(card) for s in members]
        measured = [s.measured for s in members]
        planner = next((s.measured for s in members if s.overrides == (0, 0, 0)), float("nan"))
        chosen = measured[min(range(len(members)), key=predicted.__getitem__)]
        out.append(GroupReport(key, len(members), min(measured), planner, chosen, spearman(predicted, measured)))
    return out


def summary(samples: list[Sample], card: Card) -> dict:
    errors = log_errors(samples, card)
    groups = group_reports(samples, card)
    ranks = [g.rank for g in groups if not math.isnan(g.rank)]
    return dict(ratio_geomean=math.exp(sum(errors) / len(errors)), ratio_min=math.exp(min(errors)),
                ratio_max=math.exp(max(errors)), rms_log=math.sqrt(sum(e * e for e in errors) / len(errors)),
                choice_over_best=statistics.geometric_mean(g.chosen / g.best for g in groups),
                choice_worst=max(g.chosen / g.best for g in groups),
                planner_over_best=statistics.geometric_mean(g.planner / g.best for g in groups
                                                            if not math.isnan(g.planner)),
                rank_median=sorted(ranks)[len(ranks) // 2] if ranks else float("nan"))


def card_line(card: Card) -> str:
    return (f"DRAM latency {card.dram_latency * 1e6:.2f} µs, L2 {card.l2_latency * 1e6:.2f} µs, shared "
            f"{card.smem_latency * 1e9:.0f} ns, CPI {card.cpi:.2f} at {card.clock_hz / 1e9:.2f} GHz, DRAM phases at "
            f"{card.stream_efficiency:.0%} of {card.copy_bandwidth / 1e12:.2f} TB/s copy, "
            f"{card.launch_gap * 1e6:.2f} µs per launch")


def render_summary(name: str, s: dict) -> str:
    return (f"| {name} | {s['ratio_geomean']:.2f} ({s['ratio_min']:.2f}-{s['ratio_max']:.2f}) | {s['rms_log']:.3f} | "
            f"{s['choice_over_best']:.3f} (worst {s['choice_worst']:.2f}) | {s['planner_over_best']:.3f} | "
            f"{s['rank_median']:.2f} |")


SUMMARY_HEADER = ("| model | measured / predicted, geomean (range) | rms log error | model's choice / best measured, "
                  "geomean (worst) | planner's plan / best | median rank correlation |\n|---|---|---:|---|---:|---:|")


def render_groups(samples: list[Sample], card: Card) -> str:
    lines = ["| case | shape | dtype | dir | plans | best µs | planner µs | model's choice µs | rank corr. |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for g in group_reports(samples, card):
        label, shape, dtype, direction = g.group
        lines.append(f"| {label} | {'x'.join(map(str, shape))} | {dtype} | {direction} | {g.plans} | "
                     f"{g.best * 1e6:.1f} | {g.planner * 1e6:.1f} | {g.chosen * 1e6:.1f} | {g.rank:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="append",
                        help="plan sweep CSV, repeatable (default: both H100 sweeps of docs/gpu-data)")
    parser.add_argument("--cold", action="store_true", help="fit the cold_us timings (L2 flushed before each call)")
    parser.add_argument("--card", default="H100", choices=sorted(phase_model.CARDS), help="the card to start from")
    parser.add_argument("--bandwidth", type=float, help="measured copy bandwidth in TB/s (replaces the card's)")
    parser.add_argument("--no-fit", action="store_true", help="only compare the card's predictions with the sweep")
    parser.add_argument("--split", action="store_true", help="also fit on UCI-HAR and test on CBAM, and back")
    parser.add_argument("--groups", action="store_true", help="per case: best, planner's and model's choice")
    args = parser.parse_args(argv)
    start = phase_model.CARDS[args.card]
    if args.bandwidth:
        start = dataclasses.replace(start, copy_bandwidth=args.bandwidth * 1e12)
    registers = phase_model.built_registers(start.arch)
    samples, skipped = [], 0
    for path in args.sweep or DEFAULT_SWEEPS:
        got, left = load_sweep(path, start.arch, registers, "cold_us" if args.cold else "us")
        samples += got
        skipped += left
        print(f"{os.path.relpath(path)}: {len(got)} plans predicted, {left} left out (no override plans them as "
              "timed today)")
    if not samples:
        print("no plan of the sweep is planned the same way today: nothing to compare")
        return 1
    timed = len(samples)
    samples = merge(samples)
    print(f"{len(samples)} distinct plans (of {timed} timings: each plan's fastest)")
    print(f"registers: {'cuobjdump of the built library' if registers else 'launch bound'}\n")
    print(f"{args.card} as given: {card_line(start)}")
    rows = [render_summary(f"{args.card} as given", summary(samples, start))]
    fitted = start
    if not args.no_fit:
        fitted = fit(samples, start)
        print(f"fitted on all {len(samples)} plans: {card_line(fitted)}")
        rows.append(render_summary("fitted", summary(samples, fitted)))
    if args.split:
        har = [s for s in samples if not s.label.startswith("CBAM")]
        cbam = [s for s in samples if s.label.startswith("CBAM")]
        for train, test, name in ((har, cbam, "fitted on UCI-HAR, on CBAM"), (cbam, har, "fitted on CBAM, on UCI-HAR")):
            card = fit(train, start)
            print(f"{name}: {card_line(card)}")
            rows.append(render_summary(name, summary(test, card)))
    print("\n" + SUMMARY_HEADER + "\n" + "\n".join(rows))
    if args.groups:
        print("\n" + render_groups(samples, fitted))
    return 0


if __name__ == "__main__":
    sys.exit(main())
