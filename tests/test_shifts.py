"""Generalization shifts (``eval.shifts``, issue 15): the trained policy on shifted test sets without
retraining. The value it was trained at reproduces the run's own test metrics exactly (one family
each); a learner whose input size the trained setting fixes is *not applicable* there, with the reason,
not failed; the neural calibration's ZF is told the shifted power; bad keys and values stop before any
work with one line."""

from __future__ import annotations

import json

import pytest
import torch

from mimo_l2o.errors import ConfigError
from mimo_l2o.parts import build_parts
from mimo_l2o.shifts import metric_prefix, plan
from tests.conftest import TINY, app_run, run_app


def _shifts(client, run, tmp_path):
    path = client.download_artifacts(run.info.run_id, "shifts.json", str(tmp_path))
    with open(path) as f:
        return json.load(f)["shifts"]


def test_power_control_trained_value_reproduces_and_a_fixed_size_learner_is_not_applicable(tmp_path):
    _, client, run = app_run(
        tmp_path,
        [
            "scenario=gaussian_ic",
            "scenario.num_users=5",
            "learner=dnn",
            "eval.shifts={scenario.num_users: [5, 3], scenario.p_max: [1.0, 10.0]}",
            *TINY,
        ],
    )
    m = run.data.metrics
    # the trained setting (K = 5 at p_max = 1, the default) is the run's own test set: the same numbers
    for key, value in (("scenario.num_users", 5), ("scenario.p_max", 1.0)):
        assert m[f"{metric_prefix(key, value)}/objective_ratio"] == pytest.approx(
            m["test/objective_ratio"], rel=1e-6
        )
        assert m[f"{metric_prefix(key, value)}/objective_solver"] == pytest.approx(
            m["test/objective_solver"], rel=1e-6
        )
    # another power changes the problem, not the input's size: evaluated, a different ratio
    other = m["test/shift/scenario.p_max/10/objective_ratio"]
    assert 0 < other <= 1.0 + 1e-6 and abs(other - m["test/objective_ratio"]) > 1e-4
    # another K changes the DNN's input size: not applicable, with the reason, and no metric
    assert "test/shift/scenario.num_users/3/objective_ratio" not in m
    assert m["test/shift/not_applicable"] == 1
    (skipped,) = [r for r in _shifts(client, run, tmp_path) if r["status"] != "ok"]
    assert skipped["key"] == "scenario.num_users" and skipped["value"] == 3
    assert "input size is fixed by the trained setting" in skipped["reason"]
    figures = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"shift_scenario.num_users.png", "shift_scenario.p_max.png"} <= figures


def test_beamforming_trained_value_reproduces_and_a_size_free_learner_reads_other_k(tmp_path):
    env, client, run = app_run(
        tmp_path,
        [
            "scenario=massive_fdd",
            "scenario.num_antennas=16",
            "scenario.num_users=4",
            "learner=neural_calibration",
            "eval.shifts={scenario.num_users: [2, 4, 6], scenario.p_max_dbm: [0, 5]}",
            "eval.baselines=[zf_bf]",
            *TINY,
        ],
    )
    m = run.data.metrics
    for key, value in (("scenario.num_users", 4), ("scenario.p_max_dbm", 5)):
        assert m[f"{metric_prefix(key, value)}/objective_ratio"] == pytest.approx(
            m["test/objective_ratio"], rel=1e-6
        )
    for k in (2, 6):  # one φ for every user: other numbers of users are evaluated
        ratio = m[f"test/shift/scenario.num_users/{k}/objective_ratio"]
        assert 0.5 < ratio <= 1.0 + 1e-6
    assert "test/shift/not_applicable" not in m
    records = _shifts(client, run, tmp_path)
    assert [r["status"] for r in records] == ["ok"] * 5
    # the report draws the shift curves and tabulates them
    proc = run_app("report", "--run", run.info.run_id, "--out", "rep", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "rep"
    assert {"shift_scenario.num_users.png", "shift_scenario.p_max_dbm.png"} <= {p.name for p in out.iterdir()}
    text = (out / "report.md").read_text()
    section = text.split("## Generalization shifts", 1)[1]
    table = section.split("`scenario.num_users`:", 1)[1].split("`scenario.p_max_dbm`:")[0]
    header, _, row = [line for line in table.splitlines() if line.startswith("|")]
    assert header.split("|")[2:5] == [" 2 ", " 4 ", " 6 "]
    assert float(row.split("|")[3]) == pytest.approx(m["test/objective_ratio"], abs=1e-4)


def test_neural_calibration_is_told_the_shifted_power():
    from mimo_l2o_plugins.ma2022.neural_calibration import NeuralCalibrationConfig, NeuralCalibrationLearner

    from mimo_l2o.learner import LearnerSpec, Policy
    from mimo_l2o.objectives.sum_rate import SumRate
    from mimo_l2o.precoders.downlink import Downlink
    from mimo_l2o.scenarios.massive_fdd import MassiveFDD

    def problem(dbm):
        s = MassiveFDD(MassiveFDD.Config(num_antennas=8, num_users=3, p_max_dbm=dbm))
        return Downlink(None)(s.sample(32, torch.Generator().manual_seed(0)))

    trained, shifted = problem(5.0), problem(15.0)
    spec = LearnerSpec({"downlink_channel": (1, 3, 8)}, trained.to(dtype=torch.float32), SumRate(None))
    learner = NeuralCalibrationLearner(NeuralCalibrationConfig(hidden=[8]), spec)
    x = torch.view_as_real(trained.channel).float()
    model = learner.build_model(x, torch.Generator().manual_seed(0)).eval()
    model_s, final_s = learner.adapt(model, learner.finalize(), shifted)
    W = Policy(model_s, final_s)(x)
    assert torch.allclose(W.abs().square().sum((-2, -1)), shifted.budget.float(), rtol=1e-4)
    assert float(model.budget[0]) == pytest.approx(float(trained.budget[0, 0]))  # the trained model as it was


@pytest.mark.parametrize(
    "shifts, needles",
    [
        (
            {"num_users": [2]},
            ["eval.shifts.num_users", "not a key of scenario=gaussian_ic", "scenario.num_users"],
        ),
        ({"scenario.nosuch": [2]}, ["eval.shifts.scenario.nosuch", "not a key"]),
        ({"scenario.seed": [1]}, ["eval.shifts.scenario.seed", "cannot shift"]),
        ({"scenario.num_users": []}, ["eval.shifts.scenario.num_users", "non-empty list"]),
        ({"scenario.num_users": [0]}, ["eval.shifts.scenario.num_users", "0:", ">= 1"]),
        ({"scenario.snr_db": [float("nan")]}, ["eval.shifts.scenario.snr_db", "finite"]),
        (
            {"scenario.num_users+scenario.p_max": [[3, 1.0], [4]]},
            ["eval.shifts.scenario.num_users+scenario.p_max", "[4]", "list of 2 values"],
        ),
        (
            {"scenario.num_users+scenario.p_max": [[0, 1.0]]},
            ["eval.shifts.scenario.num_users+scenario.p_max", "[0, 1.0]", ">= 1"],
        ),
        ({"scenario.num_users+scenario.num_users": [[3, 3]]}, ["names a key twice"]),
        ({"scenario.num_users+scenario.nosuch": [[3, 3]]}, ["scenario.nosuch is not a key", "joined by +"]),
    ],
)
def test_bad_shifts_name_the_key_before_any_work(shifts, needles, run_config):
    run_config.eval.shifts = shifts
    with pytest.raises(ConfigError) as err:
        plan(run_config, build_parts)
    for needle in needles:
        assert needle in str(err.value), str(err.value)


@pytest.fixture
def run_config():
    from mimo_l2o.__main__ import composed

    return composed("scenario=gaussian_ic", "learner=dnn")


def test_an_error_in_one_shifted_point_is_recorded_in_one_line_and_the_others_stand(caplog):
    """A defect inside one point (here the shifted data) is that point's ``failed`` record, one line;
    a learner that cannot read the shifted problem (a ConfigError) is not applicable; the loop goes on."""
    from mimo_l2o.shifts import Shift, evaluate_shifts

    def make_data(run, parts):
        if run == "broken":
            raise RuntimeError("index 7 is out of bounds\nsecond line")
        raise ConfigError("learner", "the GNN needs budget groups of equal size, got [2, 3]")

    shifts = [
        Shift("scenario.num_users", 3, "broken"),
        Shift("scenario.num_aps", 4, "uneven"),
        Shift("scenario.num_aps", 6, "known", reason="refused before any work"),
    ]
    metrics, records = evaluate_shifts(shifts, None, None, None, (3,), make_data, torch.device("cpu"))
    assert [(r["status"], r["reason"]) for r in records] == [
        ("failed", "RuntimeError: index 7 is out of bounds"),
        ("not applicable", "learner: the GNN needs budget groups of equal size, got [2, 3]"),
        ("not applicable", "refused before any work"),
    ]
    assert metrics == {"test/shift/failed": 1.0, "test/shift/not_applicable": 2.0}
    assert "Traceback" not in "".join(r.getMessage() for r in caplog.records if r.levelname != "DEBUG")


def test_keys_shifted_together_change_both_and_name_their_metrics_without_a_plus(run_config):
    from mimo_l2o.shifts import joint_keys, key_text, value_text

    run_config.eval.shifts = {"scenario.num_users+scenario.p_max": [[3, 2.0], [6, 10.0]]}
    shifts = plan(run_config, build_parts)
    assert [(s.run.scenario.num_users, s.run.scenario.p_max) for s in shifts] == [(3, 2.0), (6, 10.0)]
    assert [s.prefix for s in shifts] == [
        "test/shift/scenario.num_users_x_p_max/3x2",
        "test/shift/scenario.num_users_x_p_max/6x10",
    ]
    joint = "scenario.num_users+scenario.p_max"
    assert joint_keys(key_text(joint)) == ["scenario.num_users", "scenario.p_max"]
    assert key_text("scenario.p_max") == "scenario.p_max" and value_text([15, 15.0]) == "15x15"


def test_a_shift_over_named_values_draws_one_tick_per_name():
    """``scenario.correlation: [integral]``: a key whose values are names, drawn at one tick each, the
    trained value marked on its tick."""
    from mimo_l2o.figures import close, shift_figure

    fig = shift_figure(
        {"gnn": [("integral", 0.8), ("closed_form", 0.9)]}, "scenario.correlation", "t", trained="closed_form"
    )
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["closed_form", "integral"]
    (curve,) = ax.containers
    assert list(curve.lines[0].get_xdata()) == [0.0, 1.0] and list(curve.lines[0].get_ydata()) == [0.9, 0.8]
    (marker,) = [line for line in ax.lines if line.get_label() == "trained at"]
    assert list(marker.get_xdata()) == [0.0, 0.0]
    close(fig)
    # a joint shift's sizes in the order of their numbers, not of their text
    fig = shift_figure({"gnn": [("15x15", 0.7), ("10x5", 0.8), ("5x10", 0.9)]}, "k", "t", trained="5x10")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["5x10", "10x5", "15x15"]
    close(fig)
