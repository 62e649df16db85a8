"""Bad input: one short line naming the key and what is allowed, exit code 2, before any
sampling (no cache written), and no MLflow run left RUNNING."""

from __future__ import annotations

import sqlite3
import textwrap

import pytest

from tests.conftest import TINY, run_app

CASES = {
    "unknown scenario": (["scenario=nosuch"], ["scenario=nosuch", "gaussian_ic", "imac"]),
    "unknown learner": (["learner=nosuch"], ["learner=nosuch", "dnn"]),
    "unknown solver": (["solver=nosuch"], ["solver=nosuch", "wmmse"]),
    "misspelled key": (["scenario.num_userz=4"], ["scenario.num_userz", "unknown key", "num_users"]),
    "misspelled learner key": (["learner.train.lrr=0.1"], ["learner.train.lrr", "unknown key", "lr"]),
    "wrong type": (["scenario.num_users=abc"], ["scenario.num_users", "abc", "Integer"]),
    "wrong type float": (["learner.train.lr=fast"], ["learner.train.lr", "fast", "Float"]),
    "zero users": (["scenario.num_users=0"], ["scenario.num_users", ">= 1", "0"]),
    "negative users": (["scenario.num_users=-3"], ["scenario.num_users", ">= 1", "-3"]),
    "zero power": (["scenario.p_max=0"], ["scenario.p_max", "> 0"]),
    "negative noise": (["scenario.noise_power=-1"], ["scenario.noise_power", "> 0"]),
    "imac cells do not divide users": (
        ["scenario=imac", "scenario.num_cells=3", "scenario.num_users=10"],
        ["scenario.num_users", "multiple", "3"],
    ),
    "batch larger than training set": (
        ["data.num_train=1000", "learner.train.batch_size=5000"],
        ["learner.train.batch_size", "5000", "data.num_train=1000"],
    ),
    "supervised learner, solver without labels": (["solver=random"], ["solver", "labels", "wmmse"]),
    "bad optimizer choice": (["learner.train.optimizer=adamw"], ["learner.train.optimizer", "adamw"]),
    "bad device": (["device=tpu"], ["device", "tpu"]),
    "unsupported device": (["device=meta"], ["device", "meta", "allowed"]),
    # cell-free massive MIMO (issue 4)
    "no APs": (["scenario=cellfree", "scenario.num_aps=0"], ["scenario.num_aps", ">= 1", "0"]),
    "no AP antennas": (["scenario=cellfree", "scenario.num_antennas=0"], ["scenario.num_antennas", ">= 1"]),
    "no cell-free users": (["scenario=cellfree", "scenario.num_users=0"], ["scenario.num_users", ">= 1"]),
    "AP budget zero": (["scenario=cellfree", "scenario.p_max=0"], ["scenario.p_max", "> 0"]),
    "area zero": (["scenario=cellfree", "scenario.side=0"], ["scenario.side", "> 0"]),
    "circuit power zero": (
        ["scenario=cellfree", "objective.circuit_power=0"],
        ["objective.circuit_power", "> 0"],
    ),
    "amplifier inefficiency negative": (
        ["scenario=cellfree", "objective.pa_inefficiency=-1"],
        ["objective.pa_inefficiency", "> 0"],
    ),
    "SCA for another objective": (
        ["scenario=cellfree", "objective=sum_rate", "solver=ee_sca"],
        ["solver", "solver=ee_sca", "objective=sum_rate", "energy_efficiency"],
    ),
    "position learner on a scenario without positions": (
        ["learner=position_mlp"],
        ["learner", "learner=position_mlp", "user_positions", "scenario=gaussian_ic", "no positions"],
    ),
    "position learner on a scenario without cells": (
        ["scenario=cellfree", "learner=position_lstm"],
        ["learner", "learner=position_lstm", "scenario=cellfree", "no cell"],
    ),
    "unknown GNN input features": (
        ["scenario=cellfree", "learner=gnn", "learner.features=matrix"],
        ["learner.features", "matrix", "gains", "structured"],
    ),
    "MRT without AP channels": (["precoder=mrt"], ["precoder", "precoder=mrt", "scenario=gaussian_ic"]),
    # cellular massive MIMO (issue 3)
    "no antennas": (["scenario=cellular", "scenario.num_antennas=0"], ["scenario.num_antennas", ">= 1"]),
    "more users than pilots fit": (
        ["scenario=cellular", "scenario.num_users=201"],
        ["scenario.num_users", "coherence=200", "201"],
    ),
    "cells not a perfect square": (
        ["scenario=cellular", "scenario.num_cells=3"],
        ["scenario.num_cells", "perfect square", "3"],
    ),
    "angular spread zero": (["scenario=cellular", "scenario.asd_deg=0"], ["scenario.asd_deg", "> 0"]),
    "minimum distance outside the cell": (
        ["scenario=cellular", "scenario.min_distance=250"],
        ["scenario.min_distance", "cell_side/2 = 250", "250"],
    ),
    "no realizations": (
        ["scenario=cellular", "precoder.num_realizations=0"],
        ["precoder.num_realizations", ">= 1", "0"],
    ),
    "unknown correlation model": (
        ["scenario=cellular", "scenario.correlation=exact"],
        ["scenario.correlation", "exact", "closed_form", "integral"],
    ),
    "objective the solver cannot solve": (
        ["scenario=cellular", "objective=max_min", "solver=max_prod_newton"],
        ["solver", "solver=max_prod_newton", "objective=max_min", "max_prod"],
    ),
    "massive MIMO precoder without correlation": (
        ["precoder=mr"],
        ["precoder", "precoder=mr", "scenario=gaussian_ic"],
    ),
}


def _runs(db):
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        try:
            return con.execute("select run_uuid, status from runs").fetchall()
        except sqlite3.OperationalError:
            return []


def _check(proc, needles, workdir):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert len(lines[0]) < 300
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not (workdir / "cache").exists(), "sampling started before the error"
    assert all(status != "RUNNING" for _, status in _runs(workdir / "mlflow.db"))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_one_line_exit_2(name, workdir):
    overrides, needles = CASES[name]
    keys = {o.split("=")[0] for o in overrides}
    proc = run_app(*[o for o in TINY if o.split("=")[0] not in keys], *overrides, cwd=workdir)
    _check(proc, needles, workdir)


def test_bad_value_anywhere_in_a_sweep_fails_before_any_job(workdir):
    proc = run_app("-m", "scenario.num_users=4,0", *TINY, cwd=workdir)
    _check(proc, ["scenario.num_users", ">= 1"], workdir)
    assert _runs(workdir / "mlflow.db") == []


def test_impossible_combination_anywhere_in_a_sweep_fails_before_any_job(workdir):
    tiny = [o for o in TINY if not o.startswith(("data.num_train", "learner.train.batch_size"))]
    proc = run_app("-m", "data.num_train=1000", "learner.train.batch_size=200,2000", *tiny, cwd=workdir)
    _check(proc, ["learner.train.batch_size", "2000"], workdir)
    assert _runs(workdir / "mlflow.db") == []


def test_unknown_top_level_key_is_refused(workdir):
    proc = run_app("+seeed=3", *TINY, cwd=workdir)
    _check(proc, ["seeed", "unknown key", "seed"], workdir)


def test_the_reference_solver_as_a_baseline_is_refused(workdir):
    proc = run_app("eval.baselines=[max_power,wmmse]", *TINY, cwd=workdir)
    _check(proc, ["eval.baselines", "wmmse"], workdir)


def _fake_plugin(root):
    """A third-party learner package, discovered through its entry point like any plugin."""
    pkg = root / "fake_l2o_plugin"
    (pkg / "conf" / "learner").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            from mimo_l2o.learner import Learner

            class PositionLearner(Learner):
                requires_labels = True
                inputs = ("user_positions_nowhere",)
            """
        )
    )
    (pkg / "conf" / "learner" / "needs_positions.yaml").write_text(
        "defaults:\n  - /schema/learner/needs_positions@_here_\n  - _self_\n\nname: needs_positions\n"
    )
    dist = root / "fake_l2o_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-l2o-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[mimo_l2o.learners]\nneeds_positions = fake_l2o_plugin:PositionLearner\n"
    )


def test_learner_input_the_scenario_cannot_provide(workdir):
    _fake_plugin(workdir / "site")
    proc = run_app("learner=needs_positions", *TINY, cwd=workdir, env={"PYTHONPATH": str(workdir / "site")})
    _check(proc, ["learner=needs_positions", "user_positions_nowhere", "scenario=gaussian_ic"], workdir)
