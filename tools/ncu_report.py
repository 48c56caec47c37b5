"""Tables from Nsight Compute's raw CSV (`ncu --import R.ncu-rep --csv --page raw --print-units base`)
of tools/gpu_profile_driver.py: per case and direction, the DRAM bytes against the 2N/3N floor,
DRAM throughput as % of peak and occupancy; then per kernel."""
from __future__ import annotations

import csv
import io
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from resource_report import short_name  # noqa: E402  (kernel names as the ptxas report prints them)

METRICS = {  # ncu metric: column label
    "gpu__time_duration.sum": "time",
    "dram__bytes_read.sum": "dram read",
    "dram__bytes_write.sum": "dram write",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed": "DRAM % of peak",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "achieved occupancy %",
    "sm__maximum_warps_per_active_cycle_pct": "theoretical occupancy %",
    "launch__registers_per_thread": "registers",
    "launch__shared_mem_per_block_dynamic": "dynamic smem",
}


def parse_rows(text: str) -> list[dict]:
    """Kernel rows of the raw CSV, metric values as floats (nan where missing); units row dropped."""
    lines = [ln for ln in text.splitlines() if ln.startswith('"')]  # drop ==PROF== and program output
    rows = []
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        if not row.get("ID", "").strip().isdigit():
            continue  # the units row
        parsed = {key: row.get(column, "") for key, column in (("name", "Kernel Name"), ("grid", "Grid Size"),
                                                                  ("block", "Block Size"))}
        for metric in METRICS:
            try:
                parsed[metric] = float(row.get(metric, "").replace(",", ""))
            except ValueError:
                parsed[metric] = math.nan
        rows.append(parsed)
    return rows


def segments(rows: list[dict]) -> list[list[dict]]:
    """Consecutive kernels of one call: the driver alternates forward (Fwd*) and backward calls."""
    out: list[list[dict]] = []
    for row in rows:
        direction = "fwd" if "Fwd" in row["name"] else "bwd"
        if not out or out[-1][0]["direction"] != direction:
            out.append([])
        out[-1].append({**row, "direction": direction})
    return out


def weighted(kernels, metric):
    total = sum(k["gpu__time_duration.sum"] for k in kernels)
    return sum(k[metric] * k["gpu__time_duration.sum"] for k in kernels) / total if total else math.nan


def render(text: str, cases: list[tuple[str, str, int]]) -> tuple[str, int]:
    """Markdown tables and the number of kernels profiled. `cases`: (case name, direction, floor bytes)
    in the order the driver ran them."""
    rows = parse_rows(text)
    segs = segments(rows)
    lines = ["| case | pass | kernels | time (µs) | DRAM bytes | floor (2N/3N e) | DRAM / floor | DRAM % of peak |"
             " achieved occupancy % |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    if len(segs) != len(cases):
        lines.append(f"| (expected {len(cases)} calls, found {len(segs)}: the per-kernel table below is exact) |"
                     + " |" * 8)
    for (case, direction, floor), seg in zip(cases, segs):
        dram = sum(k["dram__bytes_read.sum"] + k["dram__bytes_write.sum"] for k in seg)
        time_us = sum(k["gpu__time_duration.sum"] for k in seg) / 1e3
        dram_pct = weighted(seg, "dram__throughput.avg.pct_of_peak_sustained_elapsed")
        occupancy = weighted(seg, "sm__warps_active.avg.pct_of_peak_sustained_active")
        lines.append(f"| {case} | {direction} | {len(seg)} | {time_us:.1f} | {dram / 1e6:.2f} MB |"
                     f" {floor / 1e6:.2f} MB | {dram / floor:.3f} | {dram_pct:.1f} | {occupancy:.1f} |")
    lines += ["", "| kernel | grid | block | registers | dynamic smem | time (µs) | DRAM MB | DRAM % of peak |"
              " achieved occ. % | theoretical occ. % |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k in rows:
        lines.append(f"| {short_name(k['name'])} | {k['grid']} | {k['block']} |"
                     f" {k['launch__registers_per_thread']:.0f} | {k['launch__shared_mem_per_block_dynamic']:.0f} |"
                     f" {k['gpu__time_duration.sum'] / 1e3:.1f} |"
                     f" {(k['dram__bytes_read.sum'] + k['dram__bytes_write.sum']) / 1e6:.2f} |"
                     f" {k['dram__throughput.avg.pct_of_peak_sustained_elapsed']:.1f} |"
                     f" {k['sm__warps_active.avg.pct_of_peak_sustained_active']:.1f} |"
                     f" {k['sm__maximum_warps_per_active_cycle_pct']:.1f} |")
    return "\n".join(lines) + "\n", len(rows)
