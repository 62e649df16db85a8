"""What the networks read of the UE positions: each cell's frame, as coordinates or polar features
(:class:`CellFrames`), standardized with the training inputs' statistics (:func:`cell_inputs`)."""

from __future__ import annotations

import torch
from mimo_l2o_plugins.sanguinetti2018.config import InputFeatures
from mimo_l2o_plugins.sanguinetti2018.layout import CellLayout
from torch import Tensor, nn


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
