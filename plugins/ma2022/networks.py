"""The networks of Ma et al. (2022): the MLPs (:func:`mlp`, applied per row by :func:`rowwise`), the
calibration ``φ`` and ZF of the calibrated channel (eq. 18), its end-to-end form from learned uplink
pilots (eq. 22), and the benchmarks' fully data-driven net and deep-unfolded WMMSE."""

from __future__ import annotations

import torch
from mimo_l2o_plugins.ma2022.pilots import onto_pilot_power
from torch import Tensor, nn

from mimo_l2o.solvers.beamformers import onto_budget, zero_forcing


def mlp(width_in: int, hidden: list[int], width_out: int, batch_norm: bool, zero_last: bool) -> nn.Sequential:
    """Hidden layers of Linear (+ BN) + ReLU and a linear output layer (zero-initialized if asked)."""
    layers: list[nn.Module] = []
    width = width_in
    for out in hidden:
        layers += [nn.Linear(width, out), *([nn.BatchNorm1d(out)] if batch_norm else []), nn.ReLU()]
        width = out
    last = nn.Linear(width, width_out)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


def rowwise(net: nn.Module, z: Tensor) -> Tensor:
    """``net`` applied to the real and imaginary parts of each row ``z[..., i, :]`` (complex, width ``n``),
    back as complex rows: one shared MLP per row (antenna or user)."""
    x = torch.view_as_real(z.resolve_conj()).flatten(-2)
    y = net(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
    return torch.view_as_complex(y.unflatten(-1, (-1, 2)).contiguous())


class Calibrator(nn.Module):
    """``φ``: each user's channel ``[..., M]`` (complex) → its calibrated channel ``[..., M]``, in units of
    ``scale``, one MLP for every user (module docstring)."""

    def __init__(self, antennas: int, hidden: list[int], batch_norm: bool, residual: bool, scale: float):
        super().__init__()
        self.net = mlp(2 * antennas, hidden, 2 * antennas, batch_norm, zero_last=residual)
        self.residual = residual
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, h: Tensor) -> Tensor:
        h = h / self.scale
        y = rowwise(self.net, h)  # re, im of each antenna in, the same out
        return h + y if self.residual else y


class CalibratedZF(nn.Module):
    """The beamformers ``h_ZF(F(H_DL))``: channels ``[B, 1, K, M, 2]`` (real, imaginary) → ``W [B, 1, M, K]``
    (complex64) on the BS's budget."""

    def __init__(self, calibrator: Calibrator, budget: Tensor):
        super().__init__()
        self.calibrator = calibrator
        self.register_buffer("budget", budget.clone().float())

    def forward(self, x: Tensor) -> Tensor:
        h = torch.view_as_complex(x.contiguous())  # [B, 1, K, M]
        return zero_forcing(self.calibrator(h).transpose(-1, -2), self.budget)


class ImplicitCalibratedZF(nn.Module):
    """Eq. (22): ``V = h_ZF(F ∘ H(f_LS(B(Y_p))))`` with learned pilots. Input ``[B, 1, M, K + L, 2]`` (the
    uplink channels and the pilots' noise, :func:`uplink_pilot_phase`) → ``W [B, 1, M, K]`` on the budget.

    * pilots ``X̃ [K, L]`` in units of ``√P_UL`` (learned, started at the DFT pilots), kept on
      ``‖x̃_k‖² <= L`` (:func:`onto_pilot_power`);
    * ``B``: an MLP shared by the antennas on each row of ``Y_p = H_UL X̃ + N`` (``2L`` values in and out,
      residual: it starts as the identity), antenna-wise permutation equivariant (Theorem 1);
    * ``f_LS``: ``Ĥ_UL = Ỹ X̃ᴴ (X̃ X̃ᴴ)⁻¹`` (needs ``L >= K``);
    * ``H``: the uplink→downlink map, an MLP shared by the users on each ``ĥ_UL,k`` (``2M`` in and out,
      residual: it starts as the uplink channel itself);
    * ``F``: the calibration ``φ`` (:class:`Calibrator`), then ZF scaled onto ``P_DL``.

    Without ``ls_calibrator`` and ``calibrator`` and with the pilots fixed (``learn_pilots=False``) it is
    the block-by-block baseline: LS of DFT pilots, the map, ZF.

    Signals are in units of constants fixed at construction (the received pilots' and the channels' RMS
    entries), so that the MLPs see values of order one.
    """

    def __init__(
        self,
        pilots: Tensor,
        ls_calibrator: nn.Module | None,
        mapping: nn.Module,
        calibrator: Calibrator | None,
        budget: Tensor,
        y_scale: float,
        h_scale: float,
        learn_pilots: bool = True,
    ):
        super().__init__()
        pilots = torch.view_as_real(pilots.to(torch.complex64)).clone()
        self.pilots_real = nn.Parameter(pilots, requires_grad=learn_pilots)
        self.ls_calibrator, self.mapping, self.calibrator = ls_calibrator, mapping, calibrator
        self.register_buffer("budget", budget.clone().float())
        self.register_buffer("y_scale", torch.tensor(float(y_scale)))
        self.register_buffer("h_scale", torch.tensor(float(h_scale)))

    def pilots(self) -> Tensor:
        """The learned pilots ``X̃ [K, L]`` on their power constraint."""
        return onto_pilot_power(torch.view_as_complex(self.pilots_real))

    def downlink_estimate(self, x: Tensor) -> Tensor:
        """``Ĥ_DL [B, 1, K, M]``, rows per user, in units of ``h_scale``: ``H(f_LS(B(Y_p)))``."""
        h_ul = self.uplink_estimate(x).transpose(-1, -2)
        return h_ul + rowwise(self.mapping, h_ul)  # H: the uplink→downlink map (residual)

    def uplink_estimate(self, x: Tensor) -> Tensor:
        """``Ĥ_UL [B, 1, M, K]`` (in units of ``h_scale``) from the input (the class docstring)."""
        z = torch.view_as_complex(x.contiguous())  # [B, 1, M, K + L]
        X = self.pilots()
        k = X.shape[0]
        H, N = z[..., :k], z[..., k:]
        Y = (H @ X + N) / self.y_scale  # the received pilots, eq. (7)
        if self.ls_calibrator is not None:
            Y = Y + rowwise(self.ls_calibrator, Y)  # B: antenna-wise calibration
        Xs = X / self.y_scale * self.h_scale  # LS in units of h_scale
        return torch.linalg.solve(Xs @ Xs.mH, Y @ Xs.mH, left=False)

    def forward(self, x: Tensor) -> Tensor:
        h_dl = self.downlink_estimate(x)
        if self.calibrator is not None:
            h_dl = self.calibrator(h_dl)  # F
        return zero_forcing(h_dl.transpose(-1, -2), self.budget)


class DataDrivenNet(nn.Module):
    """Channels ``[B, 1, K, M, 2]`` → ``W [B, 1, M, K]`` (complex64) on the BS's budget: one MLP from every
    channel's real and imaginary parts (in units of ``scale``) to every beamformer's, no structure."""

    def __init__(self, users: int, antennas: int, hidden: list[int], budget: Tensor, scale: float):
        super().__init__()
        self.net = mlp(2 * users * antennas, hidden, 2 * users * antennas, batch_norm=True, zero_last=False)
        self.users, self.antennas = users, antennas
        self.register_buffer("budget", budget.clone().float())
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        y = self.net(x.flatten(1) / self.scale).reshape(x.shape[0], 1, self.antennas, self.users, 2)
        return onto_budget(torch.view_as_complex(y.contiguous()), self.budget)


def wmmse_layer(H: Tensor, V: Tensor, noise: Tensor, budget: Tensor, log_scale: Tensor) -> Tensor:
    """One unfolded WMMSE iteration (Shi et al. 2011 for the MISO broadcast channel) on channels ``H [B, 1,
    M, K]`` (column ``k`` user ``k``'s) from ``V [B, 1, M, K]``: the MMSE receivers ``u_k``, the weights
    ``w_k = 1 / (1 − u_k* h_kᴴ v_k)``, then ``V = (Σ_k w_k |u_k|² h_k h_kᴴ + μ I)⁻¹ [w_k u_k h_k]`` scaled
    onto the budget, with ``μ = e^{log_scale} σ² Σ_k w_k |u_k|² / P`` (the multiplier of the power-normalized
    WMMSE, times a learned factor, instead of a bisection per iteration). The ``M × M`` inverse is taken
    as ``H (μ I + D HᴴH)⁻¹`` (``D = diag(w |u|²)``, the push-through identity): a ``K × K`` solve."""
    gain = H.mH @ V  # [B, 1, K, K]: h_kᴴ v_j
    signal = gain.diagonal(dim1=-2, dim2=-1)
    total = gain.abs().square().sum(-1) + noise.reshape(signal.shape).to(gain.real.dtype)
    u = signal / total
    w = 1 / (1 - (u.conj() * signal).real).clamp_min(1e-12)
    d = w * u.abs().square()
    mu = (
        log_scale.exp()
        * noise.reshape(signal.shape).to(d.dtype).mean(-1, keepdim=True)
        * d.sum(-1, keepdim=True)
    )
    mu = mu / budget.reshape(mu.shape).to(mu.dtype)
    k = H.shape[-1]
    eye = torch.eye(k, dtype=H.dtype, device=H.device)
    system = mu[..., None].to(H.dtype) * eye + d[..., :, None].to(H.dtype) * (H.mH @ H)
    coefficients = torch.linalg.solve(system, torch.diag_embed((w * u).to(H.dtype)))
    return onto_budget(H @ coefficients, budget.reshape(H.shape[0], -1))


class UnfoldedWMMSE(nn.Module):
    """``layers`` WMMSE iterations (:func:`wmmse_layer`), each with its learned multiplier factor, from MRT
    on the budget. Input ``[B, 1, K, M, 2]``, output ``W [B, 1, M, K]`` (complex64); the noise and budget
    are the trained setting's (:meth:`UnfoldedWMMSELearner.adapt` sets a shifted one's)."""

    def __init__(self, layers: int, budget: Tensor, noise: Tensor):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(layers))
        self.register_buffer("budget", budget.clone().float())
        self.register_buffer("noise", noise.clone().float())

    def forward(self, x: Tensor) -> Tensor:
        H = torch.view_as_complex(x.contiguous()).transpose(-1, -2)  # [B, 1, M, K]
        budget = self.budget.expand(H.shape[0], -1)
        noise = self.noise.expand(H.shape[0], -1)
        V = onto_budget(H, budget)  # MRT
        for t in range(self.log_scale.shape[0]):
            V = wmmse_layer(H, V, noise, budget, self.log_scale[t])
        return V
