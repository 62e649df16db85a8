"""Cellular massive MIMO through the app on tiny sizes: ``scenario=cellular`` brings its companions,
the run logs the metric contract plus the per-user SE metrics and figure, and the logged
``test/mse_se`` equals a recomputation from the logged model and the cached test set."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import app_run, assert_contract_metrics, logged_test_decisions, rebuild_data

TINY_CELLULAR = [
    "scenario=cellular",
    "scenario.num_antennas=4",
    "precoder.num_realizations=5",
    "data.num_train=300",
    "data.num_val=100",
    "data.num_test=100",
    "data.chunk_size=100",
    "learner.train.max_epochs=2",
    "learner.train.batch_size=50",
    "eval.timing_samples=50",
    "eval.timing_repeats=2",
    "num_threads=1",
]


@pytest.fixture(scope="module")
def cellular_run(tmp_path_factory):
    overrides = [*TINY_CELLULAR, "precoder=mmmse", "objective=max_min", "learner=position_mlp"]
    env, client, run = app_run(tmp_path_factory.mktemp("cellular"), overrides)
    return env, overrides, client, run


def test_companions_and_metrics(cellular_run):
    _, _, client, run = cellular_run
    tags, metrics = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED"
    # scenario=cellular chose the baselines; objective=max_min chose its solver
    assert (tags["scenario"], tags["precoder"], tags["objective"]) == ("cellular", "mmmse", "max_min")
    assert (tags["solver"], tags["learner"]) == ("max_min_pf", "position_mlp")
    assert_contract_metrics(
        client,
        run,
        (
            "test/mse_se",
            "test/se_mean_learner",
            "test/se_p5_learner",
            "test/se_mean_solver",
            "test/se_p5_solver",
            "test/se_mean_equal",
            "test/se_p5_equal",
        ),
    )
    # the exact max-min optimum beats equal power in the minimum SE of every sample, so on average
    assert metrics["test/objective_solver"] > metrics["test/objective_equal"]


def test_logged_mse_se_equals_a_recomputation(cellular_run):
    env, overrides, _, run = cellular_run
    _, data, problem, p = logged_test_decisions(env, overrides, run)

    # the per-user SE by hand: prelog · log2(1 + SINR), SINR = a_k p_k / (Σ_j B_kj p_j + σ²)
    def se(power):
        a = problem.signal_gain.diagonal(dim1=1, dim2=2)
        sinr = a * power / ((problem.interference_gain * power[:, None, :]).sum(-1) + problem.noise)
        return problem.prelog * torch.log2(1 + sinr)

    mse = float((se(p) - se(data.labels("test"))).square().mean())
    assert mse == pytest.approx(run.data.metrics["test/mse_se"], rel=1e-6)
    # every cell within its budget
    spent = torch.zeros(len(p), 4, dtype=p.dtype).index_add_(1, problem.group, p)
    assert bool((spent <= problem.budget * (1 + 1e-9)).all()) and bool((p >= 0).all())


def test_lstm_trained_on_the_objective_logs_the_validation_loss_of_its_model(tmp_path):
    """``position_lstm`` (``train_on: objective`` in its YAML) gets the training problems from the
    runner; the best validation loss it logs is ``−mean log`` of the smooth max-min SE of the logged
    model's feasible decisions on the cached validation problems (the logged policy's decisions sit
    within ``1e-5`` relative below budgets that the loss's projection fills exactly). With
    ``pilot_shifts: 1``: the loss scores the network alone, the policy averages over pilot renamings."""
    import mlflow.pytorch

    overrides = [
        *TINY_CELLULAR,
        "precoder=mr",
        "objective=max_min",
        "learner=position_lstm",
        "learner.lstm=[8]",
        "learner.dense=[8]",
        "learner.pretrain_epochs=1",
        "learner.pilot_shifts=1",
    ]
    env, _, run = app_run(tmp_path, overrides)
    assert run.data.tags["learner"] == "position_lstm"
    assert run.data.metrics["test/constraint_violation"] == 0.0
    policy = mlflow.pytorch.load_model(run.data.tags["mimo_l2o.model_uri"])
    cfg, parts, data = rebuild_data(env, overrides)
    learner = parts.learner_cls(cfg.learner, data.spec())
    assert learner.uses_problems and cfg.learner.train_on == "objective"
    problem = data.problem("val").to(dtype=torch.float32)
    with torch.no_grad():
        value = parts.objective.smooth(problem, policy(data.inputs("val", learner)), cfg.learner.temperature)
    assert float(-value.log().mean()) == pytest.approx(run.data.metrics["train/best_val_loss"], rel=1e-4)
