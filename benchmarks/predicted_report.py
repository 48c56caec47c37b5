"""Measured CUDA benchmark times beside the time model's prediction (benchmarks/time_model.py).

    python benchmarks/predicted_report.py bench-results/latest.json [--bandwidth 3.0]

For the fused op and x.clone() of every CUDA workload in the pytest-benchmark JSON: the plan
(one or two passes, from the CPU emulation of the launch plan), the DRAM bytes of the traffic
model, the predicted time (launches x 5 µs + bytes / copy bandwidth) and the measured median.
"floor speed" = predicted / measured: 100% means the call runs at the card's copy bandwidth.
The copy bandwidth is measured on the GPU when there is one (a 1 GiB device copy), else the
H100 default of the model; --bandwidth (TB/s) overrides both.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # this tree's sam_fused
import time_model  # noqa: E402

LAYERS = {"har": ("mean", (3, 1)), "cbam": ("mean+max", (7, 7))}  # conftest.Workload.layer


def card_for(bandwidth_tbs: float | None) -> time_model.Card:
    if bandwidth_tbs:
        return time_model.Card(f"given {bandwidth_tbs:.2f} TB/s copy", bandwidth_tbs * 1e12)
    if torch.cuda.is_available():
        measured = time_model.measure_copy_bandwidth()
        return time_model.Card(f"{torch.cuda.get_device_name()} (measured {measured / 1e12:.2f} TB/s copy)", measured)
    return time_model.H100


def rows(data: dict, card: time_model.Card) -> list[str]:
    plans = {}
    out = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        wanted = info.get("impl") in ("fused", "clone") and info.get("layer") in LAYERS
        if info.get("device") != "cuda" or not wanted:
            continue
        shape, dtype, case = tuple(info["shape"]), getattr(torch, info["dtype"]), info["case"]
        pool, kernel = LAYERS[info["layer"]]
        key = (shape, dtype, info["layer"])
        if key not in plans:
            plans[key] = time_model.launch_plans(shape, dtype, pool, kernel)
        two_fwd, two_bwd = plans[key]
        traffic = time_model.case_traffic("clone" if info["impl"] == "clone" else case, shape, dtype.itemsize,
                                          len(pool.split("+")), two_fwd, two_bwd, has_max="max" in pool)
        predicted, measured = time_model.predicted_seconds(traffic, card), bench["stats"]["median"]
        plan = "-" if info["impl"] == "clone" else ("2-pass" if (two_fwd, two_bwd)[case == "bwd"] else "1-pass")
        out.append(f"| {case} | {info.get('label', '')} | {'x'.join(map(str, shape))} | {info['dtype']} |"
                   f" {info['impl']} | {plan} | {traffic.bytes / 1e6:.2f} | {traffic.launches} |"
                   f" {predicted * 1e6:.1f} | {measured * 1e6:.1f} | {100 * predicted / measured:.0f}% |")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="pytest-benchmark JSON (benchmarks/ writes bench-results/latest.json)")
    parser.add_argument("--bandwidth", type=float, help="copy bandwidth in TB/s (default: measured, else H100 3.0)")
    args = parser.parse_args(argv)
    with open(args.json) as f:
        data = json.load(f)
    card = card_for(args.bandwidth)
    table = rows(data, card)
    print(f"Card: {card.name}, {card.launch_overhead * 1e6:.0f} µs per launch.\n")
    print("| case | workload | shape | dtype | impl | plan | DRAM MB | launches | predicted µs | measured µs |"
          " floor speed |")
    print("|---|---|---|---|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(table) if table else "| (no CUDA fused or clone entries in the JSON) |" + " |" * 10)
    return 0 if table else 1


if __name__ == "__main__":
    sys.exit(main())
