"""Runner stages in-process: sampling is independent of the chunk size, labels match the
solver, and the compatibility checks name the key."""

from __future__ import annotations

import pytest
import torch

from mimo_l2o import features
from mimo_l2o.__main__ import composed
from mimo_l2o.cache import Cache
from mimo_l2o.data import Data, generator
from mimo_l2o.errors import ConfigError
from mimo_l2o.learner import Learner, LearnerConfig
from mimo_l2o.parts import build_parts
from mimo_l2o.problems.power_control import GAIN_FLOOR_DB
from mimo_l2o.registry import LEARNERS
from mimo_l2o.solvers.wmmse import wmmse


@pytest.mark.parametrize("scenario", ["gaussian_ic", "imac"])
def test_sampling_does_not_depend_on_the_chunk_size(tmp_path, scenario):
    nets = []
    for chunk in (7, 1000):
        run = composed(
            f"scenario={scenario}",
            "data.num_train=50",
            f"data.chunk_size={chunk}",
            "learner.train.batch_size=10",
        )
        data = Data(run, build_parts(run), Cache(tmp_path / str(chunk)), torch.device("cpu"), progress=False)
        nets.append(data.network("train"))
    assert nets[0].tensors.keys() == nets[1].tensors.keys()
    for name in nets[0].tensors:
        assert torch.equal(nets[0][name], nets[1][name]), name
        assert nets[0][name].dtype == torch.float32


def test_splits_are_distinct_and_labels_are_the_solvers(tmp_path):
    run = composed(
        "data.num_train=64",
        "data.num_val=64",
        "data.num_test=64",
        "data.chunk_size=20",
        "learner.train.batch_size=8",
    )
    data = Data(run, build_parts(run), Cache(tmp_path), torch.device("cpu"), progress=False)
    train, val = data.network("train")["gains"], data.network("val")["gains"]
    assert not torch.equal(train, val)
    labels = data.labels("val")
    expected = wmmse(data.problem("val"), tol=run.solver.tol, max_iter=run.solver.max_iter)
    torch.testing.assert_close(labels, expected, rtol=1e-12, atol=1e-12)
    assert labels.dtype == torch.float64 and labels.shape == (64, 10)


def test_learner_input_the_scenario_lacks_is_refused():
    class PositionLearner(Learner):
        inputs = ("user_positions",)

    LEARNERS._classes["position_test"] = PositionLearner
    PositionLearner.name = "position_test"
    try:
        run = composed()
        run.learner.name = "position_test"
        with pytest.raises(ConfigError) as err:
            build_parts(run)
        assert str(err.value) == (
            "learner: learner=position_test needs input user_positions, which scenario=gaussian_ic "
            "cannot provide (it has no positions)"
        )
        PositionLearner.inputs = ("no_such_feature",)
        with pytest.raises(ConfigError, match=r"no_such_feature, which .* \(no module registers a feature"):
            build_parts(run)
    finally:
        del LEARNERS._classes["position_test"]


def test_problems_of_an_expensive_precoder_are_cached(tmp_path):
    """An ``expensive`` precoder runs once per sample; its cached problems equal direct ones."""
    from mimo_l2o.precoders.none import NoPrecoder

    calls = []

    class CountingPrecoder(NoPrecoder):
        expensive = True

        def __call__(self, network):
            calls.append(len(network))
            return super().__call__(network)

    run = composed("data.num_train=40", "data.num_val=30", "data.chunk_size=16", "learner.train.batch_size=8")
    parts = build_parts(run)
    parts.precoder = CountingPrecoder(run.precoder)
    data = Data(run, parts, Cache(tmp_path), torch.device("cpu"), progress=False)
    whole = data.problem("val")
    part = data.problem("val", slice(5, 12))
    direct = NoPrecoder(run.precoder)(data.network("val").to(dtype=torch.float64))
    for name, tensor in direct.batched_tensors().items():
        torch.testing.assert_close(getattr(whole, name), tensor, rtol=0, atol=0)
        torch.testing.assert_close(getattr(part, name), tensor[5:12], rtol=0, atol=0)
    assert torch.equal(whole.group, direct.group)
    assert sum(c for c in calls if c > 1) == 30  # chunks 16 + 14, then only 1-sample templates
    assert "problem.val" in data.keys
    again = Data(run, parts, Cache(tmp_path), torch.device("cpu"), progress=False)
    calls.clear()
    again.problem("val")
    assert all(c == 1 for c in calls)  # reused from the cache


def test_per_user_metrics_against_a_hand_computation():
    """``test/mse_se`` is the mean over samples and users of the squared SE difference (the paper's
    "MSE of SEs"); mean and 5th percentile per scheme, with the learner and solver tagged as such."""
    import numpy as np

    from mimo_l2o.evaluation import per_user_metrics

    g = torch.Generator().manual_seed(0)
    se = {name: 3 * torch.rand(50, 20, generator=g, dtype=torch.float64) for name in ("pos", "opt", "equal")}
    out = per_user_metrics(se, learner="pos", solver="opt")
    a, b = se["pos"].numpy(), se["opt"].numpy()
    assert out["test/mse_se"] == pytest.approx(
        float(np.mean([(x - y) ** 2 for x, y in zip(a.ravel(), b.ravel(), strict=True)]))
    )
    for tag, name in (("learner", "pos"), ("solver", "opt"), ("equal", "equal")):
        values = se[name].numpy().ravel()
        assert out[f"test/se_mean_{tag}"] == pytest.approx(values.mean())
        assert out[f"test/se_p5_{tag}"] == pytest.approx(np.percentile(values, 5))
    assert len(out) == 7


def test_cellular_problems_are_cached_and_features_are_positions(tmp_path):
    """The cellular scenario stores positions, gains and angles (no correlation matrices); the
    Monte-Carlo problems are built once per chunk and cached; the learner input is the positions."""
    run = composed(
        "scenario=cellular",
        "scenario.num_antennas=4",
        "precoder.num_realizations=5",
        "data.num_train=12",
        "data.num_val=6",
        "data.num_test=6",
        "data.chunk_size=5",
        "learner.train.batch_size=4",
    )
    parts = build_parts(run)
    data = Data(run, parts, Cache(tmp_path), torch.device("cpu"), progress=False)
    net = data.network("val")
    assert sorted(net.tensors) == ["beta", "theta", "user_positions"]
    problem = data.problem("val")
    direct = parts.precoder(net.to(dtype=torch.float64))
    torch.testing.assert_close(problem.signal_gain, direct.signal_gain, rtol=1e-12, atol=0)
    assert problem.num_vars == 20 and problem.budget.shape == (6, 4)
    labels = data.labels("val")
    assert labels.dtype == torch.float64 and labels.shape == (6, 20)
    made = features.compute(("user_positions", "problem_gains"), parts.scenario, net, lambda: problem)
    positions, gains = made["user_positions"], made["problem_gains"]
    side = parts.scenario.config.area_side
    assert positions.shape == (6, 20, 2) and bool((positions >= 0).all() and (positions < side).all())
    assert torch.equal(positions.view(6, 4, 5, 2), net["user_positions"])  # UE k of cell l in row l·K + k
    # the problem's gains times each UE's even share of its BS's budget over the noise, in dB
    share, noise = run.scenario.p_max / 5, run.scenario.noise_power
    expected = 10 * torch.log10(
        torch.stack([problem.signal_gain, problem.interference_gain], -1) * share / noise
    )
    floor = expected.isinf()  # zero gains: every signal gain off the diagonal (and any clipped to 0)
    torch.testing.assert_close(gains[~floor], expected[~floor])
    assert bool((gains[floor] == GAIN_FLOOR_DB).all())
    assert bool(floor[..., 0][:, ~torch.eye(20, dtype=torch.bool)].all())


@pytest.mark.parametrize(
    "repeats,budget,durations,runs,expected_ms",
    [
        (5, float("inf"), [9, 1, 2, 3, 4, 5], 6, 3e3 / 10),  # warm-up, then 5 runs: median of 1..5 s
        (5, 2.5, [9, 1, 2, 3, 4, 5], 3, 1.5e3 / 10),  # 1 + 2 s reach the budget: median of 1, 2
        (5, 0.5, [9, 4, 1], 2, 4e3 / 10),  # one run already exceeds it: that one
    ],
)
def test_timing_median_after_a_warm_up_within_the_budget(
    monkeypatch, repeats, budget, durations, runs, expected_ms
):
    """A clock that advances by the given durations per call: the warm-up is not counted, the runs stop
    at ``repeats`` or once their sum reaches the budget, and the median is per sample (10 here)."""
    from mimo_l2o import evaluation

    clock = {"now": 0.0, "calls": 0}

    def fn():
        clock["now"] += durations[clock["calls"]]
        clock["calls"] += 1

    monkeypatch.setattr(evaluation.time, "perf_counter", lambda: clock["now"])
    ms = evaluation.time_per_sample_ms(fn, 10, torch.device("cpu"), repeats, budget)
    assert clock["calls"] == runs
    assert ms == pytest.approx(expected_ms)


def test_parts_of_another_family_are_refused_and_baselines_come_from_the_family():
    """With a beamforming precoder, every power-control part (objective, solver, learner, baseline) is
    refused naming its key; the family's default baselines (the closed-form beamformers) are used when
    none are named."""
    from mimo_l2o.components import Precoder, Scenario, Solver, SolverConfig
    from mimo_l2o.errors import Incompatible
    from mimo_l2o.registry import PRECODERS, SCENARIOS, SOLVERS

    class BeamScenario(Scenario):
        family = "beamforming"
        tensors = ("channels",)

    class BeamPrecoder(Precoder):
        family = "beamforming"
        requires = ("channels",)

    class BeamSolver(Solver):
        families = ("beamforming",)
        objectives = ("sum_rate",)

    class BeamLearner(Learner):
        families = ("beamforming",)

    made = {SCENARIOS: BeamScenario, PRECODERS: BeamPrecoder, SOLVERS: BeamSolver, LEARNERS: BeamLearner}
    for reg, cls in made.items():
        reg._classes["beam_test"] = cls
        cls.name = "beam_test"

    def config(*overrides):
        run = composed(*overrides)
        run.scenario.name = run.precoder.name = "beam_test"
        return run

    def refused(run, key, part):
        with pytest.raises(Incompatible) as err:
            build_parts(run)
        assert err.value.key == key
        assert str(err.value) == (
            f"{key}: {part} works on power_control problems but precoder=beam_test makes beamforming"
        )

    try:
        refused(config("objective=max_min"), "objective", "objective=max_min")
        run = config()  # sum_rate is written for both families; wmmse is not
        refused(run, "solver", "solver=wmmse")
        run.solver = SolverConfig(name="beam_test")
        run.learner.name = "gnn"
        refused(run, "learner", "learner=gnn")
        run.learner = LearnerConfig(name="beam_test")
        parts = build_parts(run)
        assert parts.family == "beamforming" and sorted(parts.baselines) == ["mrt_bf", "rzf_bf", "zf_bf"]
        run.eval.baselines = ["max_power"]
        refused(run, "eval.baselines", "eval.baselines=max_power")
    finally:
        for reg in made:
            del reg._classes["beam_test"]


def test_a_labeller_other_than_the_reference_labels_the_training_set(tmp_path):
    """``data.label_solver``: supervised learners train on its decisions, the metrics' reference stays
    the solver's; both are cached under their own keys."""
    run = composed(
        "data.num_train=16", "data.num_val=8", "data.label_solver=ee_pga", "learner.train.batch_size=8"
    )
    parts = build_parts(run)
    assert parts.labeller.name == "ee_pga" and parts.solver.name == "wmmse"
    data = Data(run, parts, Cache(tmp_path), torch.device("cpu"), progress=False)
    train = data.training_labels("train")
    gen = generator(run.scenario.seed, "labels", "train", 0)  # the one chunk's labelling seed
    expected = parts.labeller.solve(data.problem("train"), parts.objective, gen)
    torch.testing.assert_close(train, expected, rtol=0, atol=0)
    assert not torch.equal(data.training_labels("val"), data.labels("val"))
    assert {"labels.ee_pga.train", "labels.ee_pga.val", "labels.val"} <= set(data.keys)


def test_run_name_adds_the_swept_values_and_stays_within_mlflow_limits(monkeypatch):
    from mimo_l2o import runner

    run = composed("scenario.num_users=4")
    monkeypatch.setattr(runner, "swept_overrides", lambda: [])
    assert runner.run_name(run) == "dnn-gaussian_ic-K4"
    # keys already in the base name are not repeated
    monkeypatch.setattr(runner, "swept_overrides", lambda: ["scenario.num_users=4", "scenario.p_max=2.0"])
    assert runner.run_name(run) == "dnn-gaussian_ic-K4 scenario.p_max=2.0"
    long = [f"learner.hidden=[{','.join(['200'] * 60)}]"]
    monkeypatch.setattr(runner, "swept_overrides", lambda: long)
    name = runner.run_name(run)
    assert len(name) == runner.MAX_RUN_NAME and name.endswith("…")
    assert name.startswith("dnn-gaussian_ic-K4 learner.hidden=[200,200")
    # a learner's variant in its config group (learner=dnn/paper) names the run; another group's
    # option of another learner (none of this one's variants) does not
    monkeypatch.setattr(runner, "swept_overrides", lambda: [])
    monkeypatch.setattr(runner.jobs, "group_choice", lambda group: {"learner": "dnn/paper"}[group])
    assert (runner.learner_preset(run), runner.run_name(run)) == ("dnn/paper", "dnn/paper-gaussian_ic-K4")
    monkeypatch.setattr(runner.jobs, "group_choice", lambda group: "gnn")
    assert (runner.learner_preset(run), runner.run_name(run)) == ("dnn", "dnn-gaussian_ic-K4")


def test_labels_of_a_solver_with_random_starts_are_keyed_by_the_chunk_size(tmp_path):
    """``ee_pga`` seeds its random starts per labelling chunk, so its labels depend on
    ``data.chunk_size``: the key includes it (each chunking cached and reproduced on its own); a
    deterministic solver's labels are shared across chunkings and equal."""
    labels, keys = {}, {}
    for chunk in (8, 16):
        run = composed(
            "data.num_train=16",
            "data.num_val=8",
            "data.label_solver=ee_pga",
            "learner.train.batch_size=8",
            f"data.chunk_size={chunk}",
            "solver.max_iter=50",
        )
        data = Data(run, build_parts(run), Cache(tmp_path), torch.device("cpu"), progress=False)
        labels[chunk] = (data.training_labels("train"), data.labels("train"))
        keys[chunk] = (data.keys["labels.ee_pga.train"], data.keys["labels.train"])
    assert keys[8][0] != keys[16][0]  # ee_pga: one entry per chunking
    run.data.chunk_size = 8  # the first chunking again: its own entry, reused
    again = Data(run, build_parts(run), Cache(tmp_path), torch.device("cpu"), progress=False)
    torch.testing.assert_close(again.training_labels("train"), labels[8][0], rtol=0, atol=0)
    assert keys[8][1] == keys[16][1]  # wmmse: one entry, whatever the chunking
    torch.testing.assert_close(labels[8][1], labels[16][1], rtol=0, atol=0)


@pytest.mark.parametrize("scenario", ["gaussian_ic", "imac"])
def test_a_power_sweep_samples_the_networks_once(tmp_path, scenario):
    """``p_max`` and ``noise_power`` do not change what is drawn: the networks' key leaves them out
    (one entry for both powers), while the problems and labels follow each run's own values."""
    made = {}
    for p_max in (1.0, 4.0):
        run = composed(
            f"scenario={scenario}",
            f"scenario.p_max={p_max}",
            "data.num_train=16",
            "data.num_val=8",
            "data.num_test=8",
            "learner.train.batch_size=8",
        )
        data = Data(run, build_parts(run), Cache(tmp_path), torch.device("cpu"), progress=False)
        made[p_max] = (data.network("test"), data.problem("test"), data.labels("test"), dict(data.keys))
    (net1, prob1, lab1, keys1), (net4, prob4, lab4, keys4) = made[1.0], made[4.0]
    assert keys1["network.test"] == keys4["network.test"]
    assert keys1["labels.test"] != keys4["labels.test"]
    for name in net1.tensors:
        assert torch.equal(net1[name], net4[name])
    assert (net1.params["p_max"], net4.params["p_max"]) == (1.0, 4.0)
    torch.testing.assert_close(prob4.budget, 4 * prob1.budget)
    assert not torch.equal(lab1, lab4)
    assert len(list((tmp_path / "networks").glob("*.pt"))) == 1  # the test set, sampled once


def test_figure_titles_and_legends_name_what_a_paper_prints():
    from mimo_l2o.figures import display_name
    from mimo_l2o.runner import figure_title

    run = composed("scenario=cellular", "precoder=mr", "scenario.num_antennas=16", "scenario.p_max_dbm=20")
    assert (
        figure_title(run, "10 test samples")
        == "cellular, mr: M=16, K=5, p_max=0.1 W (20 dBm); 10 test samples"
    )
    assert figure_title(composed(), "x") == "gaussian_ic: K=10, p_max=1; x"
    assert [display_name(n) for n in ("wmmse", "dnn", "max_power", "ee_sca", "gnn", "dnn/paper", "x/y")] == [
        "WMMSE",
        "DNN",
        "Max power",
        "SCA",
        "GNN",
        "DNN paper",  # a learner's option (learner=dnn/paper) after the learner's name
        "x/y",
    ]
