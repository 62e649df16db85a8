"""Repeats with their spread, through the app on tiny sizes: ``-m seed=0,1,2 scenario.num_users=2,3`` runs
every setting on three seeds (the data's seed follows the run's), and the sweep's report and parent show
each setting as one point, the mean over its seeds with a 95 % confidence interval of Student's t, in
``report.md``, ``sweep_curves.png`` and the shift figures."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy import stats

from tests.conftest import TINY, isolated_env, run_app

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def repeated(tmp_path_factory):
    import mlflow

    work = tmp_path_factory.mktemp("repeats")
    env = isolated_env(work)
    proc = run_app(
        "-m",
        "seed=0,1,2",
        "scenario.num_users=2,3",
        "scenario=gaussian_ic",
        "learner=dnn",
        "eval.shifts={scenario.p_max: [10.0, 100.0]}",
        "tracking.log_model=false",
        *TINY,
        cwd=work,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("mimo_l2o").experiment_id])
    (parent,) = [r for r in runs if "learner" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return work, env, proc, client, parent, children


def _interval(values):
    """The 95 % interval's half-width, computed here with scipy's own interval of the mean."""
    values = np.asarray(values, dtype=float)
    low, high = stats.t.interval(0.95, values.size - 1, loc=values.mean(), scale=stats.sem(values))
    return values.mean(), (high - low) / 2


def _by_k(children, metric):
    out = {}
    for run in children:
        out.setdefault(run.data.params["scenario.num_users"], []).append(run.data.metrics[metric])
    return out


def test_the_data_seed_follows_the_runs_seed(repeated):
    *_, children = repeated
    assert len(children) == 6 and all(r.info.status == "FINISHED" for r in children)
    assert sorted((r.data.params["seed"], r.data.params["scenario.seed"]) for r in children) == sorted(
        (str(s), str(s)) for s in SEEDS for _ in (2, 3)
    )
    # three seeds, three test sets: the solver's mean differs between them
    solver = _by_k(children, "test/objective_solver")
    assert all(len(set(v)) == 3 for v in solver.values())


def test_the_report_shows_each_setting_as_its_mean_and_interval_over_the_seeds(repeated):
    work, env, _, client, parent, children = repeated
    proc = run_app("report", "--sweep", parent.info.run_id, "--out", "rep", cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = work / "rep"
    assert {"sweep_curves.png", "shift_scenario.p_max.png", "cdf_objective.png"} <= {
        p.name for p in out.iterdir()
    }
    ratios = _by_k(children, "test/objective_ratio")
    with (out / "report.csv").open() as f:
        rows = {row["K"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == ["2", "3"]
    text = (out / "report.md").read_text()
    assert "95 % confidence interval" in text
    for k, row in rows.items():
        mean, half = _interval(ratios[k])
        assert row["seeds"] == "3"
        assert float(row["objective_ratio"]) == pytest.approx(mean)
        assert float(row["objective_ratio_ci95"]) == pytest.approx(half)
        assert f"| {mean:.4g} ± {half:.2g} |" in text
    # the shifts: a row per point, each value's mean ± interval over the seeds
    shifted = _by_k(children, "test/shift/scenario.p_max/10/objective_ratio")
    section = text.split("## Generalization shifts", 1)[1]
    for k in ("2", "3"):
        mean, half = _interval(shifted[k])
        assert f"{mean:.4g} ± {half:.2g}" in section
    # the parent's metrics: each point's mean, interval and seeds
    metrics = client.get_run(parent.info.run_id).data.metrics
    for k in ("2", "3"):
        mean, half = _interval(ratios[k])
        name = f"point/dnn gaussian_ic K:{k}"
        assert metrics[f"{name}/objective_ratio_mean"] == pytest.approx(mean)
        assert metrics[f"{name}/objective_ratio_ci95"] == pytest.approx(half)
        assert metrics[f"{name}/seeds"] == 3


def test_the_sweep_curves_and_shift_figures_carry_the_intervals(repeated, monkeypatch):
    _, _, _, client, parent, children = repeated
    from mimo_l2o import figures, report

    drawn = []
    monkeypatch.setattr(figures, "close", drawn.append)
    points = report.points_of([report.row_of(r, client, with_samples=False) for r in children])
    assert report.sweep_figure(points, _sink())
    (fig,) = drawn
    ratio_axes = fig.axes[1]
    (learner,) = [c for c in ratio_axes.containers if c.get_label() == "DNN"]
    # the error bars' segments are mean ± half-width at K = 2 and 3
    ratios = _by_k(children, "test/objective_ratio")
    segments = learner.lines[2][0].get_segments()
    for (x, (low, high)), k in zip(
        ((s[0][0], (s[0][1], s[1][1])) for s in segments), ("2", "3"), strict=True
    ):
        mean, half = _interval(ratios[k])
        assert x == float(k) and low == pytest.approx(mean - half) and high == pytest.approx(mean + half)
    drawn.clear()
    report.shift_figures(points, _sink().parent)
    assert len(drawn) == 1 and drawn[0].axes[0].containers
    shifted = _by_k(children, "test/shift/scenario.p_max/100/objective_ratio")
    for container in drawn[0].axes[0].containers:
        k = container.get_label().split("K=")[-1].split()[0]  # the setting: "dnn gaussian_ic K=2"
        segment = container.lines[2][0].get_segments()[-1]  # p_max = 100, the larger value
        mean, half = _interval(shifted[k])
        assert segment[1][1] - segment[0][1] == pytest.approx(2 * half)
        assert math.isclose((segment[0][1] + segment[1][1]) / 2, mean, rel_tol=1e-9)


def _sink():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp()) / "sweep_curves.png"
