"""The learner interface: what a paper's method (a plugin) supplies to the shared runner.

A learner declares what it needs (``requires_labels``, ``families``, ``inputs``: named features of
:mod:`mimo_l2o.features`, and :meth:`Learner.refuses` for what only it can judge) so the runner can
refuse an impossible combination before any work, and supplies

* :meth:`Learner.prepare`: the named features → one float32 model input tensor;
* :meth:`Learner.build_model`: the network, raw input → raw decision (supervised learners may first
  look at the training labels, :meth:`Learner.observe_labels`);
* :meth:`Learner.loss`: the training loss on a batch;
* :meth:`Learner.finalize`: raw decision → the method's final decision (a module, so the
  logged policy is self-contained), chosen after training, with the validation set to choose by;
* optionally :meth:`Learner.on_epoch_end`, a hook for schedules of its own.

Training itself (device, optimizer, learning-rate schedule, early stopping, checkpoints,
metric logging) is one shared loop in :mod:`mimo_l2o.training`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import torch
from omegaconf import MISSING
from torch import Tensor, nn

from mimo_l2o.components import Geometry, Objective, Precoder, Scenario
from mimo_l2o.errors import require
from mimo_l2o.problems import POWER_CONTROL, Problem

# key prefix of the problem tensors in a training batch (``problem.signal_gain``, ...)
PROBLEM_KEY = "problem."


class OptimizerName(str, Enum):
    adam = "adam"
    rmsprop = "rmsprop"
    sgd = "sgd"


class Schedule(str, Enum):
    plateau = "plateau"  # multiply by lr_factor after lr_patience epochs without a better validation loss
    exponential = "exponential"  # decay geometrically from lr to min_lr over max_epochs, step by step


@dataclass
class TrainConfig:
    """Shared training loop settings.

    Parameters
    ----------
    optimizer : OptimizerName
        ``adam``, ``rmsprop`` or ``sgd``.
    lr : float
        Initial learning rate.
    rmsprop_alpha : float
        RMSprop decay of the running average of squared gradients.
    weight_decay : float
        L2 penalty.
    batch_size : int
        Samples per step; at most ``data.num_train``.
    max_epochs : int
        Epoch limit.
    max_steps : int
        Step limit (0: none): training stops after this many steps, validating at the step it stops
        at, and the exponential schedule reaches ``min_lr`` there. Keeps a learner's training budget
        the same on small and large training sets.
    early_stopping_patience : int
        Stop after this many epochs without a better validation loss (0: never); the best
        weights are restored.
    schedule : Schedule
        ``plateau``: multiply the learning rate by ``lr_factor`` after ``lr_patience`` epochs without
        a better validation loss, down to ``min_lr``. ``exponential``: decay it geometrically at every
        step from ``lr`` to ``min_lr`` at the last step of ``max_epochs``.
    lr_patience, lr_factor, min_lr : int, float, float
        The plateau schedule's patience and factor; the smallest learning rate of either schedule.
    """

    optimizer: OptimizerName = OptimizerName.adam
    lr: float = 1e-3
    rmsprop_alpha: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 1000
    max_epochs: int = 100
    max_steps: int = 0
    early_stopping_patience: int = 10
    schedule: Schedule = Schedule.plateau
    lr_patience: int = 3
    lr_factor: float = 0.5
    min_lr: float = 1e-6

    def __post_init__(self) -> None:
        require(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        require(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.max_epochs >= 1, "train.max_epochs", f"must be >= 1, got {self.max_epochs}")
        require(self.max_steps >= 0, "train.max_steps", f"must be >= 0 (0: no limit), got {self.max_steps}")
        require(0 < self.lr_factor < 1, "train.lr_factor", f"must be in (0, 1), got {self.lr_factor}")
        require(
            0 < self.rmsprop_alpha < 1, "train.rmsprop_alpha", f"must be in (0, 1), got {self.rmsprop_alpha}"
        )
        require(self.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0")
        require(self.lr_patience >= 0, "train.lr_patience", "must be >= 0")
        require(self.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(
            0 <= self.min_lr <= self.lr,
            "train.min_lr",
            f"must be in [0, lr = {self.lr:g}], got {self.min_lr}",
        )
        require(
            Schedule(self.schedule) != Schedule.exponential or 0 < self.min_lr <= self.lr,
            "train.min_lr",
            f"must be in (0, lr] for the exponential schedule, got {self.min_lr}",
        )


@dataclass
class LearnerConfig:
    """Keys every learner has.

    Parameters
    ----------
    name : str
        Registry key (the entry-point name) of the learner.
    train : TrainConfig
        The shared training loop's settings.
    """

    name: str = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class LearnerSpec:
    """What the runner tells a learner about the problems it will face.

    Parameters
    ----------
    input_shapes : dict[str, tuple[int, ...]]
        Shape of each named feature, without the sample dimension.
    problem : Problem
        One problem of the training set (float32, CPU): the decision's shape and dtype
        (``problem.decision_shape``, ``problem.decision_dtype``), the budgets, the structure of the
        family that :meth:`Learner.batch_problem` puts a batch's problem tensors into.
    objective : Objective, optional
        The run's objective, for learners that train on it.
    geometry : Geometry, optional
        The scenario's layout of sites and cells, for learners of positions (``None``: no positions).
    """

    input_shapes: dict[str, tuple[int, ...]]
    problem: Problem
    objective: Objective | None = None
    geometry: Geometry | None = None


class Policy(nn.Module):
    """The deployable method: model input → final decision (what ``mlflow.pytorch`` logs)."""

    def __init__(self, model: nn.Module, finalize: nn.Module):
        super().__init__()
        self.model = model
        self.finalize = finalize

    def forward(self, x: Tensor) -> Tensor:
        return self.finalize(self.model(x))


class Learner:
    """Base class of learners (plugins subclass it and register through an entry point).

    Class attributes
    ----------------
    Config : type
        The learner's config dataclass (its Hydra schema), a subclass of :class:`LearnerConfig`.
    requires_labels : bool
        Trained on solver labels (supervised) or not.
    families : tuple[str, ...]
        Problem families it decides for (``power_control``, ``beamforming``).
    inputs : tuple[str, ...]
        Names of the features it reads (:data:`mimo_l2o.features.FEATURES`).
    paper : str
        The paper whose method it is (the runs' ``paper`` tag, unless a preset names one).
    reports_raw : bool
        Whether its raw output (:meth:`raw_output`) differs from its final decision, so that the
        raw output's objective is reported beside it (``test/objective_ratio_raw``).
    """

    name: ClassVar[str]
    Config: ClassVar[type] = LearnerConfig
    requires_labels: ClassVar[bool] = True
    # attributes training changes besides the model and the optimizer, saved in checkpoints to resume
    resumable: ClassVar[tuple[str, ...]] = ()
    families: ClassVar[tuple[str, ...]] = (POWER_CONTROL,)
    inputs: ClassVar[tuple[str, ...]] = ()
    paper: ClassVar[str] = ""
    display_name: ClassVar[str] = ""  # as its paper's figures name it (DNN, GNN); "": the registry key
    # its model's sizes do not depend on the numbers of users or antennas (one network shared by users,
    # links or nodes), so eval.shifts may change them; otherwise a shift must keep the input's shape
    size_free: ClassVar[bool] = False

    def __init__(self, config: Any, spec: LearnerSpec):
        self.config = config
        self.spec = spec

    @classmethod
    def published(cls, params: dict[str, str]) -> str | None:
        """The paper's own published result for a run of this learner, from the run's MLflow params (the
        flattened config, as strings), as a short text naming the table (``"98.33 % of WMMSE (Table
        I)"``); ``None`` where the paper reports nothing for that setting. For ``mimo-l2o report``."""
        return None

    @classmethod
    def for_family(cls, family: str) -> type[Learner]:
        """The class that decides for problems of ``family`` (one of :attr:`families`): a learner that
        runs on several families may hand one to a subclass with other inputs and output; by default
        the class itself. The runner asks it once the family is known."""
        return cls

    @classmethod
    def refuses(cls, scenario: Scenario, precoder: Precoder) -> str | None:
        """Why this learner cannot read the problems of ``scenario`` with ``precoder`` although it has
        the features it reads (one line naming the learner and the scenario), or ``None``; asked from
        the config alone, before any work."""
        return None

    @classmethod
    def refuses_setting(cls, config: Any, scenario: Scenario) -> tuple[str, str] | None:
        """A setting of this learner's ``config`` that cannot work on ``scenario``: ``(key, one line)``,
        the key relative to ``learner`` (``recovery``), or ``None``; asked from the config alone, before
        any work, like :meth:`refuses`."""
        return None

    @property
    def reports_raw(self) -> bool:
        return False

    @property
    def exportable(self) -> bool:
        """Whether the deployed policy is one static graph (``torch.export``, MLflow's ``pt2`` format);
        otherwise it is logged by pickle."""
        return True

    @property
    def uses_problems(self) -> bool:
        """Whether training batches carry the problems (``problem.<tensor>`` keys, see
        :meth:`batch_problem`): always for learners without labels, which train on the objective."""
        return not self.requires_labels

    @staticmethod
    def problem_tensors(problem: Problem) -> dict[str, Tensor]:
        """A problem's batched tensors under the batch keys ``problem.<name>``."""
        return {PROBLEM_KEY + k: v for k, v in problem.batched_tensors().items()}

    def batch_problem(self, batch: dict[str, Any]) -> Problem:
        """The problems of a training batch (the ``problem.<name>`` tensors in the spec's structure)."""
        tensors = {k[len(PROBLEM_KEY) :]: v for k, v in batch.items() if k.startswith(PROBLEM_KEY)}
        device = next(iter(tensors.values())).device
        return self.spec.problem.to(device).with_batched_tensors(tensors)

    def prepare(self, features: dict[str, Tensor]) -> Tensor:
        """Model input ``[batch, ...]`` (float32) from the named features."""
        raise NotImplementedError

    def observe_labels(self, labels: Tensor) -> None:
        """Called with the training labels ``[n, *decision_shape]`` before :meth:`build_model`, for
        supervised learners that set a scale from them; by default nothing."""

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        """The network (raw input → raw decision); ``train_inputs`` may set normalisations."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        """Scalar training loss; ``batch`` has ``inputs`` and, when labelled, ``labels``."""
        raise NotImplementedError

    def validation_loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        """The loss on a validation batch, which picks the best epoch, drives the plateau schedule and
        early stopping (``val/loss``); by default the training loss. A learner whose training loss has
        terms that are not the goal (supervised helpers) may validate on the goal alone."""
        return self.loss(model, batch)

    def raw_output(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """The network's own decision before the learner post-processes it (for
        ``test/objective_ratio_raw`` when :attr:`reports_raw`); by default the model's output."""
        return model(inputs)

    def finalize(self, score: Callable[[nn.Module], float] | None = None) -> nn.Module:
        """Raw decision → final decision, after training; by default only made feasible (the family's
        projection). ``score(final)`` is the validation ``objective_ratio`` of the trained model with
        a candidate final module, for learners that choose among variants."""
        return self.spec.problem.feasibility()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Hook for the learner's own schedules (called after validation each epoch)."""

    def training_state(self) -> dict[str, Any]:
        """The learner's own state that training changes (its attributes named in ``resumable``:
        schedules, counters, generators), for a checkpoint to resume from."""
        out: dict[str, Any] = {}
        for name in self.resumable:
            value = getattr(self, name)
            out[name] = (
                ("generator", value.get_state()) if isinstance(value, torch.Generator) else ("value", value)
            )
        return out

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state`."""
        for name, (kind, value) in state.items():
            if kind == "generator":
                getattr(self, name).set_state(value)
            else:
                setattr(self, name, value)

    def summary(self) -> dict[str, float]:
        """Final values of the learner's own state, logged as ``train/<key>`` after training."""
        return {}

    def shift_refusal(self, trained: tuple[int, ...], shifted: tuple[int, ...]) -> str | None:
        """Why the trained model cannot read the input of a shifted setting (``eval.shifts``), from the
        input shapes (without the sample dimension) it was trained on and the shifted setting gives;
        ``None``: it can. By default a model reads only inputs of the trained shape; a learner whose
        sizes do not depend on the setting (:attr:`size_free`) reads any."""
        if self.size_free or trained == shifted:
            return None
        return (
            f"{self.name}'s input size is fixed by the trained setting: it was trained on inputs of shape "
            f"{list(trained)} and this setting gives {list(shifted)}"
        )

    def adapt(self, model: nn.Module, finalize: nn.Module, problem: Problem) -> tuple[nn.Module, nn.Module]:
        """The trained model and final module for a shifted setting's ``problem`` (``eval.shifts``): what
        the method is told at deployment without retraining (the BS's power, for a beamformer scaled onto
        it); by default both as trained. The decisions are made feasible for ``problem`` afterwards."""
        return model, finalize

    def test_metrics(self, model: nn.Module, inputs: Tensor, problem: Problem) -> dict[str, float]:
        """The learner's own measures on the test set (its inputs and problems, on the model's device),
        logged as ``test/<key>``: what its paper reports beside the objective (the NMSE of a learned
        channel); by default none."""
        return {}
