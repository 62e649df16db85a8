"""Cell-free massive MIMO through the app on tiny sizes: ``scenario=cellfree learner=gnn`` brings MRT, the
energy efficiency and SCA; the run logs the metric contract, the baselines, the GNN's support width and
κ, and the EE CDF; the logged policy loads back and reproduces the logged objective; with
``learner.refine_steps`` the refined policy reports the network's own ratio beside its own."""

from __future__ import annotations

import pytest

from tests.conftest import app_run, assert_contract_metrics, logged_test_decisions

TINY_CELLFREE = [
    "scenario=cellfree",
    "learner=gnn",
    "scenario.num_aps=3",
    "scenario.num_users=4",
    "scenario.num_antennas=2",
    "data.num_train=256",
    "data.num_val=32",
    "data.num_test=48",
    "data.chunk_size=32",
    "learner.train.max_epochs=2",
    "learner.hidden=4",
    "learner.widths=[4]",
    "eval.timing_samples=8",
    "eval.timing_repeats=2",
    "num_threads=1",
]


def _run(tmp_path, *extra: str):
    overrides = [*TINY_CELLFREE, *extra]
    env, client, run = app_run(tmp_path, overrides)
    return env, overrides, client, run


@pytest.fixture(scope="module")
def cellfree_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("cellfree"))


def _learner_objective(env, overrides, run):
    """Per-sample EE of the logged policy's decisions on the cached test set, and the cached labels'."""
    parts, data, problem, p = logged_test_decisions(env, overrides, run)
    return problem, p, parts.objective(problem, p), parts.objective(problem, data.labels("test"))


def test_companions_metrics_and_figure(cellfree_run):
    _, _, client, run = cellfree_run
    tags, metrics = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED"
    assert (tags["precoder"], tags["objective"], tags["solver"]) == ("mrt", "energy_efficiency", "ee_sca")
    assert_contract_metrics(
        client,
        run,
        (
            "train/kappa",
            "train/support_width_w",
            "train/last_val_objective_lower",
            "train/last_val_objective_midpoint",
        ),
    )
    assert "test/objective_ratio_raw" not in metrics  # the paper's method: no refinement by default
    assert metrics["test/speedup"] == pytest.approx(
        metrics["test/time_solver_ms"] / metrics["test/time_learner_ms"], rel=1e-9
    )
    # SCA from the even split only ever raises the EE (the equal baseline is its start)
    assert metrics["test/objective_solver"] > metrics["test/objective_equal"]


def test_logged_policy_reproduces_the_logged_energy_efficiency(cellfree_run):
    env, overrides, _, run = cellfree_run
    problem, p, ours, sca = _learner_objective(env, overrides, run)
    metrics = run.data.metrics
    assert float(ours.mean()) == pytest.approx(metrics["test/objective_learner"], rel=1e-5)
    assert float(sca.mean()) == pytest.approx(metrics["test/objective_solver"], rel=1e-12)
    assert float(problem.constraint_violation(p).max()) <= 1e-12


def test_refined_policy_reports_the_networks_ratio_and_is_no_worse(tmp_path):
    env, overrides, _, run = _run(tmp_path, "learner.refine_steps=30")
    metrics = run.data.metrics
    assert run.data.params["learner.refine_steps"] == "30"
    # the refinement keeps the best of its start and its iterates: never below the network alone
    assert metrics["test/objective_ratio"] >= metrics["test/objective_ratio_raw"] - 1e-6
    _, _, ours, _ = _learner_objective(env, overrides, run)  # the pickled policy, refinement included
    assert float(ours.mean()) == pytest.approx(metrics["test/objective_learner"], rel=1e-5)


def test_a_joint_shift_tests_the_gnn_at_other_numbers_of_aps_and_users_at_once(tmp_path):
    """``scenario.num_aps+scenario.num_users``: the trained size reproduces the run's own test ratio, the
    others give a ratio each against SCA on their own test sets, and the figure is logged."""
    sizes = "eval.shifts={scenario.num_aps+scenario.num_users: [[3, 4], [2, 3], [4, 5]]}"
    _, _, client, run = _run(tmp_path, sizes)
    m = run.data.metrics
    key = "test/shift/scenario.num_aps_x_num_users"
    assert m[f"{key}/3x4/objective_ratio"] == pytest.approx(m["test/objective_ratio"], rel=1e-6)
    for size in ("2x3", "4x5"):
        assert 0.0 < m[f"{key}/{size}/objective_ratio"] <= 1.0 + 1e-3
        assert m[f"{key}/{size}/objective_solver"] != pytest.approx(m["test/objective_solver"])
    assert "test/shift/failed" not in m and "test/shift/not_applicable" not in m
    figures = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "shift_scenario.num_aps_x_num_users.png" in figures
