"""The per-link network of the model-driven learner (Sec. VI-C): one CSI-Net and one Power-Net at every
BS, each reading only its own uplink observations, with the SLNR structure of eq. (35)
(:class:`MulticellNet`); in one cell it recovers with eq. (7), (23), ZF or eq. (35)."""

from __future__ import annotations

from typing import Any

import torch
from mimo_l2o_plugins.zhang2022.config import CSIFeatures, ModelDrivenConfig, Recovery, Sharing, Variant
from mimo_l2o_plugins.zhang2022.csi_features import OVERSAMPLING, beamspace_grid, beamspace_products
from mimo_l2o_plugins.zhang2022.networks import mlp
from torch import Tensor, nn

from mimo_l2o.problems.beamforming import BeamformingProblem
from mimo_l2o.solvers import beamformers as bf


class MulticellNet(nn.Module):
    """The distributed learner of Sec. VI-C: one CSI-Net and one Power-Net, the same at every BS, each BS
    reading only its own uplink information, and the SLNR structure (eq. 35) as the recovery.

    BS ``c`` sees its uplink channels (or LS estimates) to all ``U = N_c·K`` users, its own users first
    (users in the cell order ``c, c+1, …``): ``[U, N]``. The channels span many decades (a served user
    10 m away, another cell's 600 m), so each user's column enters as its direction ``x_u / ‖x_u‖`` and
    its standardized log gain ``log ‖x_u‖²``, and the CSI-Net gives the downlink column in units of
    ``‖x_u‖``. ``L_H`` is each BS's squared error over the energy it observed, ``Σ_u ‖ĥ_u − h_u‖² /
    Σ_u ‖x_u‖²`` (eq. 39 per BS): a column weighs as much as its gain, as in the paper's absolute L_H
    (eq. 8); in each column's own units the weak columns of far users, which the pilots barely see,
    took the net's capacity from the strong ones (the rate fell from 0.85 to 0.74 of WMMSE over five
    epochs while that L_H fell). The Power-Net gives the BS's ``K`` powers (softmax × P). Eq. (35):
    ``w_k = √p_k (I + p_k/σ² Σ_u ĥ_u ĥ_uᴴ)⁻¹ ĥ_k / ‖·‖`` over every user ``u``, the BS's own estimates only.
    ``variant: channel_slnr`` is the paper's benchmark: the CSI-Net alone, then SLNR alternating (eq. 32
    and the power step of eq. 31) on its channels; ``channel_zf`` ZF of the BS's own users.
    """

    def __init__(self, cfg: ModelDrivenConfig, cells: int, n: int, k: int, budget: float, noise: float, x):
        super().__init__()
        self.cells, self.n, self.k, self.users = cells, n, k, cells * k
        self.variant = Variant(cfg.variant)
        self.recovery = Recovery(cfg.recovery)
        self.zf = self.recovery == Recovery.zf
        # in one cell eq. (7) or (23) with the Power-Net's p and q; in several, eq. (35) with p alone
        self.dual = cells == 1 and self.recovery in (Recovery.structure, Recovery.reduced)
        self.register_buffer("budget", torch.tensor(budget, dtype=torch.float64))
        self.register_buffer("noise", torch.tensor(noise, dtype=torch.float64))
        # the cell order of each BS: BS c reads users (c·K + j) mod U, its own first
        order = (torch.arange(cells)[:, None] * k + torch.arange(self.users)) % self.users
        self.register_buffer("order", order)
        self.register_buffer("inverse", torch.argsort(order, dim=-1))
        self.features = CSIFeatures(cfg.csi_features or CSIFeatures.beamspace)
        log_gain = self._log_gain(self.split(x)[0])
        self.register_buffer("gain_mean", log_gain.mean())
        self.register_buffer("gain_std", log_gain.std().clamp_min(1e-6))
        full = 2 * n * self.users  # 0: 2 N_t U; the paper's 2 N_t N_c² (7 times wider) is its preset's
        self.sharing = Sharing(cfg.csi_sharing or Sharing.per_user)
        beamspace = self.features in (CSIFeatures.beamspace, CSIFeatures.paths)
        self.column_width = (
            2 * n
            + 1
            + (2 * OVERSAMPLING * n if beamspace else 0)
            + (2 * n if self.features == CSIFeatures.paths else 0)
        )
        if beamspace:
            self.register_buffer("grid", beamspace_grid(n))
        width_in = self.users * self.column_width
        if self.sharing == Sharing.joint:
            self.csi = mlp(width_in, cfg.csi_width or full, cfg.csi_layers, 2 * n * self.users, "tanh")
        else:  # one column at a time, with the user's identity (its pilot), which the BS knows
            width = cfg.csi_width or full
            self.csi = mlp(self.column_width + self.users, width, cfg.csi_layers, 2 * n, "tanh")
        self.power = (
            mlp(width_in, cfg.power_width or full, cfg.power_layers, 2 * k if self.dual else k, "relu")
            if self.variant == Variant.hybrid
            else None
        )
        # the linear part of eq. (40)'s map, one per link identity: A x + B (|Fx| Fx) in absolute units,
        # A·direction + ‖x‖ B·(|F d| F d) in the CSI-Net's (zero at the start: the MLP's output alone)
        self.skip = (
            nn.Parameter(torch.zeros(self.users, self.column_width - 1, 2 * n)) if cfg.csi_skip else None
        )
        if self.skip is not None:
            self.register_buffer("gain_scale", log_gain.mul(0.5).exp().mean())

    @staticmethod
    def _log_gain(h: Tensor) -> Tensor:
        return h.abs().square().sum(-1).clamp_min(1e-300).log()

    def split(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Inputs ``[B, C, U, N or 2N, 2]`` → the uplink columns ``[B, C, U, N]`` (complex) and, with
        ``csi_features: paths``, their :func:`path_features` (else ``None``)."""
        h = torch.view_as_complex(x.contiguous())
        return (h[..., : self.n], h[..., self.n :]) if self.features == CSIFeatures.paths else (h, None)

    def views(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """From inputs ``[B, C, U, N, 2]``: each BS's features ``[B·C, U·w]`` (float32; per column its
        direction, log gain and, for ``beamspace``, its beamspace products: ``w = column_width``), and the
        norms ``[B, C, U]`` and directions ``[B, C, U, N]`` (complex) in its user order."""
        h, paths = self.split(x)
        b = h.shape[0]
        index = self.order[None, :, :, None].expand(b, -1, -1, self.n)
        h = h.gather(2, index)
        norm = h.abs().square().sum(-1).sqrt().clamp_min(1e-300)
        direction = h / norm.unsqueeze(-1)
        gain = (self._log_gain(h) - self.gain_mean) / self.gain_std
        parts = [torch.view_as_real(direction).flatten(-2), gain.unsqueeze(-1)]
        if self.features in (CSIFeatures.beamspace, CSIFeatures.paths):
            parts.append(beamspace_products(direction, self.grid))
        if paths is not None:  # of degree two in the column: the direction's
            parts.append(torch.view_as_real(paths.gather(2, index) / norm.square().unsqueeze(-1)).flatten(-2))
        feats = torch.cat(parts, -1)
        return feats.reshape(b * self.cells, -1).float(), norm, direction

    def relative_channel(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The CSI-Net's downlink columns in units of the observed uplink norms ``[B, C, U, N]`` (BS
        order), and those norms ``[B, C, U]``."""
        feats, norm, _ = self.views(x)
        if self.sharing == Sharing.joint:
            out = self.csi(feats)
        else:
            columns = feats.reshape(-1, self.cells, self.users, self.column_width)
            who = nn.functional.one_hot(self.order, self.users).to(columns)  # [C, U, U]
            who = who.expand(columns.shape[0], -1, -1, -1)
            out = self.csi(torch.cat((columns, who), -1).reshape(-1, self.column_width + self.users))
        out = out.double().reshape(-1, self.cells, self.users, self.n, 2)
        if self.skip is not None:
            out = out + self.linear_part(feats, norm).reshape(out.shape)
        return torch.view_as_complex(out.contiguous()), norm

    def linear_part(self, feats: Tensor, norm: Tensor) -> Tensor:
        """The skip's ``A d + (‖x‖/ν) B f(d)`` of each link ``[B, C, U, 2N]``: ``d`` the direction, ``f`` its
        features of degree two (beamspace, paths), ``ν`` the mean uplink norm of the training set; from the
        features ``[B·C, U·w]`` and norms ``[B, C, U]`` of :meth:`views`."""
        columns = feats.double().reshape(-1, self.cells, self.users, self.column_width)
        n2 = 2 * self.n
        scale = torch.ones_like(columns[..., :1]).expand(-1, -1, -1, self.column_width - 1).clone()
        scale[..., n2:] = (norm / self.gain_scale).unsqueeze(-1)
        inputs = torch.cat((columns[..., :n2], columns[..., n2 + 1 :]), -1) * scale  # without the log gain
        weight = self.skip.double()[self.order]  # [C, U, w - 1, 2N]: each link's identity
        return torch.einsum("bcui,cuio->bcuo", inputs, weight)

    def unorder(self, t: Tensor) -> Tensor:
        """``[B, C, U, ...]`` from each BS's user order back to the users' numbering."""
        index = self.inverse[None, :, :].expand(t.shape[0], -1, -1)
        return t.gather(2, index.reshape(*index.shape, *([1] * (t.dim() - 3))).expand_as(t))

    def channel(self, x: Tensor) -> Tensor:
        """The learned downlink channels ``[B, C, U, N]`` (the problem's layout, complex128)."""
        rel, norm = self.relative_channel(x)
        return self.unorder(rel * norm.unsqueeze(-1))

    def powers(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The Power-Net's ``p [B, C, K]`` (softmax × P per BS) and, for eq. (7) or (23) in one cell, the
        virtual uplink powers ``q [B, C, K]`` (else ``None``)."""
        feats, _, _ = self.views(x)
        logits = self.power(feats).double().reshape(-1, self.cells, 2 * self.k if self.dual else self.k)
        p = torch.softmax(logits[..., : self.k], -1) * self.budget
        return p, (torch.softmax(logits[..., self.k :], -1) * self.budget if self.dual else None)

    def beamformers(self, H: Tensor, p: Tensor | None, q: Tensor | None = None) -> Tensor:
        """``W [B, C, N, K]`` from the learned channels ``H [B, C, U, N]`` (problem layout)."""
        if self.variant == Variant.channel_zf:
            return bf.zf(self._problem(H))
        if self.variant == Variant.channel_slnr:
            return bf.slnr_alternating(self._problem(H))
        own = bf.own_channels(self._problem(H))  # [B, C, N, K]
        if self.dual:  # one cell: eq. (7) or its reduced form (23), from p and q
            recover = bf.optimal_structure if self.recovery == Recovery.structure else bf.reduced_structure
            return recover(own[:, 0], p[:, 0], q[:, 0], self.noise.expand(H.shape[0])).unsqueeze(1)
        if self.zf:  # the ZF loss of Sec. V-C: ZF of the BS's own users, the learned powers
            directions = torch.linalg.solve(own.mH @ own, own, left=False)
            return bf.unit_columns(directions) * bf.amplitudes(p).unsqueeze(-2).to(H.dtype)
        G = H / self.noise.sqrt()  # σ = 1 units
        cov = G.transpose(-1, -2) @ G.conj()  # Σ_u g_u g_uᴴ [B, C, N, N]
        eye = torch.eye(self.n, dtype=H.dtype, device=H.device)
        A = eye + p.to(H.dtype)[..., None, None] * cov.unsqueeze(2)  # [B, C, K, N, N]
        d = torch.linalg.solve(A, own.transpose(-1, -2).unsqueeze(-1)).squeeze(-1)  # [B, C, K, N]
        return bf.unit_columns(d.transpose(-1, -2)) * bf.amplitudes(p).unsqueeze(-2).to(H.dtype)

    def _problem(self, H: Tensor) -> BeamformingProblem:
        b = H.shape[0]
        real = torch.float64
        return BeamformingProblem(
            channel=H,
            noise=self.noise.to(real).expand(b, self.users),
            budget=self.budget.to(real).expand(b, self.cells),
            weights=torch.ones(b, self.users, dtype=real, device=H.device),
        )

    def forward(self, x: Tensor) -> Tensor:
        H = self.channel(x)
        p, q = self.powers(x) if self.power is not None else (None, None)
        return self.beamformers(H, p, q).to(torch.complex64)  # the precision of the learners' problems

    def loss(self, cfg: ModelDrivenConfig, problem, batch: dict[str, Any], objective) -> Tensor:
        x = batch["inputs"]
        rel, norm = self.relative_channel(x)
        true = problem.channel.to(torch.complex128)
        true = true.gather(2, self.order[None, :, :, None].expand(true.shape[0], -1, -1, self.n))
        # eq. (39) per BS: the channel matrix's squared error over its energy (as observed), so that each
        # column weighs as much as its gain (the paper's L_H, eq. 8, in absolute units, does the same)
        error = (rel - true / norm.unsqueeze(-1)).abs().square().sum(-1) * norm.square()  # [B, C, U]
        loss_h = (error.sum(-1) / norm.square().sum(-1)).mean()
        if self.power is None:
            return loss_h.float()
        p, q = self.powers(x)
        labels = batch["labels"].to(torch.complex128)
        p_label = labels.abs().square().sum(-2)  # [B, C, K]
        loss_p = ((p - p_label) / self.budget).square().mean()
        if q is not None:  # eq. (7) in one cell: q from the labels by duality, as the joint network's
            with torch.no_grad():
                q_label = bf.dual_uplink_powers(problem.to(dtype=torch.float64), labels).unsqueeze(1)
            loss_p = loss_p + ((q - q_label) / self.budget).square().mean()
        loss_p = 0.5 * loss_p
        H = self.unorder(rel * norm.unsqueeze(-1))
        W = self.beamformers(H if cfg.rate_into_csi in (None, True) else H.detach(), p, q)  # None: yes here
        rate = objective(problem.to(dtype=torch.float64), W).mean()
        return (cfg.alpha_h * loss_h + cfg.alpha_p * loss_p - cfg.alpha_r * rate).float()
