"""Measured CUDA benchmark times beside the time model's prediction (benchmarks/time_model.py).

    python benchmarks/predicted_report.py bench-results/latest.json [--bandwidth 3.0] [--model]
    python benchmarks/predicted_report.py --model [--full]      (no GPU run: the model's table)

For the fused op and x.clone() of every CUDA workload in the pytest-benchmark JSON: the plan
(one or two passes, from the CPU emulation of the launch plan), the DRAM bytes of the traffic
model, the predicted time (launches x 5 µs + bytes / copy bandwidth) and the measured median.
"floor speed" = predicted / measured: 100% means the call runs at the card's copy bandwidth.
The copy bandwidth is measured on the GPU when there is one (a 1 GiB device copy), else the
H100 default of the model; --bandwidth (TB/s) overrides both. --model adds the phase-level
model's prediction (benchmarks/phase_model.py: latency, waves, serial loops) and its limiting
phase beside each measured fused time; without a JSON it prints the model's table alone.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # this tree's sam_fused
import model_report  # noqa: E402
import phase_model  # noqa: E402
import time_model  # noqa: E402

LAYERS = {"har": ("mean", (3, 1)), "cbam": ("mean+max", (7, 7))}  # conftest.Workload.layer


def card_for(bandwidth_tbs: float | None) -> phase_model.Card:
    """The GPU's card (its copy bandwidth measured) when there is one, else the H100's; a given
    bandwidth replaces either."""
    if not torch.cuda.is_available():
        return phase_model.card_named("H100", bandwidth_tbs and bandwidth_tbs * 1e12, "given")
    name = torch.cuda.get_device_name()
    card = (phase_model.card_named(name, bandwidth_tbs * 1e12, "given") if bandwidth_tbs else
            phase_model.card_named(name, time_model.measure_copy_bandwidth()))
    props, arch = torch.cuda.get_device_properties(0), "sm_{}{}".format(*torch.cuda.get_device_capability())
    try:  # this GPU's SMs and, when limits.h knows it, its architecture's limits
        phase_model.arch_limits(arch)
    except ValueError:
        arch = card.arch
    return dataclasses.replace(card, arch=arch, sms=props.multi_processor_count)


def rows(data: dict, card: time_model.Card, model: dict | None = None) -> list[str]:
    """Table rows; model: the phase model's registers ({} = launch bound) to add its columns."""
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
        if model is not None:
            out[-1] += model_cells(info, card, model)
    return out


def model_cells(info: dict, card: phase_model.Card, registers: dict) -> str:
    """The phase model's predicted time and limiting phase of a fused benchmark (clone: none)."""
    if info["impl"] == "clone":
        return " - | - |"
    p = phase_model.predict(info.get("label", ""), info["layer"], info["case"], tuple(info["shape"]),
                            getattr(torch, info["dtype"]), card, registers)
    return f" {p.seconds * 1e6:.1f} | {p.limiting} |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="?", help="pytest-benchmark JSON (benchmarks/ writes bench-results/latest.json)")
    parser.add_argument("--bandwidth", type=float, help="copy bandwidth in TB/s (default: measured, else H100 3.0)")
    parser.add_argument("--model", action="store_true", help="the phase-level model's prediction beside each time")
    parser.add_argument("--full", action="store_true", help="--model without a JSON: every CUDA benchmark workload")
    args = parser.parse_args(argv)
    if not args.json and not args.model:
        parser.error("give a benchmark JSON, or --model for the model's table")
    card = card_for(args.bandwidth)
    registers = phase_model.built_registers(card.arch) if args.model else None
    if not args.json:
        print(model_report.table(card, args.full, registers))
        return 0
    with open(args.json) as f:
        data = json.load(f)
    table = rows(data, card, registers)
    print(f"Card: {card.name}, {card.launch_overhead * 1e6:.0f} µs per launch.\n")
    extra = (" model µs | model: limiting phase |", "---:|---|") if args.model else ("", "")
    print("| case | workload | shape | dtype | impl | plan | DRAM MB | launches | predicted µs | measured µs |"
          " floor speed |" + extra[0])
    print("|---|---|---|---|---|---|---:|---:|---:|---:|---:|" + extra[1])
    print("\n".join(table) if table else "| (no CUDA fused or clone entries in the JSON) |" + " |" * 10)
    return 0 if table else 1


if __name__ == "__main__":
    sys.exit(main())
