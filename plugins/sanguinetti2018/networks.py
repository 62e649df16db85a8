"""The per-cell networks: :class:`PositionMLP` (Tables II-III) with its predicted-sum decoding
(:func:`scale_to_sum`) and :class:`PositionLSTM` (Table IV) with its averaging over pilot relabelings."""

from __future__ import annotations

import torch
from mimo_l2o_plugins.sanguinetti2018.config import InputFeatures
from mimo_l2o_plugins.sanguinetti2018.layers import GroupedLinear, GroupedLSTM
from mimo_l2o_plugins.sanguinetti2018.layout import CellLayout
from mimo_l2o_plugins.sanguinetti2018.position_features import CellFrames, cell_inputs
from torch import Tensor, nn


def scale_to_sum(outputs: Tensor) -> Tensor:
    """``[..., K+1]`` (powers / budget, sum / budget) → ``[..., K]``: the powers clamped at 0 and scaled
    to add up to the sum clamped to ``[0, 1]`` (an even split of it where every power is 0)."""
    k = outputs.shape[-1] - 1
    p = outputs[..., :k].clamp_min(0)
    total = outputs[..., k:].clamp(0, 1)
    have = p.sum(-1, keepdim=True)
    return torch.where(have > 0, p * (total / have.clamp_min(torch.finfo(p.dtype).tiny)), total / k)


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
