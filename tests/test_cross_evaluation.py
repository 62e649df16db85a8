"""The cross-evaluation sweep and its report through the app, on tiny sizes: ``-m 'learner=glob(*)'`` runs
every learner that can read the scenario under one parent run, skips the others with one line each
(naming the pair and the reason) and records them in the parent; ``mimo-l2o report --sweep`` writes the
table, the CSV and the figures from the runs' own metrics, logs them to the parent and fills a README's
matrix block."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.conftest import TINY, isolated_env, run_app


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    import mlflow

    work = tmp_path_factory.mktemp("cross")
    env = isolated_env(work)
    proc = run_app("-m", "learner=glob(*)", "scenario=gaussian_ic", *TINY, cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("mimo_l2o").experiment_id])
    return work, env, proc, client, runs


def test_the_sweep_runs_the_learners_that_read_the_scenario_and_skips_the_others(sweep):
    _, _, proc, client, runs = sweep
    (parent,) = [r for r in runs if "learner" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) + 1 == len(runs)
    assert sorted(r.data.tags["learner"] for r in children) == ["dnn", "gnn"]
    assert all(r.info.status == "FINISHED" for r in children) and parent.info.status == "FINISHED"
    # one line per skipped pair, naming it and the reason
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 6, proc.stderr[-3000:]
    for learner in ("position_lstm", "position_mlp"):
        (line,) = [s for s in skipped if f"learner={learner} " in s]
        assert "scenario=gaussian_ic: " in line and "user_positions" in line and "no positions" in line
    # the beamforming learners
    for learner in ("data_driven_bf", "model_driven", "neural_calibration", "unfolded_wmmse"):
        (line,) = [s for s in skipped if f"learner={learner} " in s]
        assert line.endswith(
            f"learner={learner} works on beamforming problems but precoder=none makes power_control"
        )
    # the sweep's last lines say where everything is, and its first counts every job
    work, env = sweep[0], sweep[1]
    assert "2 of 2 runs finished, 0 failed, 6 jobs skipped" in proc.stdout
    page = f"#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
    store = env["MLFLOW_TRACKING_URI"]
    (folder,) = work.glob("multirun/*/*/report")
    assert (folder / "report.md").is_file()
    assert proc.stdout.strip().splitlines()[-4:] == [
        f"parent run  {parent.info.run_id}",
        f"MLflow      http://127.0.0.1:5000/{page} after: mlflow ui --backend-store-uri {store}",
        f"report      {folder.relative_to(work)}/ (logged to the parent run under report/)",
        f"again       mimo-l2o report --sweep {parent.info.run_id}",
    ]
    logged = sorted(a.path for a in client.list_artifacts(parent.info.run_id, "skipped"))
    assert [p.split("/")[1].split("-")[0] for p in logged] == [
        "data_driven_bf",
        "model_driven",
        "neural_calibration",
        "position_lstm",
        "position_mlp",
        "unfolded_wmmse",
    ]


def test_the_report_shows_the_runs_metrics_and_logs_them_to_the_parent(sweep):
    work, env, _, client, runs = sweep
    (parent,) = [r for r in runs if "learner" not in r.data.tags]
    readme = work / "README.md"
    readme.write_text("# x\n\n<!-- cross-evaluation -->\nold\n<!-- /cross-evaluation -->\n\nafter\n")
    proc = run_app(
        "report", "--sweep", parent.info.run_id, "--out", "rep", "--readme", str(readme), cwd=work, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = work / "rep"
    assert {p.name for p in out.iterdir()} == {
        "report.md",
        "report.csv",
        "ratio_heatmap.png",
        "cdf_objective.png",
        "training_curves.png",
    }
    with (out / "report.csv").open() as f:
        rows = {row["learner"]: row for row in csv.DictReader(f)}
    children = {r.data.tags["learner"]: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert sorted(rows) == sorted(children) == ["dnn", "gnn"]
    for learner, row in rows.items():
        metrics = children[learner].data.metrics
        assert float(row["objective_ratio"]) == pytest.approx(metrics["test/objective_ratio"])
        assert float(row["speedup"]) == pytest.approx(metrics["test/speedup"])
        best = max(metrics["test/objective_max_power"], metrics["test/objective_random"])
        assert float(row["best_baseline_ratio"]) == pytest.approx(best / metrics["test/objective_solver"])
        assert row["best_baseline"] in ("max_power", "random")
        assert row["scenario"] == "gaussian_ic" and row["K"] == "10" and row["commit"]
        assert row["paper"] == {"dnn": "sun2018", "gnn": "raghunath2023"}[learner]
    # Sun et al.'s Table I at K = 10, next to the DNN's own number
    assert rows["dnn"]["published"].startswith("98.33 %") and rows["gnn"]["published"] == ""
    text = (out / "report.md").read_text()
    assert "| position_mlp | refuses (" in text and "learner=position_mlp needs input user_positions" in text
    assert f"| dnn | {float(rows['dnn']['objective_ratio']):.3f}" in text
    block = readme.read_text()
    assert block.startswith("# x\n\n<!-- cross-evaluation -->\nGenerated by `mimo-l2o report")
    assert (
        "| dnn |" in block
        and "\nold\n" not in block
        and block.endswith("<!-- /cross-evaluation -->\n\nafter\n")
    )
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.csv", "report/ratio_heatmap.png"} <= logged


def test_the_report_takes_single_runs_and_names_a_missing_one(sweep):
    work, env, _, _, runs = sweep
    (dnn,) = [r for r in runs if r.data.tags.get("learner") == "dnn"]
    proc = run_app("report", "--run", dnn.info.run_id, "--out", "one", cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (work / "one" / "report.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["learner"] == "dnn"
    assert float(row["objective_ratio"]) == pytest.approx(dnn.data.metrics["test/objective_ratio"])
    proc = run_app("report", "--run", "0" * 32, "--out", "none", cwd=work, env=env)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and lines[-1].startswith(f"error: --run: no run '{'0' * 32}'")
    assert not (work / "none").exists()


def test_a_runs_label_adds_the_settings_its_sweep_gave_every_job():
    from types import SimpleNamespace

    from mimo_l2o.report import run_label

    def run(name, parent=None):
        tags = {"mlflow.parentRunId": parent} if parent else {}
        return SimpleNamespace(info=SimpleNamespace(run_name=name), data=SimpleNamespace(tags=tags))

    parents = {
        "p1": run("sweep scenario=miso_tdd learner=model_driven learner.variant=channel_zf"),
        "p2": run("sweep scenario=miso_tdd learner=model_driven learner.alpha_r=1,0.001"),
        "p3": run(
            "sweep learner=neural_calibration scenario.num_users=2,4 eval.shifts={scenario.num_users: [2, 4]}"
        ),
    }
    client = SimpleNamespace(get_run=lambda run_id: parents[run_id])
    one_job = run("model_driven-miso_tdd-K4", "p1")
    assert run_label(one_job, client) == "model_driven-miso_tdd-K4 learner.variant=channel_zf"
    swept = run("model_driven-miso_tdd-K4 learner.alpha_r=1", "p2")  # the swept key is in the name already
    assert run_label(swept, client) == "model_driven-miso_tdd-K4 learner.alpha_r=1"
    shifted = run("neural_calibration-massive_fdd-K2", "p3")  # where it was tested is no part of its label
    assert run_label(shifted, client) == "neural_calibration-massive_fdd-K2"
    assert run_label(run("dnn-gaussian_ic-K10"), client) == "dnn-gaussian_ic-K10"  # no overrides logged


def test_a_single_runs_label_adds_its_command_lines_overrides(tmp_path):
    from types import SimpleNamespace

    from mimo_l2o.report import run_label

    logged = tmp_path / "logged"
    logged.mkdir()
    (logged / "overrides.yaml").write_text(
        "- scenario=miso_fdd\n- learner=model_driven\n- learner.recovery=slnr\n- learner.csi_skip=true\n"
    )

    def download_artifacts(run_id, path, dst):
        assert (run_id, path) == ("r1", "hydra/overrides.yaml")
        return str(logged / "overrides.yaml")

    client = SimpleNamespace(download_artifacts=download_artifacts)
    single = SimpleNamespace(
        info=SimpleNamespace(run_name="model_driven-miso_fdd-K6", run_id="r1"), data=SimpleNamespace(tags={})
    )
    assert run_label(single, client) == "model_driven-miso_fdd-K6 learner.recovery=slnr learner.csi_skip=true"


def _row(learner, k, learner_value, solver_value, settings=None, p_max="100.0", mrt=None, m=4, seed=0):
    """A finished run as the report reads it: its metrics' values and its params (the setting)."""
    from mimo_l2o.report import Row

    objectives = {"learner": learner_value, "solver": solver_value}
    if mrt is not None:
        objectives["mrt_bf"] = mrt
    params = {
        "scenario.name": "miso_tdd",
        "learner.name": learner,
        "scenario.num_users": str(k),
        "scenario.num_antennas": str(m),
        "scenario.p_max": p_max,
        "seed": str(seed),
        "scenario.seed": str(seed),
        "tracking.log_model": "True",
        **(settings or {}),
    }
    return Row(
        {
            "scenario": "miso_tdd",
            "objective": "sum_rate",
            "learner": learner,
            "solver": "wmmse_bf",
            "run": f"{learner}-miso_tdd-K{k}",
            "K": str(k),
            "M": str(m),
            "p_max": p_max,
            "objectives": objectives,
            "objective_ratio": learner_value / solver_value,
            "start_time": seed,
            "run_id": f"{learner}{k}{m}{p_max}{seed}",
        },
        params=params,
    )


def _series(rows):
    from mimo_l2o.report import points_of, sweep_series

    return sweep_series(points_of(rows))


def _means(curves):
    """A series' curves without their intervals: ``{label: [(x, mean), ...]}``."""
    return {label: [(x, y) for x, y, _ in curve] for label, curve in curves.items()}


def test_the_sweep_curves_follow_the_axis_the_runs_vary():
    rows = [
        _row("dnn", 4, 3.0, 10.0, mrt=6.0),
        _row("dnn", 2, 2.0, 6.0, mrt=5.0),
        _row("model_driven", 2, 5.0, 6.0, {"learner.alpha_r": "1"}),
        _row("model_driven", 2, 5.5, 6.0, {"learner.alpha_r": "1"}, seed=1),  # a second seed: averaged
        _row("model_driven", 4, 9.0, 10.0, {"learner.alpha_r": "1"}),
        _row("model_driven", 4, 7.0, 10.0, {"learner.alpha_r": "0.1"}),
    ]
    series = _series(rows)
    assert list(series) == [("miso_tdd", "sum_rate", "K")]  # M and p_max take one value
    entry = series[("miso_tdd", "sum_rate", "K")]
    assert _means(entry["objective"]) == {
        "dnn": [(2.0, 2.0), (4.0, 3.0)],
        "wmmse_bf (solver)": [(2.0, 6.0), (4.0, 10.0)],
        "mrt_bf (baseline)": [(2.0, 5.0), (4.0, 6.0)],
        "model_driven learner.alpha_r=1": [(2.0, 5.25), (4.0, 9.0)],
        "model_driven learner.alpha_r=0.1": [(4.0, 7.0)],
    }
    # the ratio to the solver on the same point (the learner's test/objective_ratio); none for the solver
    assert _means(entry["ratio"]) == {
        "dnn": [(2.0, 2.0 / 6.0), (4.0, 3.0 / 10.0)],
        "mrt_bf (baseline)": [(2.0, 5.0 / 6.0), (4.0, 6.0 / 10.0)],
        "model_driven learner.alpha_r=1": [(2.0, 5.25 / 6.0), (4.0, 9.0 / 10.0)],
        "model_driven learner.alpha_r=0.1": [(4.0, 0.7)],
    }
    # the interval of the point of two seeds: t(0.975, 1) · s / √2 with s = |5.5 - 5| / √2
    (_, _, half), _ = entry["objective"]["model_driven learner.alpha_r=1"]
    assert half == pytest.approx(12.706204736 * 0.25)
    assert entry["seeds"] == [1, 2]
    # one run per point and nothing varies: no curves
    assert _series(rows[:1]) == {}


def test_a_second_varying_axis_goes_into_the_labels_and_a_stale_figure_is_removed(tmp_path):
    from mimo_l2o.report import points_of, sweep_figure

    rows = [_row("dnn", k, float(k * p), float(2 * k * p), p_max=str(p)) for k in (2, 4) for p in (1.0, 10.0)]
    series = _series(rows)
    assert sorted(series) == [("miso_tdd", "sum_rate", "K"), ("miso_tdd", "sum_rate", "p_max")]
    curves = _means(series[("miso_tdd", "sum_rate", "K")]["objective"])
    assert curves["dnn p_max=10.0"] == [(2.0, 20.0), (4.0, 40.0)]
    solver = _means(series[("miso_tdd", "sum_rate", "p_max")]["objective"])["wmmse_bf (solver) K=2"]
    assert solver == [(1.0, 4.0), (10.0, 40.0)]
    path = tmp_path / "sweep_curves.png"
    assert sweep_figure(points_of(rows), path) and path.stat().st_size > 0
    assert not sweep_figure(points_of(rows[:1]), path) and not path.exists()


def test_the_pilot_length_is_an_axis_and_perfect_csi_is_no_point_on_it():
    """Fig. 5(b): the sum rate against the uplink pilots L; a run with perfect uplink CSI (L = None)
    stays off that axis."""
    rows = []
    for length in ("2", "4", "6", "None"):
        row = _row("model_driven", 6, 10.0 + (0 if length == "None" else float(length)), 20.0)
        row.values["L"] = row.params["scenario.pilot_length"] = length
        rows.append(row)
    series = _series(rows)
    assert list(series) == [("miso_tdd", "sum_rate", "L")]
    assert _means(series[("miso_tdd", "sum_rate", "L")]["ratio"]) == {
        "model_driven": [(2.0, 0.6), (4.0, 0.7), (6.0, 0.8)]
    }


def test_an_axis_tied_to_another_is_one_curve(tmp_path):
    from mimo_l2o.report import points_of, sweep_figure

    rows = []
    for k in (2, 3, 4):  # Fig. 4a: N_t = K, two variants, a width that follows the antennas
        for variant, value in (("hybrid", 0.9 * k), ("channel_zf", 0.5 * k)):
            settings = {"learner.variant": variant, "learner.width": str(4 * k), "data.num_train": "50000"}
            rows.append(_row("model_driven", k, value, float(k), settings, m=k))
    series = _series(rows)
    assert list(series) == [("miso_tdd", "sum_rate", "K")]  # M = K is no axis of its own
    entry = series[("miso_tdd", "sum_rate", "K")]
    assert entry["tied"] == ["M = K"]
    assert _means(entry["ratio"]) == {
        "model_driven learner.variant=channel_zf": [(2.0, 0.5), (3.0, 0.5), (4.0, 0.5)],
        "model_driven learner.variant=hybrid": [(2.0, 0.9), (3.0, 0.9), (4.0, 0.9)],
    }
    assert sorted(entry["objective"]) == [
        "model_driven learner.variant=channel_zf",
        "model_driven learner.variant=hybrid",
        "wmmse_bf (solver)",
    ]
    # M tied but not equal (M = 2K): named without the equation
    rows = [_row("model_driven", k, 1.0, 2.0, m=2 * k) for k in (2, 3)]
    assert _series(rows)[("miso_tdd", "sum_rate", "K")]["tied"] == ["M"]
    assert sweep_figure(points_of(rows), tmp_path / "curves.png")


def test_two_settings_on_two_points_of_the_axis_stay_two_curves():
    """A debug run at K = 4 and a full run at K = 8 are not one curve (nor one point)."""
    rows = [
        _row("dnn", 4, 3.0, 4.0, {"data.num_train": "512"}),
        _row("dnn", 8, 6.0, 7.0, {"data.num_train": "4096"}),
    ]
    curves = _means(_series(rows)[("miso_tdd", "sum_rate", "K")]["ratio"])
    assert curves == {
        "dnn data.num_train=512": [(4.0, 0.75)],
        "dnn data.num_train=4096": [(8.0, 6.0 / 7.0)],
    }


def test_a_shift_figure_has_the_runs_trained_at_each_value_beside_the_run_trained_once():
    """Ma et al. Fig. 8/10: the model trained at one power, tested at each (its shifts), and the models
    trained at each power (matched), on two seeds each; the mismatched curve is the shifted ratios' mean,
    the matched one each point's own test ratio."""
    from mimo_l2o.report import points_of, shift_curves

    rows = []
    for seed in (0, 1):
        for p, learner_value in (("10.0", 8.0), ("100.0", 9.0)):
            row = _row("dnn", 4, learner_value + seed, 10.0, p_max=p, seed=seed)
            if p == "10.0":  # the run trained at 10 W is tested at 10 and 100 W
                shifted = [("10.0", 0.8 + seed / 10), ("100.0", 0.5 + seed / 10)]
                row.values["shifts"] = {"scenario.p_max": shifted}
            rows.append(row)
    curves, seeds = shift_curves(points_of(rows))["scenario.p_max"]
    assert seeds == [2]
    assert _means(curves) == {
        "dnn miso_tdd p_max=10.0": [(10.0, pytest.approx(0.85)), (100.0, pytest.approx(0.55))],
        "dnn (trained at each value)": [(10.0, pytest.approx(0.85)), (100.0, pytest.approx(0.95))],
    }
    # runs of another scenario trained at each value: not drawn in this scenario's figure
    other = []
    for p, value in (("10.0", 2.0), ("100.0", 3.0)):
        row = _row("dnn", 4, value, 10.0, p_max=p)
        row.values["scenario"] = row.params["scenario.name"] = "miso_fdd"
        other.append(row)
    curves, _ = shift_curves(points_of(rows + other))["scenario.p_max"]
    matched = {label: curve for label, curve in _means(curves).items() if "each value" in label}
    assert matched == {
        "dnn (trained at each value)": [(10.0, pytest.approx(0.85)), (100.0, pytest.approx(0.95))]
    }
    # no runs at other values of the key: the shifted curve alone
    alone, _ = shift_curves(points_of([r for r in rows if r["p_max"] == "10.0"]))["scenario.p_max"]
    assert list(alone) == ["dnn miso_tdd"]


def test_a_joint_shift_figure_has_the_runs_trained_at_each_joint_value_in_size_order():
    """Raghunath et al.'s scaling: a model trained at 5 APs x 10 UEs tested at 10 x 10 and 15 x 15 (keys
    shifted together), beside the models trained at each size (matched by both keys' params)."""
    from mimo_l2o.report import points_of, shift_curves

    rows = []
    for seed in (0, 1):
        for (aps, users), value in (((5, 10), 9.0), ((10, 10), 8.0), ((15, 15), 7.0)):
            row = _row("gnn", users, value + seed / 2, 10.0, {"scenario.num_aps": str(aps)}, seed=seed)
            if aps == 5:
                shifted = [("5x10", 0.9), ("10x10", 0.7 + seed / 10), ("15x15", 0.6)]
                row.values["shifts"] = {"scenario.num_aps_x_num_users": shifted}
            rows.append(row)
    curves, seeds = shift_curves(points_of(rows))["scenario.num_aps_x_num_users"]
    assert seeds == [2]
    means = _means(curves)
    matched = means.pop("gnn (trained at each value)")
    assert sorted(matched) == sorted(
        [("5x10", pytest.approx(0.925)), ("10x10", pytest.approx(0.825)), ("15x15", pytest.approx(0.725))]
    )
    ((label, once),) = means.items()
    assert label.startswith("gnn") and once == [
        ("5x10", 0.9),
        ("10x10", pytest.approx(0.75)),
        ("15x15", 0.6),
    ]


def test_a_k_sweep_gives_a_cdf_panel_per_setting_each_with_its_own_solver():
    from mimo_l2o.report import cdf_panels, points_of

    rows = []
    for k in (4, 8):
        for learner, scale in (("dnn", 0.8), ("gnn", 0.9)):
            row = _row(learner, k, scale * k, float(k))
            row.per_sample = {"learner": np.full(3, scale * k), "solver": np.full(3, float(k))}
            rows.append(row)
    panels = cdf_panels(points_of(rows))
    assert sorted(panels) == ["miso_tdd K=4", "miso_tdd K=8"]
    for k in (4, 8):
        panel = panels[f"miso_tdd K={k}"]
        assert sorted(panel) == ["dnn", "gnn", "wmmse_bf (solver)"]
        np.testing.assert_array_equal(panel["wmmse_bf (solver)"], np.full(3, float(k)))  # once, its own
        np.testing.assert_array_equal(panel["gnn"], np.full(3, 0.9 * k))


def test_debug_and_full_runs_are_never_averaged_and_a_setting_matrix_is_no_cross_evaluation():
    from mimo_l2o.report import is_cross_evaluation, matrix_markdown, points_of

    rows = [
        _row("dnn", 12, 2.0, 4.0, {"data.num_train": "512", "learner.train.max_epochs": "2"}),
        _row("dnn", 12, 3.6, 4.0, {"data.num_train": "4096", "learner.train.max_epochs": "6"}),
        _row("dnn", 12, 3.8, 4.0, {"data.num_train": "4096", "learner.train.max_epochs": "6"}, seed=1),
    ]
    points = points_of(rows)
    assert [(p.setting["data.num_train"], len(p.rows)) for p in points] == [("512", 1), ("4096", 2)]
    assert not is_cross_evaluation(points)
    text = matrix_markdown(points, [])
    t_half = 12.706204736 * 0.025  # t(0.975, 1) · s / √2, s = 0.05 / √2
    header, _, *lines = text.splitlines()
    # the columns in the numbers' order (512 before 4096), not the text's
    assert header == "| learner ↓ setting → | miso_tdd data.num_train=512 | miso_tdd data.num_train=4096 |"
    # one learner row: its epochs follow the data sizes (a debug preset sets both), each a column
    assert lines == [f"| dnn | 0.500 | 0.925 ± {t_half:.3f} (2 seeds) |"]
    # a rerun of the same seeds replaces the older run; a record-only key (tracking) is no setting
    rerun = _row("dnn", 12, 3.0, 4.0, {"data.num_train": "512", "learner.train.max_epochs": "2"})
    rerun.values["start_time"], rerun.params["tracking.log_model"] = 10, "False"
    (point,) = [p for p in points_of([*rows, rerun]) if p.setting["data.num_train"] == "512"]
    assert [r["objective_ratio"] for r in point.rows] == [0.75]


def test_the_training_curves_are_the_mean_over_the_seeds_per_epoch(tmp_path, monkeypatch):
    from mimo_l2o import figures
    from mimo_l2o.report import points_of, training_figure

    rows = []
    for seed, offset in ((0, 0.0), (1, 1.0), (2, 5.0)):
        row = _row("dnn", 4, 3.0, 4.0, seed=seed)
        row.history = {
            "train/loss": {1: 3.0 + offset, 2: 2.0 + offset},
            "val/loss": {1: 3.5 + offset, 2: 2.5 + offset},
            "val/objective_ratio": {1: 0.5, 2: 0.6 + offset / 100},
        }
        rows.append(row)
    drawn = []
    monkeypatch.setattr(figures, "close", drawn.append)
    assert training_figure(points_of(rows), tmp_path / "training_curves.png")
    (fig,) = drawn
    losses, ratios = fig.axes
    lines = {line.get_label(): line for line in losses.lines}
    assert sorted(lines) == ["DNN (train)", "DNN (val)"]
    np.testing.assert_allclose(lines["DNN (train)"].get_ydata(), [3.0 + 2.0, 2.0 + 2.0])  # offsets' mean 2
    np.testing.assert_allclose(ratios.lines[0].get_ydata(), [0.5, 0.62])
    assert not training_figure(points_of([_row("dnn", 4, 3.0, 4.0)]), tmp_path / "none.png")


def test_keys_only_some_runs_have_tell_settings_apart_and_record_keys_do_not():
    """A renamed option (an older run lacks the new key) is another setting with its own label; the
    shifts a run was also tested at and the labelling chunk size are no part of a setting."""
    from mimo_l2o.report import matrix_markdown, points_of

    old = _row("dnn", 8, 2.0, 4.0, {"scenario.extra_loss_db": "30"})
    new = _row("dnn", 8, 3.0, 4.0, {"scenario.downlink_loss_db": "30", "scenario.uplink_loss_db": "0"})
    points = points_of([old, new])
    assert len(points) == 2 and len({p.label for p in points}) == 2
    assert len({(p.learner_label, p.column) for p in points}) == 2
    text = matrix_markdown(points, [])
    assert "0.500" in text and "0.750" in text
    shifted = _row(
        "dnn", 8, 3.2, 4.0, {"eval.shifts.scenario.num_users": "[4, 8]", "data.chunk_size": "7"}, seed=1
    )
    plain = _row("dnn", 8, 3.0, 4.0, {"data.chunk_size": "10000"})
    (point,) = points_of([plain, shifted])
    assert point["seeds"] == 2


def test_a_learner_key_the_problem_fixes_stays_out_of_the_curves_and_rows():
    """Fig. 5(a)'s CSI-Net width 2 N_t K follows K: a two-point K sweep is one curve and one matrix row."""
    from mimo_l2o.report import cells, points_of

    rows = [_row("model_driven", k, 0.9 * k, float(k), {"learner.csi_width": str(64 * k)}) for k in (10, 4)]
    entry = _series(rows)[("miso_tdd", "sum_rate", "K")]
    assert _means(entry["ratio"]) == {"model_driven": [(4.0, 0.9), (10.0, 0.9)]}
    learners, columns, *_ = cells(points_of(rows), [])  # the columns in K's order as numbers
    assert learners == ["model_driven"] and columns == ["miso_tdd K=4", "miso_tdd K=10"]
    # beside another network of a fixed width at K = 10 (Sec. VII-A's against VII-B's): the width still
    # goes, the keys that tell the two networks apart stay, one row each
    rows = [
        _row("model_driven", k, 0.9 * k, float(k), {"learner.csi_width": str(64 * k), **VII_B})
        for k in (4, 10)
    ]
    rows.append(_row("model_driven", 10, 8.0, 10.0, {"learner.csi_width": "0", **VII_A}))
    learners, columns, *_ = cells(points_of(rows), [])
    assert sorted(learners) == [
        "model_driven learner.csi_layers=3 learner.power_net=cnn",
        "model_driven learner.csi_layers=4 learner.power_net=fc",
    ]
    curves = _means(_series(rows)[("miso_tdd", "sum_rate", "K")]["ratio"])
    assert curves == {
        "model_driven learner.csi_layers=3 learner.power_net=cnn": [(4.0, 0.9), (10.0, 0.9)],
        "model_driven learner.csi_layers=4 learner.power_net=fc": [(10.0, 0.8)],
    }
    # two settings that only the width tells apart at one K keep the width
    rows = [_row("model_driven", 4, v, 4.0, {"learner.csi_width": w}) for v, w in ((3.0, "64"), (2.0, "0"))]
    assert sorted(cells(points_of(rows), [])[0]) == [
        "model_driven learner.csi_width=0",
        "model_driven learner.csi_width=64",
    ]


VII_A = {"learner.csi_layers": "4", "learner.power_net": "fc"}
VII_B = {"learner.csi_layers": "3", "learner.power_net": "cnn"}


def test_the_best_baseline_is_the_best_mean_over_the_seeds_and_a_missing_one_is_no_crash():
    from mimo_l2o.report import cdf_panels, points_of

    first = _row("dnn", 4, 3.4, 4.0, mrt=3.6)  # mrt 0.9, zf 0.8
    first.values["baseline_ratios"] = {"mrt_bf": 0.9, "zf_bf": 0.8}
    second = _row("dnn", 4, 3.4, 4.0, mrt=2.8, seed=1)  # mrt 0.7, zf 0.85
    second.values["baseline_ratios"] = {"mrt_bf": 0.7, "zf_bf": 0.85}
    first.per_sample = {"learner": np.ones(2), "solver": np.ones(2), "zf_bf": np.ones(2)}
    second.per_sample = {"learner": np.ones(2), "solver": np.ones(2)}  # an older run: no zf_bf
    (point,) = points_of([first, second])
    assert point["best_baseline"] == "zf_bf" and point["best_baseline_ratio"] == pytest.approx(0.825)
    (panel,) = cdf_panels([point]).values()
    assert panel["zf_bf (baseline)"].size == 2 and panel["wmmse_bf (solver)"].size == 4


def test_the_baselines_section_gives_each_problem_settings_baselines_over_its_test_sets():
    from mimo_l2o.report import baselines_markdown, points_of

    rows = []
    for seed, (zf, up) in enumerate(((0.9, 0.3), (0.8, 0.2), (0.85, 0.25))):
        for learner in ("dnn", "gnn"):  # two learners on the same test sets: each baseline counted once
            row = _row(learner, 4, 3.0, 4.0, seed=seed)
            row.values["baseline_ratios"] = {"zf_bf": zf, "zf_uplink": up}
            rows.append(row)
    text = baselines_markdown(points_of(rows))
    header, _, line = text.strip().splitlines()[-3:]
    assert header == "| setting | zf_bf | zf_uplink |"
    half = 4.302652729 * 0.05 / 3**0.5  # t(0.975, 2) · s / √3, s = 0.05
    assert line == f"| miso_tdd | 0.85 ± {half:.2g} | 0.25 ± {half:.2g} |"


def test_a_learner_option_names_its_points_instead_of_the_keys_it_fixes(tmp_path, monkeypatch):
    """``learner=position_lstm/paper`` beside ``learner=position_lstm``: the option's name labels its
    points (rows, curves, legends); only keys that vary within an option stay in the labels."""
    from mimo_l2o.report import points_of

    paper = {"learner.output": "relu", "learner.shared": "False", "learner.train_on": "labels"}
    ours = {"learner.output": "log", "learner.shared": "True", "learner.train_on": "objective"}
    rows = [
        _row("dnn", 4, 1.0, 10.0, {**paper, "learner.lr": "0.001"}),
        _row("dnn", 4, 9.0, 10.0, {**ours, "learner.lr": "0.001"}),
        _row("dnn", 4, 8.0, 10.0, {**ours, "learner.lr": "0.01"}),
    ]
    rows[0].values["learner_preset"] = "dnn/paper"  # the tag the runner sets; an older run has none
    labels = {p.learner_label: p["objective_ratio"] for p in points_of(rows)}
    assert labels == {
        "dnn/paper learner.lr=0.001": 0.1,
        "dnn learner.lr=0.001": 0.9,
        "dnn learner.lr=0.01": 0.8,
    }
    # the run's label: its name with the option (a name from before the option was in it)
    names = sorted(p.label for p in points_of(rows))
    assert names == [
        "dnn-miso_tdd-K4 learner.lr=0.001",
        "dnn-miso_tdd-K4 learner.lr=0.01",
        "dnn/paper-miso_tdd-K4 learner.lr=0.001",
    ]
    # the training curves' legend: the option after the learner's printed name
    from mimo_l2o import figures
    from mimo_l2o.report import training_figure

    for row in rows:
        row.history = {"train/loss": {1: 2.0, 2: 1.0}}
    drawn = []
    monkeypatch.setattr(figures, "close", drawn.append)
    assert training_figure(points_of(rows), tmp_path / "training_curves.png")
    assert sorted(line.get_label() for line in drawn[0].axes[0].lines) == [
        "DNN learner.lr=0.001 miso_tdd (train)",
        "DNN learner.lr=0.01 miso_tdd (train)",
        "DNN paper learner.lr=0.001 miso_tdd (train)",
    ]


def test_a_parts_name_is_shown_as_its_group_once():
    """``precoder=mr`` swept: the column reads ``precoder=mr`` as typed, and a run whose name already
    shows it does not repeat it as ``precoder.name=mr``."""
    from mimo_l2o.report import points_of

    rows = [_row("dnn", 4, 1.0, 2.0, {"precoder.name": name}) for name in ("mr", "mmmse")]
    for row in rows:
        row.values["run"] = f"dnn-miso_tdd-K4 precoder={row.params['precoder.name']}"
    points = points_of(rows)
    assert sorted(p.column for p in points) == ["miso_tdd precoder=mmmse", "miso_tdd precoder=mr"]
    labels = sorted(p.label for p in points)
    assert labels == ["dnn-miso_tdd-K4 precoder=mmmse", "dnn-miso_tdd-K4 precoder=mr"]


def test_the_papers_published_ratios_are_a_curve_of_the_ratio_panel():
    """Sun et al.'s Table I beside the DNN's ratios: a ``dnn (paper)`` curve at the points the paper
    published, read from ``Learner.published``'s words; a number that is no ratio is no point."""
    from mimo_l2o.report import published_ratio

    assert published_ratio("98.33 % of WMMSE (Table I)") == pytest.approx(0.9833)
    assert published_ratio("1.113x SCA (5.93 vs 5.33 Mbit/J, Table II)") == pytest.approx(1.113)
    assert published_ratio("MSE of SEs 0.007 (Sec. V)") is None
    assert published_ratio("") is None and published_ratio(None) is None
    rows = [_row("dnn", k, 8.0, 10.0, seed=seed) for k in (2, 4, 6) for seed in (0, 1)]
    for row in rows:
        row.values["published"] = {2: "98.33 % of WMMSE (Table I)", 4: "92.04 % of WMMSE (Table I)"}.get(
            int(row.values["K"]), ""
        )
    ratio = _series(rows)[("miso_tdd", "sum_rate", "K")]["ratio"]
    paper = ratio["dnn (paper)"]
    assert [(x, round(y, 4)) for x, y, _ in paper] == [(2.0, 0.9833), (4.0, 0.9204)]
    assert all(np.isnan(half) for _, _, half in paper)  # one published number, no interval
    assert [(x, y) for x, y, _ in ratio["dnn"]] == [(2.0, 0.8), (4.0, 0.8), (6.0, 0.8)]
