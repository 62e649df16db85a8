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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from mimo_l2o.errors import require
from mimo_l2o.learner import Learner, LearnerConfig, LearnerSpec, OptimizerName, Schedule, TrainConfig
from mimo_l2o.problems.power_control import FeasiblePower, project_onto_budgets

FEATURE = "user_positions"
# added to the squared label (or label norm) in the relative MSE: labels are powers / budget, of
# order 1e-4 to 1, so only labels below ~1e-4 (none from the fairness solvers) are weighed less
REL_EPS = 1e-8
# smallest power / budget a log-output target takes (optimal powers are positive; this guards zeros)
LOG_FLOOR = 1e-6


# relative margin below each budget in the final decision: float32 powers scaled onto a budget can
# sum to it plus a rounding (one ulp), which test/constraint_violation would report
BUDGET_MARGIN = 1e-5


class TrainOn(str, Enum):
    labels = "labels"  # the solver's powers (the paper): relative MSE, or MSE of log powers
    objective = "objective"  # the run's objective on the training problems (after label pretraining)


class RelativeMSE(str, Enum):
    element = "element"  # mean over every output of (ŷ − y)² / (y² + ε): each power's relative error
    cell = "cell"  # mean over cells of ‖ŷ_j − y_j‖² / (‖y_j‖² + ε): the error relative to the cell's vector


# ---------------------------------------------------------------------------------------------
# Layout of the network
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellLayout:
    """``L`` cells with ``K`` users each, their sites and budgets, from a :class:`LearnerSpec`.

    Parameters
    ----------
    num_cells, num_users : int
        ``L`` and the users per cell ``K``; user ``l·K + k`` is UE ``k`` of cell ``l``.
    sites : Tensor ``[L, 2]``
        Each cell's BS in units of the geometry's scale.
    cell_budget : Tensor ``[L]``
        The sum of the budgets of each cell's users (the cell's one budget in cellular massive MIMO):
        what the networks' outputs are fractions of.
    wrap : bool
        Offsets wrap around the unit torus (cells on a ``√L × √L`` grid).
    scale : float
        The geometry's length (metres) that positions are divided by.
    """

    num_cells: int
    num_users: int
    sites: Tensor
    cell_budget: Tensor
    wrap: bool
    scale: float

    @classmethod
    def from_spec(cls, spec: LearnerSpec) -> CellLayout:
        geometry, problem = spec.geometry, spec.problem
        require(geometry is not None, "scenario", "the position learners need a scenario with positions")
        require(geometry.user_site is not None, "scenario", "the position learners need users in cells")
        site = geometry.user_site.cpu().long()
        nl, users = len(geometry.sites), len(site)
        require(users % nl == 0, "scenario", f"{users} users do not split into {nl} cells of equal size")
        k = users // nl
        require(
            torch.equal(site, torch.arange(nl).repeat_interleave(k)),
            "scenario",
            "users must be ordered l·K + k, K per cell",
        )
        require(
            problem.num_vars == users and problem.owner is None,
            "scenario",
            f"the position learners need one power variable per user, got {problem.num_vars} for {users}",
        )
        group = problem.group.cpu().long()
        group_cell = torch.full((problem.num_groups,), -1).scatter_reduce(0, group, site, "amax")
        require(
            torch.equal(group_cell[group], site),
            "scenario",
            "every budget group must lie within one cell",
        )
        cell_budget = torch.zeros(nl).index_add_(0, group_cell, problem.budget[0].float().cpu())
        sites = geometry.sites.double() / geometry.scale
        if geometry.wrap:
            g = math.isqrt(nl)
            idx = torch.arange(nl)
            grid = (torch.stack([idx % g, idx // g], dim=1).double() + 0.5) / g
            require(
                g * g == nl and torch.allclose(sites, grid),
                "scenario",
                "wrapped distances need the cells on a sqrt(L) x sqrt(L) grid",
            )
        shape = spec.input_shapes.get(FEATURE)
        require(shape is not None, "scenario", f"the learner needs the feature '{FEATURE}'")
        require(
            math.prod(shape) == 2 * nl * k,
            "scenario",
            f"'{FEATURE}' has shape {tuple(shape)}; expected {2 * nl * k} = 2·L·K coordinates",
        )
        return cls(nl, k, sites, cell_budget, bool(geometry.wrap), float(geometry.scale))

    @property
    def grid(self) -> int:
        return math.isqrt(self.num_cells)

    def bs_positions(self) -> Tensor:
        """``[L, 2]`` BS positions in units of the scale (cellular: cell ``l`` at column ``l % g``, row
        ``l // g`` of the unit square)."""
        return self.sites

    def cell_order(self) -> Tensor:
        """``[L, L]``: row ``j`` lists the cells as cell ``j`` sees them, ``j`` itself first. On a wrapped
        grid by their grid offset from cell ``j`` (the ``m``-th entry is the cell at
        ``(col_j + m % g, row_j + m // g)`` mod ``g``), so that every cell sees the same layout; otherwise
        the other cells in index order."""
        idx = torch.arange(self.num_cells)
        if not self.wrap:
            return torch.stack([torch.cat([idx[j : j + 1], idx[idx != j]]) for j in range(self.num_cells)])
        g = self.grid
        col, row = idx % g, idx // g
        return ((col[:, None] + col[None, :]) % g) + g * ((row[:, None] + row[None, :]) % g)


class InputFeatures(str, Enum):
    coordinates = "coordinates"  # the 2KL (x, y) coordinates (the paper)
    polar = "polar"  # per UE and BS: log distance and sine of the angle, from the wrapped offset


class CellFrames(nn.Module):
    """Positions ``[B, L·K·2]`` → per-cell inputs ``[C, B, L·K·F]``, cell-major, ``F`` per UE
    (:attr:`step_width`).

    ``shared=False``: ``C = 1``, every cell's network sees the same input. ``shared=True``: ``C = L``;
    cell ``j``'s frame has BS ``j`` at the origin and the cells reordered as cell ``j`` sees them
    (:meth:`CellLayout.cell_order`), own cell first.

    ``features``: ``coordinates`` gives each UE's (x, y), in cell ``j``'s frame translated (with
    wrap-around where the layout wraps, ``x' = ((x − bs_j + 0.5) mod 1) − 0.5``). ``polar`` gives, for
    each UE and each BS ``m`` (in the frame's cell order), the (wrapped) offset
    ``δ = ((x − bs_m + 0.5) mod 1) − 0.5`` as ``(log ‖δ‖, δ_y / ‖δ‖)``: the log distance, in which the
    path loss is linear, and the sine of the angle, the ULA's spatial frequency, which sets the
    correlation and so who contaminates whom (the cosine adds nothing the model uses: it enters as
    cos² = 1 − sin²). The offsets are those of the scenario's gains (the nearest wrapped copy); the
    input is still the positions alone.
    """

    def __init__(self, layout: CellLayout, shared: bool, features: InputFeatures = InputFeatures.coordinates):
        super().__init__()
        self.layout, self.shared, self.features = layout, shared, InputFeatures(features)
        self.register_buffer("bs", layout.bs_positions().float())
        self.register_buffer("order", layout.cell_order())
        nl, k = layout.num_cells, layout.num_users
        order = self.order if shared else torch.arange(nl)[None]  # [C, L]
        # each frame's entries of the [L(cell), K, L(BS), 2] table of every UE against every BS, flat,
        # cells in the frame's order: polar takes every BS (in that order too), coordinates the frame's own
        pairs = torch.arange(nl * k * nl * 2).view(nl, k, nl, 2)
        if self.features == InputFeatures.polar:
            index = [pairs[o][:, :, o] for o in order]
        else:
            index = [pairs[o][:, :, j] for j, o in enumerate(order)]
        self.register_buffer("index", torch.stack([i.flatten() for i in index]))

    @property
    def step_width(self) -> int:
        """Input values per UE: 2 coordinates, or 2 per BS (``polar``)."""
        return 2 if self.features == InputFeatures.coordinates else 2 * self.layout.num_cells

    @property
    def width(self) -> int:
        """Input values per cell frame, ``L·K·F``."""
        return self.layout.num_cells * self.layout.num_users * self.step_width

    def forward(self, x: Tensor) -> Tensor:
        if self.features == InputFeatures.coordinates and not self.shared:
            return x.unsqueeze(0)
        pos = x.view(x.shape[0], self.layout.num_cells, self.layout.num_users, 2)
        # every UE against every BS once ([B, L, K, L(BS), 2]); the frames only pick and reorder them
        delta = pos[:, :, :, None, :] - self.bs
        if self.layout.wrap:  # the nearest copy on the unit torus
            delta = torch.remainder(delta + 0.5, 1.0) - 0.5
        if self.features == InputFeatures.polar:
            r = torch.linalg.vector_norm(delta, dim=-1, keepdim=True).clamp_min(1e-6)
            delta = torch.cat([r.log(), delta[..., 1:] / r], dim=-1)  # (log r, sin θ)
        return delta.flatten(1)[:, self.index].transpose(0, 1)


class Standardize(nn.Module):
    """``(h − mean) / std`` per input feature, the statistics of the training inputs' frames (over
    samples and cells alike, so a shared network stays equivariant)."""

    def __init__(self, frames: Tensor):
        super().__init__()
        flat = frames.reshape(-1, frames.shape[-1]).double()
        self.register_buffer("mean", flat.mean(0).float())
        self.register_buffer("std", flat.std(0).clamp_min(1e-6).float())

    def forward(self, h: Tensor) -> Tensor:
        return (h - self.mean) / self.std


def cell_inputs(frames: CellFrames, train_inputs: Tensor | None = None) -> nn.Module:
    """The per-cell input module: ``frames``, then, given training inputs, :class:`Standardize` with
    their statistics."""
    if train_inputs is None:
        return frames
    with torch.no_grad():
        return nn.Sequential(frames, Standardize(frames(train_inputs.float())))


# ---------------------------------------------------------------------------------------------
# Grouped layers: one set of weights per cell (or one shared), applied with batched matmuls
# ---------------------------------------------------------------------------------------------
def glorot_uniform_(weight: Tensor, generator: torch.Generator) -> None:
    """Keras' default kernel initialiser on ``[G, in, out]``: U(±√(6 / (in + out)))."""
    fan_in, fan_out = weight.shape[-2], weight.shape[-1]
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.copy_((torch.rand(weight.shape, generator=generator, dtype=weight.dtype) * 2 - 1) * bound)


class GroupedLinear(nn.Module):
    """``G`` dense layers at once: ``x [C, B, in] → [max(C, G), B, out]`` with weights ``[G, in, out]``
    (``C`` or ``G`` may be 1 and is then broadcast)."""

    def __init__(self, groups: int, in_features: int, out_features: int, generator: torch.Generator):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(groups, 1, out_features))
        glorot_uniform_(self.weight, generator)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] == self.weight.shape[0]:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.matmul(x, self.weight) + self.bias


class GroupedLSTM(nn.Module):
    """``G`` Keras-style LSTM layers at once (gates i, f, g, o; one bias; forget bias 1; Glorot input
    kernel, orthogonal recurrent kernel): ``x [C, B, T, in] → h [max(C, G), B, T, H]``.

    Parameters per group: ``4H (in + H + 1)``, as Keras counts them.
    """

    def __init__(self, groups: int, in_features: int, hidden: int, generator: torch.Generator):
        super().__init__()
        self.hidden = hidden
        self.weight_ih = nn.Parameter(torch.empty(groups, in_features, 4 * hidden))
        self.weight_hh = nn.Parameter(torch.empty(groups, hidden, 4 * hidden))
        bias = torch.zeros(groups, 1, 4 * hidden)
        bias[..., hidden : 2 * hidden] = 1.0  # Keras' unit_forget_bias
        self.bias = nn.Parameter(bias)
        glorot_uniform_(self.weight_ih, generator)
        with torch.no_grad():
            for group in range(groups):
                self.weight_hh[group].copy_(
                    nn.init.orthogonal_(torch.empty(hidden, 4 * hidden), generator=generator)
                )

    def forward(self, x: Tensor) -> Tensor:
        cells, batch, steps, _ = x.shape
        # the input projection of every step at once: one [B·T, in] @ [in, 4H] product per cell
        proj = torch.matmul(x.reshape(cells, batch * steps, -1), self.weight_ih) + self.bias
        proj = proj.view(-1, batch, steps, proj.shape[-1])  # [G', B, T, 4H]
        h = c = None
        out = []
        for t in range(steps):
            gates = proj[:, :, t] if h is None else proj[:, :, t] + torch.matmul(h, self.weight_hh)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = (
                torch.sigmoid(i) * torch.tanh(g)
                if c is None
                else torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            )
            h = torch.sigmoid(o) * torch.tanh(c)
            out.append(h)
        return torch.stack(out, dim=2)


# ---------------------------------------------------------------------------------------------
# Loss and decoding
# ---------------------------------------------------------------------------------------------
def relative_mse(
    prediction: Tensor, target: Tensor, kind: RelativeMSE = RelativeMSE.element, floor: float = 0.0
) -> Tensor:
    """The relative MSE of ``[B, L, D]`` predictions, a scalar.

    ``element``: the mean over samples, cells and outputs of ``(ŷ − y)² / (max(y², f) + 1e-8)``;
    ``cell``: the mean over samples and cells of ``‖ŷ_j − y_j‖² / (max(‖y_j‖², f) + 1e-8)`` (norms over
    ``D``), with ``f`` the ``floor`` (:func:`label_floor`; 0: the paper's loss).
    """
    err = _per_term((prediction - target).square(), kind)
    return (err / (_per_term(target.square(), kind).clamp_min(floor) + REL_EPS)).mean()


def _per_term(square: Tensor, kind: RelativeMSE) -> Tensor:
    """Squares ``[B, L, D]`` → one per term of the relative MSE: summed over ``D`` for ``cell``."""
    return square.sum(-1) if RelativeMSE(kind) == RelativeMSE.cell else square


def label_floor(targets: Tensor, kind: RelativeMSE, fraction: float) -> float:
    """``fraction`` times the mean of what :func:`relative_mse` divides by (``‖y_j‖²`` per cell, or
    ``y²`` per output) over the training targets ``[B, L, D]``: a label smaller than that is weighed as
    if it were that large, so that a cell the solver switched off (``y_j = 0``, which sum-rate solvers
    do) does not weigh 1e8 times a typical one and pull every prediction to 0."""
    return fraction * float(_per_term(targets.double().square(), kind).mean())


def cell_targets(labels: Tensor, budget: Tensor, with_sum: bool) -> Tensor:
    """Labels ``[B, L·K]`` in W → ``[B, L, K(+1)]``: the powers and (``with_sum``) their sum, divided by
    each cell's budget ``[L]``."""
    y = labels.view(labels.shape[0], budget.shape[0], -1) / budget[:, None]
    return torch.cat([y, y.sum(-1, keepdim=True)], dim=-1) if with_sum else y


def scale_to_sum(outputs: Tensor) -> Tensor:
    """``[..., K+1]`` (powers / budget, sum / budget) → ``[..., K]``: the powers clamped at 0 and scaled
    to add up to the sum clamped to ``[0, 1]`` (an even split of it where every power is 0)."""
    k = outputs.shape[-1] - 1
    p = outputs[..., :k].clamp_min(0)
    total = outputs[..., k:].clamp(0, 1)
    have = p.sum(-1, keepdim=True)
    return torch.where(have > 0, p * (total / have.clamp_min(torch.finfo(p.dtype).tiny)), total / k)


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


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
class PositionMLP(nn.Module):
    """Per-cell MLPs (Tables II-III): positions ``[B, 2KL]`` → powers ``[B, L·K]`` in W.

    :meth:`outputs` gives the ``K + 1`` linear outputs per cell ``[B, L, K+1]`` (powers and their sum,
    divided by the budget) that the loss compares with the labels. Given ``train_inputs``, the
    per-cell inputs are standardized with their statistics (:func:`cell_inputs`).
    """

    def __init__(
        self,
        layout: CellLayout,
        budget: Tensor,
        hidden: list[int],
        k_layer: bool,
        shared: bool,
        use_sum: bool,
        generator: torch.Generator,
        train_inputs: Tensor | None = None,
        features: InputFeatures = InputFeatures.coordinates,
    ):
        super().__init__()
        self.use_sum = use_sum
        frames = CellFrames(layout, shared, features)
        self.frames = cell_inputs(frames, train_inputs)
        self.register_buffer("budget", budget.clone().float())
        groups, k = (1 if shared else layout.num_cells), layout.num_users
        widths = [frames.width, *hidden, *([k] if k_layer else []), k + 1]
        self.layers = nn.ModuleList(
            GroupedLinear(groups, a, b, generator) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def outputs(self, x: Tensor) -> Tensor:
        h = self.frames(x)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = nn.functional.elu(h)
        return h.transpose(0, 1)  # [L, B, K+1] (a network per cell, or a shared one on L frames)

    def forward(self, x: Tensor) -> Tensor:
        y = self.outputs(x)
        k = y.shape[-1] - 1
        p = scale_to_sum(y) if self.use_sum else y[..., :k]
        return (p * self.budget[:, None]).flatten(1)


class PositionLSTM(nn.Module):
    """Per-cell recurrent networks (Table IV): positions ``[B, 2KL]`` → powers ``[B, L·K]`` in W.

    The input is a sequence: ``single`` feeds the ``2KL`` coordinates as one step (the input size that
    Table IV's total of 509,829 parameters implies), ``positions`` the ``L·K`` UEs as steps of 2
    coordinates (cell by cell, UE by UE; in ``shared`` mode the own cell first).
    :meth:`outputs` gives the ReLU outputs ``[B, L, K]`` (powers / budget), or with ``log_output`` the
    linear ``log(power / budget)``. Given ``train_inputs``, the per-cell inputs are standardized with
    their statistics (:func:`cell_inputs`).

    ``pilot_shifts = S > 1``: in eval mode the decision averages :meth:`outputs` over the first ``S``
    cyclic relabelings of the pilots (UE ``k`` of every cell renamed ``k − s mod K``, ``s < S``), each
    mapped back to the original UEs (:meth:`policy_outputs`). A UE's pilot index carries no meaning
    beyond who shares it, so every relabeling is the same network; averaging the network's answers
    over them removes part of its error. With ``S = K`` the policy is exactly equivariant to cyclic
    relabelings. Training mode, and :meth:`network` always, use the network alone.
    """

    def __init__(
        self,
        layout: CellLayout,
        budget: Tensor,
        lstm: list[int],
        dense: list[int],
        single_step: bool,
        shared: bool,
        generator: torch.Generator,
        train_inputs: Tensor | None = None,
        log_output: bool = False,
        features: InputFeatures = InputFeatures.coordinates,
        pilot_shifts: int = 1,
    ):
        super().__init__()
        self.single_step = single_step
        self.log_output = log_output
        self.layout = layout
        k = layout.num_users
        shifts = torch.arange(min(pilot_shifts, k))[:, None]
        # relabeling s: new UE u is old UE (u + s) mod K; its answer for old UE k sits at (k − s) mod K
        self.register_buffer("relabel", (torch.arange(k) + shifts) % k)  # [S, K]
        self.register_buffer("restore", (torch.arange(k) - shifts) % k)
        frames = CellFrames(layout, shared, features)
        self.step_width = frames.step_width
        self.frames = cell_inputs(frames, train_inputs)
        self.register_buffer("budget", budget.clone().float())
        groups, k = (1 if shared else layout.num_cells), layout.num_users
        width = frames.width if single_step else frames.step_width
        recurrent = []
        for hidden in lstm:
            recurrent.append(GroupedLSTM(groups, width, hidden, generator))
            width = hidden
        self.recurrent = nn.ModuleList(recurrent)
        widths = [width, *dense, k]
        self.dense = nn.ModuleList(
            GroupedLinear(groups, a, b, generator) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def outputs(self, x: Tensor) -> Tensor:
        h = self.frames(x)  # [C, B, L·K·F]
        h = h.unsqueeze(2) if self.single_step else h.view(*h.shape[:2], -1, self.step_width)  # [C, B, T, F]
        for layer in self.recurrent:
            h = layer(h)
        h = h[:, :, -1]
        for i, layer in enumerate(self.dense):
            h = layer(h)
            if not (self.log_output and i == len(self.dense) - 1):
                h = torch.relu(h)
        return h.transpose(0, 1)

    def policy_outputs(self, x: Tensor) -> Tensor:
        """:meth:`outputs`, averaged over the pilot relabelings in eval mode (class docstring)."""
        shifts = self.relabel.shape[0]
        if self.training or shifts == 1:
            return self.outputs(x)
        b, nl, k = x.shape[0], self.layout.num_cells, self.layout.num_users
        pos = x.view(b, nl, k, 2)[:, :, self.relabel]  # [B, L, S, K, 2]
        y = self.outputs(pos.transpose(1, 2).reshape(b * shifts, -1)).view(b, shifts, nl, k)
        back = y.gather(3, self.restore[None, :, None, :].expand(b, shifts, nl, k))
        return back.mean(1)

    def decode(self, y: Tensor) -> Tensor:
        """Outputs ``[B, L, K]`` → powers ``[B, L·K]`` in W."""
        # a log output is capped at log 1: no single power above the budget (and never inf)
        return ((y.clamp(max=0.0).exp() if self.log_output else y) * self.budget[:, None]).flatten(1)

    def network(self, x: Tensor) -> Tensor:
        """The powers of the network alone, without the averaging over pilot relabelings."""
        return self.decode(self.outputs(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.policy_outputs(x))


# ---------------------------------------------------------------------------------------------
# Learners
# ---------------------------------------------------------------------------------------------
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


class PowerOutput(str, Enum):
    relu = "relu"  # ReLU powers / budget, relative MSE (Table IV)
    log = "log"  # linear log(power / budget), MSE of the log powers: every UE's power to a relative accuracy


class LSTMSequence(str, Enum):
    single = "single"  # the 2KL coordinates as one step (Table IV's parameter total)
    positions = "positions"  # the L·K UEs as steps of (x, y)


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


class PositionMLPLearner(_PositionLearner):
    """Sanguinetti et al. (2018), Tables II-III: per-cell MLPs from UE positions to powers and their sum."""

    display_name = "NN (positions)"

    Config = PositionMLPConfig
    with_sum = True

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        cfg = self.config
        self.start(generator)
        return PositionMLP(
            self.layout,
            self.layout.cell_budget,
            list(cfg.hidden),
            cfg.k_layer,
            cfg.shared,
            cfg.use_sum,
            generator,
            train_inputs if cfg.standardize else None,
            features=InputFeatures(cfg.features),
        )


class PositionLSTMLearner(_PositionLearner):
    """Sanguinetti et al. (2018), Table IV: per-cell LSTM networks from UE positions to powers."""

    display_name = "LSTM (positions)"

    Config = PositionLSTMConfig

    @property
    def reports_raw(self) -> bool:
        """With pilot averaging, ``test/objective_ratio_raw`` reports the network alone."""
        return min(self.config.pilot_shifts, self.layout.num_users) > 1

    def raw_output(self, model: nn.Module, inputs: Tensor) -> Tensor:
        return model.network(inputs)

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        cfg = self.config
        self.start(generator)
        return PositionLSTM(
            self.layout,
            self.layout.cell_budget,
            list(cfg.lstm),
            list(cfg.dense),
            LSTMSequence(cfg.sequence) == LSTMSequence.single,
            cfg.shared,
            generator,
            train_inputs if cfg.standardize else None,
            log_output=PowerOutput(cfg.output) == PowerOutput.log,
            features=InputFeatures(cfg.features),
            pilot_shifts=cfg.pilot_shifts,
        )

    def label_loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        if PowerOutput(self.config.output) == PowerOutput.log:
            target = self.targets(batch["labels"]).clamp_min(LOG_FLOOR).log()
            return (model.outputs(batch["inputs"]) - target).square().mean()
        return super().label_loss(model, batch)
