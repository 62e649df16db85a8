"""Using a trained policy on new networks: :func:`inputs` builds a logged model's input from its run's
composed config (the ``hydra/config.yaml`` artifact), the way the runner built it for training.

::

    import mlflow, torch, mimo_l2o
    mlflow.set_tracking_uri("sqlite:///mlflow.db")     # the store the run was logged to
    policy = mimo_l2o.policy("<run id>")
    new = mimo_l2o.inputs("<run id>", num_samples=100, seed=1)
    with torch.no_grad():
        powers = new.problem.project(policy(new.x).double())
    print(new.objective(new.problem, powers).mean())   # e.g. the mean sum rate

The model's input is the learner's ``prepare`` of the features it reads (the run's
``mimo_l2o.input_features`` tag names them); its output is the final decision
(``problem.decision_shape`` per sample), which :meth:`~mimo_l2o.problems.Problem.project` makes
feasible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from mimo_l2o import features
from mimo_l2o.components import Objective
from mimo_l2o.data import learner_spec, stored
from mimo_l2o.problems import Problem

CONFIG_ARTIFACT = "hydra/config.yaml"  # the run's composed config, as Hydra wrote it
MODEL_TAG = "mimo_l2o.model_uri"  # the logged policy's URI, a tag of its run


class NoPolicy(LookupError):
    """A run that cannot give a policy: not in the store, or logged without a model. Its message is
    one line that says which and what to do."""


def _run(run_id: str):
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        uri = mlflow.get_tracking_uri()
        raise NoPolicy(
            f"run {run_id} is not in the tracking store {uri}: set MLFLOW_TRACKING_URI (or "
            "mlflow.set_tracking_uri) to the store the run was logged to"
        ) from None


def policy(run_id: str) -> torch.nn.Module:
    """The policy ``run_id`` logged (``mlflow.pytorch.load_model`` of its tag ``mimo_l2o.model_uri``);
    :class:`NoPolicy` when the run is not in the store or logged no model."""
    import mlflow.pytorch

    run = _run(run_id)
    uri = run.data.tags.get(MODEL_TAG)
    if uri is None:
        raise NoPolicy(
            f"run {run_id} logged no policy (tracking.log_model=false; experiment=debug sets it): run it "
            "again with tracking.log_model=true"
        )
    return mlflow.pytorch.load_model(uri)  # saved in eval mode (an exported program has no .eval())


@dataclass
class Inputs:
    """New networks for a policy: ``x`` its model input, ``problem`` their problems (float64, CPU) and
    ``objective`` the run's objective (``objective(problem, decision)`` per sample)."""

    x: Tensor
    problem: Problem
    objective: Objective


def run_config(run_id: str) -> DictConfig:
    """The composed config a run was made with (its ``hydra/config.yaml`` artifact)."""
    import mlflow

    _run(run_id)  # in the store, or one line that says where to look
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CONFIG_ARTIFACT)
    return OmegaConf.load(Path(path))


def inputs(
    run_id: str | None = None, num_samples: int = 100, seed: int = 0, config: DictConfig | None = None
) -> Inputs:
    """The model input of ``run_id``'s logged policy (or of the composed ``config``) for
    ``num_samples`` networks of its scenario drawn from ``seed`` (not the run's training, validation
    or test seeds): the learner's prepared features, the problems, and the objective."""
    from mimo_l2o.config import register_configs, validate, with_schemas
    from mimo_l2o.parts import build_parts

    if (run_id is None) == (config is None):
        raise ValueError("give one of run_id and config")
    register_configs()
    run = validate(with_schemas(config if config is not None else run_config(run_id)))
    parts = build_parts(run)
    with torch.no_grad():
        net = stored(parts.scenario, parts.scenario.sample(num_samples, torch.Generator().manual_seed(seed)))
        problem = parts.precoder(net.to(dtype=torch.float64))  # as the runner builds it from the cache
        made = features.compute(parts.learner_cls.inputs, parts.scenario, net, lambda: problem)
        spec = learner_spec(parts, net.select(slice(0, 1)), problem[:1])
        x = parts.learner_cls(run.learner, spec).prepare(made)
    return Inputs(x, problem, parts.objective)
