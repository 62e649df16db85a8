"""The settings of the position learners (Sanguinetti et al. 2018): the choices of training target,
loss, input features, output and LSTM sequence as Enums, and :class:`PositionMLPConfig` and
:class:`PositionLSTMConfig` with the keys they share (:class:`_PositionConfig`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from mimo_l2o.errors import require
from mimo_l2o.learner import LearnerConfig, OptimizerName, Schedule, TrainConfig


class TrainOn(str, Enum):
    labels = "labels"  # the solver's powers (the paper): relative MSE, or MSE of log powers
    objective = "objective"  # the run's objective on the training problems (after label pretraining)


class RelativeMSE(str, Enum):
    element = "element"  # mean over every output of (ŷ − y)² / (y² + ε): each power's relative error
    cell = "cell"  # mean over cells of ‖ŷ_j − y_j‖² / (‖y_j‖² + ε): the error relative to the cell's vector


class InputFeatures(str, Enum):
    coordinates = "coordinates"  # the 2KL (x, y) coordinates (the paper)
    polar = "polar"  # per UE and BS: log distance and sine of the angle, from the wrapped offset


class PowerOutput(str, Enum):
    relu = "relu"  # ReLU powers / budget, relative MSE (Table IV)
    log = "log"  # linear log(power / budget), MSE of the log powers: every UE's power to a relative accuracy


class LSTMSequence(str, Enum):
    single = "single"  # the 2KL coordinates as one step (Table IV's parameter total)
    positions = "positions"  # the L·K UEs as steps of (x, y)


def _adam(lr: float, batch_size: int, max_epochs: int, patience: int, **schedule) -> TrainConfig:
    return TrainConfig(
        optimizer=OptimizerName.adam,
        lr=lr,
        batch_size=batch_size,
        max_epochs=max_epochs,
        early_stopping_patience=patience,
        **schedule,
    )


def _check_widths(key: str, widths: list[int], allow_empty: bool = True) -> None:
    require(allow_empty or len(widths) >= 1, key, "needs at least one layer")
    require(all(w >= 1 for w in widths), key, f"widths must be >= 1, got {list(widths)}")


@dataclass
class _PositionConfig(LearnerConfig):
    """Keys both position learners share.

    Parameters
    ----------
    shared : bool
        One network for all cells, fed the positions in each cell's own frame; off: one per cell.
    loss : RelativeMSE
        ``element``: the relative error of every output; ``cell``: of each cell's output vector
        (:func:`relative_mse`).
    relative_floor : float
        In the relative MSE, a label (cell vector or output) whose square is below this fraction of the
        training labels' mean square is weighed as if it were that large (:func:`label_floor`): a
        sum-rate solver switches whole cells off (about 5 % of the imac cells), and those would
        otherwise weigh 1e8 times the others; only a cell below the floor is weighed differently (with
        max-prod labels on cellular, almost none). 0: the paper's loss.
    standardize : bool
        Scale each (per-cell) input feature to mean 0 and std 1 with training-set statistics, kept
        inside the model; off: the coordinates as they are (the paper).
    train_on : TrainOn
        ``labels``: fit the solver's powers (the paper). ``objective``: fit them for
        ``pretrain_epochs`` epochs, then maximize the run's objective (its smooth form,
        ``Objective.smooth``) on the training problems: the loss is ``−log`` of it for the feasible
        decision, and the validation loss (early stopping, best weights) is that from the first epoch.
    pretrain_epochs : int
        Epochs on the labels before the objective (``train_on: objective``).
    temperature : float
        Sharpness of the smooth objective (the soft minimum of max-min; ``Objective.smooth``).
    permute_users : bool
        Rename the pilots at random in each training batch, alike in every cell (:func:`permute_users`),
        so the network learns that a UE's index means only who shares its pilot.
    features : InputFeatures
        What the network sees of the positions (:class:`CellFrames`): ``coordinates``, the (x, y) of
        every UE (the paper); ``polar``, every UE's log distance and the sine of its angle to every BS.
    """

    shared: bool = False
    loss: RelativeMSE = RelativeMSE.cell
    relative_floor: float = 0.1
    standardize: bool = True
    train_on: TrainOn = TrainOn.labels
    pretrain_epochs: int = 8
    temperature: float = 20.0
    permute_users: bool = False
    features: InputFeatures = InputFeatures.coordinates

    def __post_init__(self) -> None:
        require(self.pretrain_epochs >= 0, "pretrain_epochs", f"must be >= 0, got {self.pretrain_epochs}")
        require(
            math.isfinite(self.relative_floor) and self.relative_floor >= 0,
            "relative_floor",
            f"must be a finite number >= 0, got {self.relative_floor}",
        )
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


@dataclass
class PositionMLPConfig(_PositionConfig):
    """Parameters
    ----------
    hidden : list[int]
        Widths of the hidden ELU layers before the ``K``-unit one (Table II: 64, 32, 32, 16; Table III:
        512, 256, 128, 128).
    k_layer : bool
        End the hidden stack with an ELU layer of ``K`` units (layer 5 of Tables II and III).
    use_sum : bool
        Final decision from the predicted sum: the ``K`` powers (clamped at 0) scaled to add up to the
        predicted sum clamped to ``[0, budget]``; off: the ``K`` outputs as they are.
    shared, loss, standardize, ...
        As in :class:`_PositionConfig`.
    train : TrainConfig
        The shared loop's settings: Adam (the paper) from 3e-3, halved after 3 epochs without a better
        validation loss, batch 128, at most 200 epochs, stopping after 10 without a better one (the
        paper tuned these "by trial and error" and gives none); at most 31,400 steps (200 epochs of the
        cellular laptop set), so that larger training sets cost no more (the presets lift it).
    """

    hidden: list[int] = field(default_factory=lambda: [64, 32, 32, 16])
    k_layer: bool = True
    use_sum: bool = True
    train: TrainConfig = field(default_factory=lambda: _adam(3e-3, 128, 200, 10, max_steps=31_400))

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_widths("hidden", self.hidden)
        require(len(self.hidden) >= 1 or self.k_layer, "hidden", "needs a hidden layer (or k_layer: true)")


@dataclass
class PositionLSTMConfig(_PositionConfig):
    """Parameters
    ----------
    lstm : list[int]
        Units of the stacked LSTM layers (Table IV: 256, 128).
    dense : list[int]
        Widths of the ReLU dense layers before the ``K`` ReLU outputs (Table IV: 64).
    sequence : LSTMSequence
        ``single``: the ``2KL`` coordinates as one time step; ``positions``: ``L·K`` steps of (x, y).
    shared, loss, standardize
        As in :class:`_PositionConfig`.
    output : PowerOutput
        ``relu``: ReLU outputs, the powers divided by the budget (Table IV), relative-MSE loss; ``log``:
        a linear last layer predicting ``log(power / budget)``, trained with the MSE of the log powers.
        Max-min's objective is the smallest SINR, so one UE whose power is predicted 0 (or 10 times too
        small) sinks its whole network: the log output keeps every power positive and learns each one
        to a relative accuracy.
    pilot_shifts : int
        The decision averages the network's outputs over this many cyclic relabelings of the pilots,
        capped at ``K`` (:class:`PositionLSTM`); 1: the network alone.
    shared, train_on, temperature, permute_users, features
        As in :class:`_PositionConfig`, with other defaults than the MLP's (the paper's Table IV network
        is per cell on coordinates, trained on the labels): one shared network on polar features, the
        pilots renamed at random in training and averaged over 4 renamings in the decision, trained on
        the labels for 8 epochs, then on the max-min soft minimum of temperature 50
        (``plugins/sanguinetti2018/README.md``).
    train : TrainConfig
        Adam from 3e-3 decaying exponentially to 3e-5 over 105 epochs of batch 128, stopping after 20
        epochs without a better validation loss; at most 16,500 steps (the 105 epochs of the cellular
        laptop set), so that larger training sets cost no more (the presets lift it).
    """

    lstm: list[int] = field(default_factory=lambda: [256, 128])
    dense: list[int] = field(default_factory=lambda: [64])
    sequence: LSTMSequence = LSTMSequence.single
    output: PowerOutput = PowerOutput.log
    pilot_shifts: int = 4
    shared: bool = True
    train_on: TrainOn = TrainOn.objective
    temperature: float = 50.0
    permute_users: bool = True
    features: InputFeatures = InputFeatures.polar
    train: TrainConfig = field(
        default_factory=lambda: _adam(
            3e-3, 128, 105, 20, schedule=Schedule.exponential, min_lr=3e-5, lr_patience=5, max_steps=16_500
        )
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_widths("lstm", self.lstm, allow_empty=False)
        _check_widths("dense", self.dense)
        require(self.pilot_shifts >= 1, "pilot_shifts", f"must be >= 1, got {self.pilot_shifts}")
