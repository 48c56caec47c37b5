"""benchmarks/calibrate_model.py: sweep rows are re-planned and left out when today's planner plans
them differently, the fit recovers a card that generated the times, never ends worse than where it
started, and the report runs on the kept H100 sweep."""
import csv
import dataclasses
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import calibrate_model as cm  # noqa: E402
import phase_model as pm  # noqa: E402

H100 = pm.CARDS["H100"]
FIELDS = ("case", "shape", "dtype", "direction", "variant", "rows_arg", "threads_arg", "two_pass", "rows", "blocks",
          "threads", "staged_x", "chunk_rows", "us", "matches_planner")


def sweep_rows(path=cm.DEFAULT_SWEEPS[-1], keep=lambda r: True):
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if keep(r)]


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    return str(path)


# a few plans of four groups: one-pass and two-pass, both layers, both directions, both dtypes
SUBSET = {("UCI-HAR b1", "float32", "fwd"), ("UCI-HAR b4", "bfloat16", "bwd"), ("CBAM 64ch", "float32", "fwd"),
          ("CBAM 64ch", "bfloat16", "bwd")}


@pytest.fixture(scope="module")
def subset_samples(tmp_path_factory):
    rows = sweep_rows(keep=lambda r: (r["case"], r["dtype"], r["direction"]) in SUBSET)
    path = write_csv(tmp_path_factory.mktemp("sweep") / "subset.csv", rows)
    samples, skipped = cm.load_sweep(path, H100.arch, {})
    assert skipped == 0 and len(samples) == len(rows) > 40
    return samples


def test_a_row_whose_plan_the_planner_no_longer_makes_is_left_out(tmp_path):
    rows = sweep_rows(keep=lambda r: r["case"] == "UCI-HAR b1" and r["dtype"] == "float32")[:6]
    changed = [dict(r) for r in rows]
    changed[0]["blocks"] = str(int(changed[0]["blocks"]) + 1)  # timed with another plan than today's
    changed[1]["rows"] = "999"
    samples, skipped = cm.load_sweep(write_csv(tmp_path / "s.csv", changed), H100.arch, {})
    assert skipped == 2 and len(samples) == 4
    assert [s.measured for s in samples] == [float(r["us"]) * 1e-6 for r in rows[2:]]


def test_a_sample_is_predicted_as_the_model_predicts_its_plan(subset_samples):
    s = next(s for s in subset_samples if s.overrides == (0, 0, 0))
    pool, kernel = cm.layer_of(s.label)
    import torch
    expected = sum(lt.seconds for lt in pm.launches_of_call(s.shape, getattr(torch, s.dtype), pool, kernel,
                                                            s.direction == "bwd", H100, {}))
    assert s.predicted(H100) == pytest.approx(expected)
    gap = dataclasses.replace(H100, launch_gap=2e-6)
    assert s.predicted(gap) == pytest.approx(expected + 2e-6 * len(s.launches))


def test_the_fit_recovers_the_card_that_made_the_times(subset_samples):
    truth = dataclasses.replace(H100, dram_latency=1.2e-6, cpi=3.5, stream_efficiency=0.6, launch_gap=2.5e-6)
    made = [dataclasses.replace(s, measured=s.predicted(truth)) for s in subset_samples]
    assert cm.loss(made, H100) > 0.01
    params = [p for p in cm.PARAMS if p[0] in ("dram_latency", "cpi", "stream_efficiency", "launch_gap")]
    fitted = cm.fit(made, H100, params=params)
    errors = cm.log_errors(made, fitted)
    assert max(abs(e) for e in errors) < 0.03
    assert fitted.stream_efficiency == pytest.approx(0.6, rel=0.1)


def test_the_fit_never_ends_above_where_it_started(subset_samples):
    start = dataclasses.replace(H100, cpi=4.0, smem_latency=100e-9)  # not the optimum of anything
    fitted = cm.fit(subset_samples, start, max_evaluations=60)
    assert cm.loss(subset_samples, fitted) <= cm.loss(subset_samples, start)


def test_huber_loss_counts_a_wild_plan_linearly():
    class Fixed:
        def __init__(self, ratio):
            self.measured, self.ratio = ratio, ratio

        def predicted(self, card):
            return 1.0

    small = cm.loss([Fixed(math.exp(0.1))], H100)
    assert small == pytest.approx(0.1 ** 2 / 2)
    wild = cm.loss([Fixed(math.exp(2.0))], H100)
    assert wild == pytest.approx(cm.HUBER * (2.0 - cm.HUBER / 2))


def test_merge_keeps_each_plans_fastest_timing_and_its_planner_mark(subset_samples):
    planner = next(s for s in subset_samples if s.overrides == (0, 0, 0))
    other = next(s for s in subset_samples if s.overrides != (0, 0, 0) and s.group == planner.group)
    again = [dataclasses.replace(planner, overrides=(5, 0, 0), measured=planner.measured / 2),  # same plan, faster
             dataclasses.replace(other, measured=other.measured * 3)]                           # same plan, slower
    merged = cm.merge(subset_samples + again)
    assert len(merged) == len(subset_samples)
    by_plan = {(s.group, s.plan): s for s in merged}
    fast = by_plan[(planner.group, planner.plan)]
    assert fast.measured == planner.measured / 2 and fast.overrides == (0, 0, 0)
    assert by_plan[(other.group, other.plan)].measured == other.measured


def test_spearman():
    assert cm.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1)
    assert cm.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1)
    assert math.isnan(cm.spearman([1, 2], [1, 2]))


def test_group_report_takes_the_measured_time_of_the_plan_predicted_fastest(subset_samples):
    reports = cm.group_reports(subset_samples, H100)
    assert len(reports) == len(SUBSET)
    for g in reports:
        members = [s for s in subset_samples if s.group == g.group]
        fastest = min(members, key=lambda s: s.predicted(H100))
        assert g.chosen == fastest.measured and g.best == min(s.measured for s in members)
        assert g.planner == next(s.measured for s in members if s.overrides == (0, 0, 0))


def test_report_runs_on_the_kept_sweep(tmp_path, capsys):
    rows = sweep_rows(keep=lambda r: (r["case"], r["dtype"], r["direction"]) in SUBSET)
    assert cm.main(["--sweep", write_csv(tmp_path / "s.csv", rows), "--no-fit", "--groups"]) == 0
    out = capsys.readouterr().out
    assert "H100 as given" in out and "| CBAM 64ch | 32x64x56x56 | bfloat16 | bwd |" in out
