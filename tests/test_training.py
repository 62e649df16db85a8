"""The shared training loop's learning-rate schedules: the exponential one decays geometrically at
every step and reaches ``min_lr`` at the last step of ``max_epochs``; the plateau one waits for the
validation loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mimo_l2o.errors import ConfigError
from mimo_l2o.learner import Learner, LearnerConfig, LearnerSpec, OptimizerName, Schedule, TrainConfig
from mimo_l2o.problems.power_control import PowerControlProblem
from mimo_l2o.training import fit


class Regression(Learner):
    """A linear fit of ``y = 2x``."""

    def __init__(self, config):
        template = PowerControlProblem.interference_channel(torch.ones(1, 1, 1), 1.0, 1.0)
        super().__init__(config, LearnerSpec({}, template))

    def loss(self, model, batch):
        return (model(batch["inputs"]) - batch["labels"]).square().mean()


def run(schedule: Schedule, epochs: int = 4, n: int = 40, batch: int = 16):
    cfg = LearnerConfig(
        name="regression",
        train=TrainConfig(
            lr=1e-2,
            min_lr=1e-5,
            batch_size=batch,
            max_epochs=epochs,
            schedule=schedule,
            early_stopping_patience=0,
        ),
    )
    learner = Regression(cfg)
    model = nn.Linear(1, 1)
    x = torch.linspace(-1, 1, n)[:, None]
    data = {"inputs": x, "labels": 2 * x}
    original, lrs = torch.optim.Adam.step, []

    def step(opt, *args, **kwargs):  # the learning rate each step is taken with
        lrs.append(opt.param_groups[0]["lr"])
        return original(opt, *args, **kwargs)

    torch.optim.Adam.step = step
    try:
        fit(learner, model, data, data, torch.device("cpu"), torch.Generator().manual_seed(0))
    finally:
        torch.optim.Adam.step = original
    return lrs


def test_exponential_schedule_reaches_min_lr_at_the_last_step():
    lrs = run(Schedule.exponential)
    steps = 4 * math.ceil(40 / 16)
    assert len(lrs) == steps
    # lr, lr·γ, ..., min_lr at the last step
    gamma = (1e-5 / 1e-2) ** (1 / (steps - 1))
    assert lrs[0] == pytest.approx(1e-2, rel=1e-12)
    for a, b in zip(lrs[:-1], lrs[1:], strict=True):
        assert b / a == pytest.approx(gamma, rel=1e-9)
    assert lrs[-1] == pytest.approx(1e-5, rel=1e-9)


def test_plateau_schedule_keeps_the_rate_while_the_loss_improves():
    lrs = run(Schedule.plateau)
    assert set(lrs) == {1e-2}  # 4 epochs of an improving fit: never reduced


def test_exponential_schedule_needs_a_positive_floor():
    with pytest.raises(ConfigError) as err:
        TrainConfig(schedule=Schedule.exponential, min_lr=0.0)
    assert err.value.key == "train.min_lr"


def test_a_diverging_loss_stops_training_with_the_learning_rate_named():
    """A loss that turns NaN stops the loop at that step, before the weights take it in."""

    class Diverging(Regression):
        calls = 0

        def loss(self, model, batch):
            Diverging.calls += 1
            loss = super().loss(model, batch)
            return loss * math.nan if Diverging.calls == 3 else loss

    cfg = LearnerConfig(name="diverging", train=TrainConfig(lr=0.5, batch_size=8, max_epochs=2))
    model = nn.Linear(1, 1)
    x = torch.linspace(-1, 1, 40)[:, None]
    data = {"inputs": x, "labels": 2 * x}
    message = r"loss is nan in epoch 0; try a smaller learner.train.lr \(now 0.5\)"
    with pytest.raises(FloatingPointError, match=message):
        fit(Diverging(cfg), model, data, data, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert Diverging.calls == 3
    assert all(bool(p.isfinite().all()) for p in model.parameters())


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_a_diverging_validation_loss_stops_training_with_the_keys_named(weight_decay):
    """One step per epoch at a huge rate: every training loss is finite (each is taken before its
    step), but the step leaves weights whose validation loss is not; that epoch stops the loop."""
    cfg = LearnerConfig(
        name="diverging",
        train=TrainConfig(
            lr=1e30, batch_size=40, max_epochs=3, optimizer=OptimizerName.sgd, weight_decay=weight_decay
        ),
    )
    model = nn.Linear(1, 1)
    x = torch.linspace(-1, 1, 40)[:, None]
    data = {"inputs": x, "labels": 2 * x}
    epochs = []
    message = r"the validation loss is (inf|nan) after epoch 0; try a smaller learner.train.lr \(now 1e\+30\)"
    if weight_decay:
        message += r" or learner.train.weight_decay \(now 0.5\)"
    with pytest.raises(FloatingPointError, match=message + "$"):
        fit(
            Regression(cfg),
            model,
            data,
            data,
            torch.device("cpu"),
            torch.Generator().manual_seed(0),
            on_epoch=lambda e, m: epochs.append(e),
        )
    assert epochs == []  # no epoch with a non-finite validation loss is reported or kept as best
