"""Turn the pytest-benchmark JSON of benchmarks/ into a table of speedups and bandwidth, and a plot.

    python benchmarks/report.py BENCH.json [--png out.png] [--md out.md]

Per (case, shape, dtype, device): the median time of each implementation, the speedup of the
fused op over eager and over torch.compile, the time of fused relative to ``x.clone()``, the
fused op's achieved bandwidth (docs/design.md §3 floor bytes / time: fwd 2Ne, bwd 3Ne, fwd+bwd 5Ne)
and that bandwidth as a % of the measured copy bandwidth (clone moves 2Ne). Then geometric
means over the UCI-HAR batch-128 shapes.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

CASE_NAMES = {"fwd": "fwd", "fwdbwd": "fwd+bwd", "bwd": "bwd"}
IMPLS = ("eager", "compile", "compile-max-autotune", "fused", "fused-python-autograd", "clone")
SHORT = {"compile-max-autotune": "autotune", "fused-python-autograd": "fused py-autograd"}  # column headers
COLORS = {"eager": "C0", "compile": "C1", "compile-max-autotune": "C4", "fused": "C2", "fused-python-autograd": "C3",
          "clone": "C7"}
SPEEDUPS = (("eager/fused", "eager_over_fused", "eager"), ("compile/fused", "compile_over_fused", "compile"),
            ("autotune/fused", "autotune_over_fused", "compile-max-autotune"))
# The CPU fp32 targets (geometric means over the UCI-HAR batch-128 shapes), shown for reference.
TARGETS = ("targets (CPU fp32): fwd fused/clone <= 1.5, eager/fused >= 2; "
           "fwd+bwd eager/fused >= 5, compile/fused >= 3")


def load(path) -> dict:
    return json.loads(Path(path).read_text())


def rows(data) -> list[dict]:
    """One row per (case, shape, dtype, device) with the median time of each implementation."""
    table = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if info.get("case") not in CASE_NAMES or info.get("impl") not in IMPLS:
            continue  # another suite's benchmark in the same run
        key = (info["case"], tuple(info["shape"]), info["dtype"], info["device"], info.get("threads"))
        row = table.setdefault(key, dict(
            case=info["case"], shape=tuple(info["shape"]), dtype=info["dtype"], device=info["device"],
            threads=info.get("threads"),
            label=info.get("label", ""), numel=info["numel"], elem_bytes=info["elem_bytes"],
            floor_bytes=info["floor_bytes"], time={}, compile_s={}, peak_mem={}))
        impl = info["impl"]
        row["time"][impl] = bench["stats"]["median"]
        if "compile_s" in info:
            row["compile_s"][impl] = info["compile_s"]
        if "peak_mem_bytes" in info:
            row["peak_mem"][impl] = info["peak_mem_bytes"]
    _fill_clone_from_other_cases(table)
    return [_derive(r) for r in table.values()]


def _fill_clone_from_other_cases(table):
    # The copy bandwidth depends only on (shape, dtype, device, threads): borrow a clone timing from
    # another case of the same tensor when this case has none.
    clone_by_tensor = {key[1:]: r["time"]["clone"] for key, r in table.items() if "clone" in r["time"]}
    for key, r in table.items():
        if "clone" not in r["time"] and key[1:] in clone_by_tensor:
            r["clone_borrowed"] = clone_by_tensor[key[1:]]


def _ratio(a, b):
    return a / b if a is not None and b else None


def _derive(r):
    t = r["time"]
    fused, clone = t.get("fused"), t.get("clone", r.get("clone_borrowed"))
    clone_bw = _ratio(2 * r["numel"] * r["elem_bytes"], clone)
    fused_bw = _ratio(r["floor_bytes"], fused)
    r.update(
        eager_over_fused=_ratio(t.get("eager"), fused),
        compile_over_fused=_ratio(t.get("compile"), fused),
        autotune_over_fused=_ratio(t.get("compile-max-autotune"), fused),
        pyautograd_over_fused=_ratio(t.get("fused-python-autograd"), fused),
        fused_over_clone=_ratio(fused, clone),
        fused_gbs=fused_bw / 1e9 if fused_bw else None,
        pct_clone_bw=100 * fused_bw / clone_bw if fused_bw and clone_bw else None,
    )
    return r


def summary(all_rows) -> list[str]:
    """Geometric means over the UCI-HAR batch-128 shapes, per (case, dtype, device, threads)."""
    groups = defaultdict(list)
    for r in all_rows:
        if r["label"].startswith("UCI-HAR") and r["shape"][0] == 128 and r["case"] in ("fwd", "fwdbwd"):
            groups[(r["case"], r["dtype"], r["device"], r.get("threads") or 0)].append(r)
    lines = []
    for (case, dtype, device, threads), rs in sorted(
            groups.items(), key=lambda kv: (kv[0][2], kv[0][1], -kv[0][3], kv[0][0] != "fwd")):
        parts = [f"{name} {_fmt_x(_geomean([r[key] for r in rs]))}" for name, key in
                 (("fused/clone", "fused_over_clone"), ("eager/fused", "eager_over_fused"),
                  ("compile/fused", "compile_over_fused"), ("py-autograd/fused", "pyautograd_over_fused"))]
        where = f"{device}, {threads} thread{'s' if threads != 1 else ''}" if threads else device
        lines.append(f"geomean UCI-HAR batch 128 ({len(rs)} shapes), {CASE_NAMES[case]} {dtype} {where}: "
                     + ", ".join(parts))
    return lines


def _geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


# ----------------------------------------------------------------------------- formatting

def _fmt_time(s):
    if s is None:
        return "-"
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_x(v):
    return "-" if v is None else f"{v:.2f}x"


def _fmt_num(v, fmt):
    return "-" if v is None else format(v, fmt)


def machine_line(data) -> str:
    mi = data.get("machine_info", {})
    ours = mi.get("sam_fused", {})
    cpu = ours.get("cpu_model") or mi.get("cpu", {}).get("brand_raw", "unknown CPU")
    caches = ", ".join(f"{k} {v // 1024} KiB" for k, v in ours.get("cache_bytes", {}).items() if v)
    parts = [f"CPU {cpu} ({ours.get('cpu_count', '?')} cores{', ' + caches if caches else ''}, "
             f"sam_fused ISA {ours.get('cpu_isa', '?')}, torch threads {ours.get('torch_threads', '?')})"]
    if ours.get("gpu"):
        parts.append(f"GPU {ours['gpu']} (CUDA {ours.get('cuda')})")
    parts.append(f"torch {ours.get('torch', '?')}")
    parts.append(f"{ours.get('mode', '?')} mode, {data.get('datetime', '')[:19]}")
    return "; ".join(parts)


def table(all_rows) -> tuple[list[str], list[list[str]]]:
    impls = [i for i in IMPLS if any(i in r["time"] for r in all_rows)]
    header = ["case", "from", "shape", "dtype", "dev", "thr", *(SHORT.get(i, i) for i in impls),
              "eager/fused", "compile/fused", *(["autotune/fused"] if "compile-max-autotune" in impls else []),
              "fused/clone", "fused GB/s", "% clone BW", "compile s"]
    body = []
    order = {c: i for i, c in enumerate(CASE_NAMES)}

    def row_order(r):
        return (r["device"], r["dtype"], order[r["case"]], -(r.get("threads") or 0), -r["shape"][0], r["label"],
                r["shape"])

    for r in sorted(all_rows, key=row_order):
        body.append([
            CASE_NAMES[r["case"]], r["label"], "x".join(map(str, r["shape"])), r["dtype"], r["device"],
            str(r.get("threads") or "-"),
            *(_fmt_time(r["time"].get(i)) for i in impls),
            _fmt_x(r["eager_over_fused"]), _fmt_x(r["compile_over_fused"]),
            *([_fmt_x(r["autotune_over_fused"])] if "compile-max-autotune" in impls else []),
            _fmt_x(r["fused_over_clone"]), _fmt_num(r["fused_gbs"], ".3g"), _fmt_num(r["pct_clone_bw"], ".0f"),
            _fmt_num(r["compile_s"].get("compile"), ".1f"),
        ])
    return header, body


def peak_memory_table(all_rows):
    rs = [r for r in all_rows if r["case"] == "fwdbwd" and r["peak_mem"]]
    if not rs:
        return None
    impls = [i for i in IMPLS if i != "clone" and any(i in r["peak_mem"] for r in rs)]
    header = ["fwd+bwd peak MiB", "shape", "dtype", *(SHORT.get(i, i) for i in impls)]
    body = [[r["label"], "x".join(map(str, r["shape"])), r["dtype"],
             *(_fmt_num(r["peak_mem"][i] / 2**20 if i in r["peak_mem"] else None, ".1f") for i in impls)]
            for r in sorted(rs, key=lambda r: (r["dtype"], r["label"], r["shape"]))]
    return header, body


def _text_table(header, body) -> str:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(row):
        return "  ".join(c.ljust(w) if i < 6 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def _md_table(header, body) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(row) + " |" for row in body)])


def _render(data, render_table) -> list[str]:
    all_rows = rows(data)
    parts = [render_table(*table(all_rows))]
    mem = peak_memory_table(all_rows)
    if mem:
        parts.append(render_table(*mem))
    notes = summary(all_rows) + [
        TARGETS,
        "times are medians; GB/s = docs/design.md §3 floor bytes (fwd 2Ne, bwd 3Ne, fwd+bwd 5Ne) / fused time; "
        "% clone BW = that vs x.clone() (2Ne / clone time); compile s = first call (compile, inductor cache as found)",
    ]
    return [machine_line(data), *parts, notes]


def render_text(data) -> str:
    head, *tables, notes = _render(data, _text_table)
    return "\n\n".join([head, *tables, "\n".join(notes)])


def render_markdown(data) -> str:
    head, *tables, notes = _render(data, _md_table)
    return "\n\n".join([f"Machine: {head}", *tables, "\n".join(f"- {n}" for n in notes)]) + "\n"


# ----------------------------------------------------------------------------- plot

def plot(data, path) -> None:
    """Top row: median time vs N per implementation, one panel per case; bottom row: speedup of
    fused over eager and over compile per shape. One pair of rows per (device, dtype)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_rows = rows(data)
    combos = sorted({(r["device"], r["dtype"]) for r in all_rows})
    cases = [c for c in CASE_NAMES if any(r["case"] == c for r in all_rows)]
    most_shapes = max(sum(1 for r in all_rows if (r["device"], r["dtype"], r["case"]) == key)
                      for key in {(r["device"], r["dtype"], r["case"]) for r in all_rows})
    fig, axes = plt.subplots(2 * len(combos), len(cases), squeeze=False,
                             figsize=(max(6.0, 0.3 * most_shapes) * len(cases), 4.5 * 2 * len(combos)))
    for k, (device, dtype) in enumerate(combos):
        for j, case in enumerate(cases):
            rs = sorted((r for r in all_rows if (r["device"], r["dtype"], r["case"]) == (device, dtype, case)),
                        key=lambda r: r["numel"])
            if not rs:  # e.g. no bwd case at this dtype
                axes[2 * k, j].axis("off")
                axes[2 * k + 1, j].axis("off")
                continue
            _plot_time_vs_n(axes[2 * k, j], rs, f"{CASE_NAMES[case]} {dtype} {device}: time vs N")
            _plot_speedups(axes[2 * k + 1, j], rs, f"{CASE_NAMES[case]} {dtype} {device}: fused speedup")
    fig.suptitle(machine_line(data), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_time_vs_n(ax, rs, title):
    for impl in IMPLS:
        pts = [(r["numel"], r["time"][impl]) for r in rs if impl in r["time"]]
        if pts:
            ax.plot(*zip(*pts), marker="o", linestyle="-", label=impl, color=COLORS[impl])
    ax.set(xscale="log", yscale="log", xlabel="N = B*C*H*W elements", ylabel="median time (s)", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _plot_speedups(ax, rs, title):
    labels = [f"{r['label']}\n{'x'.join(map(str, r['shape']))}" for r in rs]
    shown = [(name, key, impl) for name, key, impl in SPEEDUPS if any(r[key] for r in rs)]
    width = 0.8 / max(1, len(shown))
    for n, (name, key, impl) in enumerate(shown):
        offset = (n - (len(shown) - 1) / 2) * width
        ax.bar([x + offset for x in range(len(rs))], [r[key] or 0 for r in rs], width=width, label=name,
               color=COLORS[impl])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(range(len(rs))), labels, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="speedup of fused (x)", title=title)
    if shown:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no fused timings", transform=ax.transAxes, ha="center")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="pytest-benchmark JSON (--benchmark-json) of benchmarks/")
    parser.add_argument("--png", help="write the plot here")
    parser.add_argument("--md", help="write the table as Markdown here")
    args = parser.parse_args(argv)
    data = load(args.json)
    if not rows(data):
        raise SystemExit(f"{args.json}: no sam_fused benchmarks in it")
    print(render_text(data))
    if args.md:
        Path(args.md).write_text(render_markdown(data))
    if args.png:
        plot(data, args.png)


if __name__ == "__main__":
    main()
