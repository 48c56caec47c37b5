"""Summary of Nsight Compute's source page (per SASS instruction) for the spatial kernels.

    ncu --import REPORT --page source --csv --print-source sass > sass.csv
    python3 tools/ncu_source_summary.py sass.csv [--top 10]

Per profiled kernel: shared-memory wavefronts and the excess over their ideal (bank
conflicts), global sectors and their excess (uncoalesced accesses), warp-stall samples, then
the instructions with the most excess wavefronts, the most excess sectors and the most stall
samples. tools/device_run.sh source runs it on the device; docs/gpu-results.md reads one.
"""
from __future__ import annotations

import argparse
import csv
import sys

SHARED, SHARED_IDEAL = "L1 Wavefronts Shared", "L1 Wavefronts Shared Ideal"
SHARED_EXCESS = "L1 Wavefronts Shared Excessive"
GLOBAL, GLOBAL_EXCESS = "L2 Theoretical Sectors Global", "L2 Theoretical Sectors Global Excessive"
SAMPLES = "Warp Stall Sampling (All Samples)"


def number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def kernels(rows: list[list[str]]) -> list[tuple[str, list[dict]]]:
    """(kernel name, instruction rows as dicts) per "Kernel Name" block of the CSV."""
    out, name, header = [], None, None
    for row in rows:
        if row and row[0] == "Kernel Name":
            name, header = row[1], None
            out.append((name, []))
        elif name is not None and header is None:
            header = row
        elif name is not None and row:
            out[-1][1].append(dict(zip(header, row)))
    return out


def short(name: str) -> str:
    """'FwdMain<float, (bool)0, int, (bool)0>' out of the demangled kernel name."""
    start = name.find("::block::", name.find("<")) + len("::block::")
    end = name.find(", sam_fused::block::Args")
    return name[start:end] if start > 8 and end > start else name


def summarise(rows: list[list[str]], top: int) -> str:
    lines, seen = [], set()
    for name, instrs in kernels(rows):
        totals = {k: sum(number(i.get(k, "")) for i in instrs) for k in (SHARED, SHARED_EXCESS, GLOBAL, GLOBAL_EXCESS,
                                                                         SAMPLES)}
        key = (name, tuple(totals.values()))
        if key in seen:  # ncu prints a kernel's page once per view: keep one
            continue
        seen.add(key)
        lines.append(f"{short(name)}: shared wavefronts {totals[SHARED]:.0f} (excess {totals[SHARED_EXCESS]:.0f}), "
                     f"global sectors {totals[GLOBAL]:.0f} (excess {totals[GLOBAL_EXCESS]:.0f}), "
                     f"stall samples {totals[SAMPLES]:.0f}")
        for title, col in (("excess wavefronts", SHARED_EXCESS), ("excess sectors", GLOBAL_EXCESS),
                           ("stall samples", SAMPLES)):
            ranked = [i for i in sorted(instrs, key=lambda i: -number(i.get(col, ""))) if number(i.get(col, ""))][:top]
            if ranked:
                lines.append(f"  top {title}:")
                for i in ranked:
                    source = i.get("Source", "").strip()[:56]
                    lines.append(f"    {i.get('Address', '?'):>14}  {source:56}  {number(i[col]):9.0f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="ncu --page source --csv --print-source sass output")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args(argv)
    with open(args.csv, newline="") as f:
        text = summarise(list(csv.reader(f)), args.top)
    print(text or "no kernels in the CSV")
    return 0 if text else 1


if __name__ == "__main__":
    sys.exit(main())
