"""Power allocation from UE positions: Sanguinetti, Zappone & Debbah (2018), "Deep learning power
allocation in massive MIMO", Section IV and Tables II-IV.

For each cell ``j`` a network maps the ``2KL`` normalised UE coordinates of the whole network to the
``K`` powers of cell ``j``; the ``L`` networks are evaluated at once as grouped layers (weights
``[L, in, out]``, one batched matrix product per layer).

* :class:`PositionMLPLearner` (``position_mlp``, max-prod; Tables II and III): dense ELU layers and a
  linear output of ``K + 1`` values, the cell's powers and their sum, both divided by the cell budget.
  With ``use_sum`` the ``K`` powers (clamped at 0) are rescaled to add up to the predicted sum (clamped
  to ``[0, budget]``), so the decision spends what the network predicts the cell spends.
* :class:`PositionLSTMLearner` (``position_lstm``, max-min; Table IV): LSTM 256 → LSTM 128 → dense 64
  ReLU → dense ``K`` ReLU, Keras-style LSTMs (one bias vector, gate order i, f, g, o).

Both are trained with the relative MSE (:func:`relative_mse`) to the solver's powers divided by the
budget, or (LSTM, ``output: log``) with the MSE of the log powers; inputs are standardized with
training-set statistics (``standardize``), and the final decision is the feasible projection onto
``(1 − 1e-5)`` times the budgets. With ``shared: true`` one network serves every cell, fed the
positions in that cell's own frame (:class:`CellFrames`): ``L`` times the training examples per
sample, and equivariant to translations of the whole layout by whole cells on the torus.

Features: ``user_positions`` ``[n, L·K, 2]`` (UE ``k`` of cell ``l`` in row ``l·K + k``), divided by the
scenario's length ``Geometry.scale`` (cellular: the side of the whole wrapped area, so coordinates lie
in ``[0, 1)`` and BS ``l`` at ``((l % g + 0.5) / g, (l // g + 0.5) / g)``, ``g = √L``). Any scenario whose
users each belong to a cell of ``K`` (``Geometry.user_site``), with one power variable per user and
budget groups inside cells, is read the same way: cellular massive MIMO (one budget per cell) and the
IMAC (one budget per user; each cell's powers are then divided by the sum of its users' budgets).
Distances wrap around only where the scenario's do (``Geometry.wrap``).

This file holds what both learners share (:class:`_PositionLearner`: the feature, the losses on the
labels or the objective, the final projection, the pilots' renumbering :func:`permute_users`); the
learners are in ``position_mlp.py`` and ``position_lstm.py``, their settings in ``config.py``, the cell
layout in ``layout.py``, the networks' inputs in ``position_features.py``, the grouped layers in
``layers.py``, the networks in ``networks.py`` and the losses in ``loss.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from mimo_l2o_plugins.sanguinetti2018.config import TrainOn
from mimo_l2o_plugins.sanguinetti2018.layout import FEATURE, CellLayout
from mimo_l2o_plugins.sanguinetti2018.loss import cell_targets, label_floor, relative_mse
from torch import Tensor, nn

from mimo_l2o.errors import require
from mimo_l2o.learner import Learner, LearnerSpec
from mimo_l2o.problems.power_control import FeasiblePower, project_onto_budgets

# relative margin below each budget in the final decision: float32 powers scaled onto a budget can
# sum to it plus a rounding (one ulp), which test/constraint_violation would report
BUDGET_MARGIN = 1e-5


def permute_users(
    batch: dict[str, Tensor], layout: CellLayout, generator: torch.Generator
) -> dict[str, Tensor]:
    """The batch with its pilots renumbered at random, drawn per sample: one permutation of ``0..K−1``
    applied to the UEs of every cell, in the positions ``inputs [B, L·K·2]``, the ``labels [B, L·K]``
    and the problem tensors (``problem.*``: gains ``[B, L·K, L·K]`` permuted on both axes, per-UE
    vectors ``[B, L·K]`` on theirs, per-cell budgets kept) alike. Each sample stays the same network:
    UE ``k`` of every cell still shares pilot ``k`` with UE ``k`` of the others (pilot reuse 1), which
    a permutation drawn per cell would scramble, leaving the positions blind to who contaminates whom."""
    inputs = batch["inputs"]
    b, nl, k = inputs.shape[0], layout.num_cells, layout.num_users
    v = nl * k
    keys = torch.rand(b, 1, k, generator=generator).argsort(-1).expand(b, nl, k)
    perm = (keys + k * torch.arange(nl)[:, None]).flatten(1).to(inputs.device)  # [B, V]
    out = {}
    for name, t in batch.items():
        if name == "inputs":
            out[name] = t.view(b, v, 2).gather(1, perm[..., None].expand(b, v, 2)).flatten(1)
        elif t.dim() == 3 and t.shape[1:] == (v, v):
            rows = t.gather(1, perm[..., None].expand(b, v, v))
            out[name] = rows.gather(2, perm[:, None, :].expand(b, v, v))
        elif t.dim() == 2 and t.shape[1] == v:
            out[name] = t.gather(1, perm)
        else:
            out[name] = t
    return out


# Sanguinetti et al. (2018), Section V: the mean "MSE of SEs" of the max-product networks, by precoder
# (Table II network; Table III's larger one gave 0.003 and 0.015)
MSE_OF_SES = {"mmmse": 0.007, "mr": 0.051}


class _PositionLearner(Learner):
    """What both learners share: the feature, the cell layout, the losses (labels or objective) and the
    UE renumbering."""

    resumable = ("epoch", "generator")

    requires_labels = True
    inputs = (FEATURE,)
    paper = "sanguinetti2018"
    with_sum: bool = False

    @classmethod
    def published(cls, params: dict[str, str]) -> str | None:
        """Section V: the mean MSE of SEs of the Table II network with max-product powers, 4 cells of 5
        UEs (compare ``test/mse_se``); the paper gives no number for max-min ("matches almost exactly")."""
        if params.get("scenario.name") != "cellular" or params.get("objective.name") != "max_prod":
            return None
        precoder = params.get("precoder.name")
        shape = (int(params.get("scenario.num_cells", 0)), int(params.get("scenario.num_users", 0)))
        if precoder not in MSE_OF_SES or shape != (4, 5):
            return None
        return f"MSE of SEs {MSE_OF_SES[precoder]} (Section V, M = 100)"

    def __init__(self, config: Any, spec: LearnerSpec):
        super().__init__(config, spec)
        self.layout = CellLayout.from_spec(spec)
        self.epoch = 0  # epochs done (on_epoch_end), for the switch from labels to the objective
        self.floor = 0.0  # the relative MSE's floor, set from the training labels (observe_labels)
        self.generator = torch.Generator().manual_seed(0)  # reseeded by build_model
        if self.on_objective:
            require(spec.objective is not None, "learner.train_on", "objective: the runner gave no objective")

    @property
    def on_objective(self) -> bool:
        return TrainOn(self.config.train_on) == TrainOn.objective

    @property
    def uses_problems(self) -> bool:
        return self.on_objective

    @classmethod
    def refuses(cls, scenario, precoder) -> str | None:
        geometry = scenario.geometry()
        if geometry is not None and geometry.user_site is None:
            return (
                f"learner={cls.name} maps the positions to each cell's powers, but scenario={scenario.name} "
                "puts its users in no cell (every site may serve every user, one power per user and site)"
            )
        return None

    def prepare(self, features: dict[str, Tensor]) -> Tensor:
        """Positions ``[B, U, 2]`` (m) → ``[B, 2U]`` divided by the geometry's scale."""
        return features[FEATURE].flatten(1).float() / self.layout.scale

    def finalize(self, score=None) -> nn.Module:
        """The feasible projection onto budgets ``(1 − 1e-5) p_max``, so that float32 rounding never
        leaves a cell above ``p_max``."""
        return FeasiblePower(self.spec.problem.group, self.spec.problem.budget[0] * (1 - BUDGET_MARGIN))

    def targets(self, labels: Tensor) -> Tensor:
        """Labels ``[B, L·K]`` (W) → what :meth:`outputs` of the model predicts, ``[B, L, K(+1)]``."""
        return cell_targets(labels.float(), self.layout.cell_budget.to(labels.device), self.with_sum)

    def label_loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        """The loss against the solver's powers."""
        return relative_mse(
            model.outputs(batch["inputs"]), self.targets(batch["labels"]), self.config.loss, self.floor
        )

    def observe_labels(self, labels: Tensor) -> None:
        """The relative MSE's floor from the training labels (:func:`label_floor`)."""
        self.floor = label_floor(self.targets(labels), self.config.loss, self.config.relative_floor)

    def objective_loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        """``−mean log`` of the smooth objective of the feasible decision on the batch's problems, of
        the network's own decision (:meth:`raw_output`) in validation too: the averaging over pilot
        relabelings (``pilot_shifts``) is left to the deployed policy, which the test metrics score."""
        problem = self.batch_problem(batch)
        raw = self.raw_output(model, batch["inputs"])
        decision = project_onto_budgets(raw, self.spec.problem.group, problem.budget)
        value = self.spec.objective.smooth(problem, decision, self.config.temperature)
        return -value.clamp_min(torch.finfo(value.dtype).tiny).log().mean()

    def start(self, generator: torch.Generator) -> None:
        """Seed the UE renumbering from the model's generator (called by ``build_model``)."""
        self.generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        if model.training and self.config.permute_users:
            batch = permute_users(batch, self.layout, self.generator)
        if self.on_objective and not (model.training and self.epoch < self.config.pretrain_epochs):
            return self.objective_loss(model, batch)
        return self.label_loss(model, batch)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epoch = epoch + 1
