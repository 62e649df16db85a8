"""Runner stages in-process: sampling is independent of the chunk size, labels match the
solver, and the compatibility checks name the key."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.plugins import Plugins

from mimo_l2o.__main__ import CONF_DIR, PluginSearchPath
from mimo_l2o.cache import Cache
from mimo_l2o.config import register_configs, validate
from mimo_l2o.errors import ConfigError
from mimo_l2o.learner import Learner
from mimo_l2o.registry import LEARNERS
from mimo_l2o.runner import Data, build_parts
from mimo_l2o.solvers.wmmse import wmmse


def _run_config(*overrides):
    Plugins.instance().register(PluginSearchPath)
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return validate(compose("config", overrides=list(overrides)))


@pytest.mark.parametrize("scenario", ["gaussian_ic", "imac"])
def test_sampling_does_not_depend_on_the_chunk_size(tmp_path, scenario):
    nets = []
    for chunk in (7, 1000):
        run = _run_config(
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
    run = _run_config(
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
        run = _run_config()
        run.learner.name = "position_test"
        with pytest.raises(ConfigError, match="learner=position_test needs input user_positions"):
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

    run = _run_config(
        "data.num_train=40", "data.num_val=30", "data.chunk_size=16", "learner.train.batch_size=8"
    )
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
