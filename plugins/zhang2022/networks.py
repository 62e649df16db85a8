"""The single-cell networks of the model-driven learner (Sec. IV, Fig. 1): the fully connected layers
of the CSI-Net and Power-Net (:func:`mlp`), the CNN Power-Net of Sec. VII-B (:class:`ConvPowerNet`) and
the joint network with its recovery module (:class:`ModelDrivenNet`)."""

from __future__ import annotations

import math

import torch
from mimo_l2o_plugins.zhang2022.config import (
    CSIFeatures,
    ModelDrivenConfig,
    PowerNetKind,
    Recovery,
    Sharing,
    Variant,
)
from mimo_l2o_plugins.zhang2022.csi_features import OVERSAMPLING, beamspace_grid, beamspace_products
from torch import Tensor, nn

from mimo_l2o.solvers import beamformers as bf


def mlp(width_in: int, width: int, layers: int, width_out: int, kind: str) -> nn.Sequential:
    """``layers`` hidden layers of ``width``: ``tanh`` (CSI-Net) or batch norm + ``ReLU`` (Power-Net),
    then a linear output."""
    parts: list[nn.Module] = []
    w = width_in
    for _ in range(layers):
        parts.append(nn.Linear(w, width))
        parts += [nn.Tanh()] if kind == "tanh" else [nn.BatchNorm1d(width), nn.ReLU()]
        w = width
    parts.append(nn.Linear(w, width_out))
    return nn.Sequential(*parts)


class ConvPowerNet(nn.Module):
    """The 1-D CNN Power-Net of Sec. VII-B: the ``K`` users' uplink columns as ``2K`` input channels (real
    and imaginary parts) along the ``N`` antennas; convolutions of ``filters`` (16 and 8) with ``kernel``
    taps and the zero padding that keeps the length, each followed by batch normalization, ReLU and
    dropout 0.3; a fully connected layer of ``width`` (256) with ReLU; a linear output of ``outputs``
    values (the softmax is the caller's). Its convolutions cost ``O(N K)`` per sample (Sec. VII-B)."""

    def __init__(self, n: int, k: int, filters, kernel: int, width: int, outputs: int, dropout: float = 0.3):
        super().__init__()
        self.n, self.k = n, k
        layers: list[nn.Module] = []
        channels = 2 * k
        for count in filters:
            layers += [
                nn.Conv1d(channels, count, kernel, padding=kernel // 2),
                nn.BatchNorm1d(count),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
            channels = count
        self.conv = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * n, width), nn.ReLU(), nn.Linear(width, outputs)
        )

    def antenna_channels(self, x: Tensor) -> Tensor:
        """``[B, 2·K·N]`` (user, antenna, real/imaginary order) → ``[B, 2K, N]``: the convolution's input."""
        b = x.shape[0]
        return x.reshape(b, self.k, self.n, 2).transpose(-1, -2).reshape(b, 2 * self.k, self.n)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(self.antenna_channels(x)))


class ModelDrivenNet(nn.Module):
    """Uplink channels (real and imaginary parts, ``[B, 2·K·N]``) → beamformers ``[B, 1, N, K]``; the
    parts the loss needs come from :meth:`parts`."""

    def __init__(self, cfg: ModelDrivenConfig, n: int, k: int, budget: float, noise: float, scale: float):
        super().__init__()
        self.n, self.k = n, k
        self.sharing = Sharing(cfg.csi_sharing or Sharing.joint)
        self.recovery = Recovery(cfg.recovery)
        self.variant = Variant(cfg.variant)
        self.register_buffer("budget", torch.tensor(budget))
        self.register_buffer("noise", torch.tensor(noise))
        self.register_buffer("scale", torch.tensor(scale))  # RMS of an uplink entry: inputs of order 1
        full = 4 * n * k
        self.features = CSIFeatures(cfg.csi_features or CSIFeatures.antenna)
        extra = 2 * OVERSAMPLING * n if self.features == CSIFeatures.beamspace else 0
        if self.features == CSIFeatures.beamspace:
            self.register_buffer("grid", beamspace_grid(n))
        if self.sharing == Sharing.joint:
            self.csi = mlp((2 * n + extra) * k, cfg.csi_width or full, cfg.csi_layers, 2 * n * k, "tanh")
        else:
            self.csi = mlp(2 * n + extra, cfg.csi_width or full, cfg.csi_layers, 2 * n, "tanh")
        # the Power-Net (2 K powers out); for channel_bf the beamforming net (2 N K values out)
        outputs = {Variant.hybrid: 2 * k, Variant.channel_bf: 2 * n * k}.get(self.variant)
        if outputs and PowerNetKind(cfg.power_net) == PowerNetKind.cnn:
            self.power = ConvPowerNet(
                n, k, cfg.power_filters, cfg.power_kernel, cfg.power_width or 256, outputs
            )
        elif outputs:
            self.power = mlp(2 * n * k, cfg.power_width or full, cfg.power_layers, outputs, "relu")
        else:
            self.power = None

    def channel(self, x: Tensor) -> Tensor:
        """The learned downlink channels ``Ĥ [B, N, K]`` (columns ``ĥ_k``)."""
        b = x.shape[0]
        z = (x / self.scale).reshape(b, self.k, 2 * self.n)
        if self.features == CSIFeatures.beamspace:
            columns = torch.view_as_complex(z.reshape(b, self.k, self.n, 2).double().contiguous())
            # z has entries of unit variance: columns of norm about √N, scaled to about one
            products = beamspace_products(columns / math.sqrt(self.n), self.grid)
            z = torch.cat((z, products.to(z.dtype)), -1)
        if self.sharing == Sharing.joint:
            out = self.csi(z.reshape(b, -1))
        else:
            out = self.csi(z.reshape(b * self.k, -1)).reshape(b, -1)
        rows = torch.view_as_complex((out * self.scale).reshape(b, self.k, self.n, 2).contiguous())
        return rows.transpose(-1, -2)

    def parts(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``Ĥ [B, N, K]``, ``p̂ [B, K]`` and ``q̂ [B, K]`` (each summing to ``P``; ``None`` for
        ``channel_zf`` and ``channel_bf``)."""
        H = self.channel(x)
        if self.variant != Variant.hybrid:
            return H, None, None
        logits = self.power(x / self.scale)
        p = torch.softmax(logits[:, : self.k], dim=-1) * self.budget
        q = torch.softmax(logits[:, self.k :], dim=-1) * self.budget
        return H, p, q

    def beamformers(self, H: Tensor, p: Tensor | None, q: Tensor | None) -> Tensor:
        """The recovery module: ``W [B, 1, N, K]`` from the learned parts."""
        if self.variant == Variant.channel_zf:
            W = torch.linalg.solve(H.mH @ H, H, left=False)
            return bf.onto_budget(W.unsqueeze(1), self.budget.expand(H.shape[0], 1))
        if self.variant == Variant.channel_bf:  # the data-driven net on the learned channel
            b = H.shape[0]
            z = torch.view_as_real(H.transpose(-1, -2)).flatten(1).to(self.scale.dtype) / self.scale
            out = self.power(z).reshape(b, self.k, self.n, 2)
            W = torch.view_as_complex(out.to(torch.float32).contiguous()).transpose(-1, -2).to(H.dtype)
            return bf.onto_budget(W.unsqueeze(1), self.budget.expand(b, 1))
        noise = self.noise.expand(H.shape[0])
        if self.recovery == Recovery.structure:
            W = bf.optimal_structure(H, p, q, noise)
        elif self.recovery == Recovery.reduced:
            W = bf.reduced_structure(H, p, q, noise)
        else:
            W = bf.unit_columns(torch.linalg.solve(H.mH @ H, H, left=False)) * bf.amplitudes(p).unsqueeze(
                -2
            ).to(H.dtype)
        return W.unsqueeze(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.beamformers(*self.parts(x))
