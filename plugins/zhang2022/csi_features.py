"""What the CSI-Net reads beside the uplink columns (``csi_features``): each column's products
``|b| b`` in a 4x oversampled DFT beamspace (``beamspace``) and the matrix pencil's path features
(``paths``), both eq. (40)'s map of a path's uplink coefficient to its downlink one."""

from __future__ import annotations

import math

import torch
from torch import Tensor

OVERSAMPLING = 4  # beams per antenna of the beamspace features


def beamspace_grid(n: int) -> Tensor:
    """``F [4N, N]`` complex128: the ``4N``-point DFT rows over ``N`` antennas, over ``√N`` (unit-norm
    beams)."""
    beams = OVERSAMPLING * n
    a = torch.arange(beams, dtype=torch.float64)[:, None] * torch.arange(n, dtype=torch.float64)
    angle = -2 * math.pi * torch.remainder(a, beams) / beams
    return torch.complex(torch.cos(angle), torch.sin(angle)) / math.sqrt(n)


def beamspace_products(columns: Tensor, grid: Tensor) -> Tensor:
    """``|b| b √N`` for ``b = F x`` of each column ``x`` in ``columns [..., N]`` (complex): real and
    imaginary parts ``[..., 8N]``, of order one for columns of unit norm."""
    b = columns.to(grid.dtype) @ grid.T
    return torch.view_as_real(b.abs() * b * math.sqrt(grid.shape[-1])).flatten(-2)


PATH_FEATURE_BOUND = 2.0  # the path features' largest norm, in units of the column's energy ‖x‖²


def path_features(columns: Tensor, paths: int) -> Tensor:
    """``√N Σ_l |u_l| u_l z_l^m`` for each column ``x [..., N]`` (complex128) seen as ``paths`` plane waves
    ``x_m ≈ Σ_l u_l z_l^m`` (``|z_l| = 1``): the matrix pencil of the column's ``(N − P) × (P + 1)`` Hankel
    matrix (``P = N // 2``; its ``paths`` leading left singular vectors, shifted, give the ``z_l``), then
    the ``u_l`` by least squares. Exact for a column of at most ``paths`` waves without noise, whatever
    their spacing; eq. (40) makes each path's downlink coefficient ``|u_l| u_l``. Its norm is bounded by
    ``PATH_FEATURE_BOUND ‖x‖²`` (scaled down above it: under noise the pencil can split a wave into close
    ones with large opposite amplitudes, and those outliers made training diverge with pilots). Zero for a
    zero column."""
    n = columns.shape[-1]
    pencil = n // 2
    hankel = columns[..., torch.arange(n - pencil)[:, None] + torch.arange(pencil + 1)]
    left = torch.linalg.svd(hankel, full_matrices=False)[0][..., :paths]
    z = torch.linalg.eigvals(torch.linalg.pinv(left[..., :-1, :]) @ left[..., 1:, :])
    phase = (
        torch.angle(z).unsqueeze(-2)
        * torch.arange(n, dtype=columns.real.dtype, device=columns.device)[:, None]
    )
    waves = torch.polar(torch.ones_like(phase), phase)  # [..., N, paths]: z_l^m with |z_l| = 1
    u = (torch.linalg.pinv(waves) @ columns.unsqueeze(-1)).squeeze(-1)  # pinv: any device, any rank
    out = (waves @ (u.abs() * u).unsqueeze(-1)).squeeze(-1) * math.sqrt(n)
    out = torch.where(torch.isfinite(out), out, torch.zeros_like(out))
    # separated waves give ‖out‖ ≤ ‖x‖² (√N ‖Σ|u|u z^m‖ = N (Σ|u|⁴)^½ ≤ N Σ|u|²); far above it, the fit has
    # split one wave, under noise, into close ones of large opposite amplitudes: bounded at 2 ‖x‖²
    energy = columns.abs().square().sum(-1, keepdim=True)
    size = out.abs().square().sum(-1, keepdim=True).sqrt()
    return out * (PATH_FEATURE_BOUND * energy / size.clamp_min(1e-300)).clamp(max=1.0)
