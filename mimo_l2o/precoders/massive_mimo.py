"""Massive MIMO precoders with MMSE channel estimates: hardening-bound gains by Monte-Carlo
(Sanguinetti et al. 2018, Section II, eqs. 3 and 5-11).

For each network the precoder draws ``num_realizations`` channel realizations
``h_{j,lk} = R_{j,lk}^{1/2} w``, ``w ~ CN(0, I)``, MMSE estimates from pilots with reuse 1
(``τ_p = K``, UE ``k`` of every cell sends pilot ``k``)::

    y_{j,k} = Σ_l h_{j,lk} + n / √(p τ_p),   n ~ CN(0, σ² I)
    ĥ_{j,lk} = R_{j,lk} Q_{j,k}⁻¹ y_{j,k},   Q_{j,k} = Σ_l R_{j,lk} + σ²/(p τ_p) I
    Φ_{j,lk} = R_{j,lk} Q_{j,k}⁻¹ R_{j,lk}

(``p`` the pilot power; ``ĥ ~ CN(0, Φ)`` and the error ``h − ĥ ~ CN(0, R − Φ)`` are independent), unit-norm
precoders ``w_jk`` from MR (eq. 7) or M-MMSE (eq. 8) combining, and the averages

    a_jk = |E{w_jkᴴ h_{j,jk}}|²,   b_{li,jk} = E{|w_liᴴ h_{l,jk}|²}      (eqs. 10-11)

so that ``SINR_jk = p_jk a_jk / (Σ_{l,i} p_li b_{li,jk} − p_jk a_jk + σ²)`` (eq. 5): the problem's
signal gain is ``diag(a)`` and its interference gain ``b`` with ``a`` taken off the diagonal. Users (and
power variables) are ordered ``j·K + k``; each BS has the budget ``p_max``.

The realizations are drawn from a CPU generator seeded with ``seed`` at each call, in fixed blocks per
sample in sample order, so a sample's gains depend on its position in the batch (to Monte-Carlo
accuracy only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mimo_l2o.components import Network, Precoder, PrecoderConfig
from mimo_l2o.errors import require
from mimo_l2o.problem import PowerControlProblem
from mimo_l2o.registry import PRECODERS

# rough bound on the bytes of the working tensors of one chunk of samples
CHUNK_BYTES = 256 * 2**20


def sqrtm_psd(R: Tensor) -> Tensor:
    """Hermitian square root of PSD matrices ``[..., M, M]`` (negative rounding eigenvalues clipped)."""
    vals, vecs = torch.linalg.eigh(R)
    return (vecs * vals.clamp_min(0).sqrt().unsqueeze(-2).to(vecs.dtype)) @ vecs.mH


def complex_normal(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """``CN(0, 1)`` entries (real and imaginary parts of variance 1/2), complex128, CPU."""
    return torch.randn(*shape, generator=generator, dtype=torch.complex128)


def draw_normals(
    batch: int, num_realizations: int, num_cells: int, num_users: int, num_antennas: int, generator
) -> tuple[Tensor, Tensor]:
    """The ``CN(0, 1)`` draws of ``batch`` samples, one block per sample in sample order (so chunking
    the batch does not change them): fading ``[b, N, L, L, K, M]`` and pilot noise ``[b, N, L, K, M]``."""
    fading = (num_realizations, num_cells, num_cells, num_users, num_antennas)
    noise = (num_realizations, num_cells, num_users, num_antennas)
    sizes = (math.prod(fading), math.prod(noise))
    blocks = torch.stack([complex_normal((sum(sizes),), generator) for _ in range(batch)])
    w, n = blocks.split(sizes, dim=1)
    return w.reshape(batch, *fading), n.reshape(batch, *noise)


def draw_channels(R: Tensor, w: Tensor) -> Tensor:
    """``h = R^{1/2} w`` for ``R [b, L, L, K, M, M]`` and ``w [b, N, L, L, K, M]``: ``[b, N, L, L, K, M]``."""
    return (sqrtm_psd(R).unsqueeze(1) @ w.to(R.device).unsqueeze(-1)).squeeze(-1)


def mmse_estimates(
    R: Tensor, H: Tensor, noise: Tensor, pilot_power: float, noise_power: float
) -> tuple[Tensor, Tensor]:
    """MMSE estimates with pilot reuse 1 and ``τ_p = K`` (eq. 3).

    Parameters
    ----------
    R : Tensor ``[b, L(BS j), L(cell l), K, M, M]``
        Correlation matrices ``R_{j,lk}``.
    H : Tensor ``[b, N, L, L, K, M]``
        Channel realizations ``h_{j,lk}``.
    pilot_power, noise_power : float
        ``p`` and ``σ²`` (W).
    noise : Tensor ``[b, N, L, K, M]``
        ``CN(0, 1)`` draws of the pilot noise (scaled here to ``CN(0, σ²/(p τ_p) I)``).

    Returns
    -------
    (Tensor ``[b, N, L, L, K, M]``, Tensor ``[b, L, L, K, M, M]``)
        The estimates ``ĥ_{j,lk}`` and their covariances ``Φ_{j,lk}``.
    """
    b, n, nl, _, k, m = H.shape
    scale = (noise_power / (pilot_power * k)) ** 0.5
    y = H.sum(dim=3) + scale * noise.to(H.device)  # [b, N, j, k, M]
    eye = torch.eye(m, dtype=R.dtype, device=R.device)
    Q = R.sum(dim=2) + scale**2 * eye  # [b, j, k, M, M]
    # A_{j,lk} = R_{j,lk} Q_{j,k}^{-1} = (Q^{-1} R)ᴴ (both Hermitian)
    A = torch.linalg.solve(Q.unsqueeze(2), R).mH  # [b, j, l, k, M, M]
    estimates = (A.unsqueeze(1) @ y.unsqueeze(3).unsqueeze(-1)).squeeze(-1)
    return estimates, A @ R


def _unit(v: Tensor) -> Tensor:
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(1e-300)


class MassiveMIMOPrecoder(Precoder):
    """Shared Monte-Carlo machinery; subclasses choose the combining vectors (:meth:`directions`)."""

    @dataclass
    class Config(PrecoderConfig):
        """Parameters
        ----------
        name : str
            Registry key.
        num_realizations : int
            Channel realizations per network for the averages of eqs. 10-11 (>= 1).
        seed : int
            Seed of the realizations (fading and pilot noise).
        """

        num_realizations: int = 100
        seed: int = 0

        def __post_init__(self) -> None:
            require(
                self.num_realizations >= 1,
                "num_realizations",
                f"must be an integer >= 1, got {self.num_realizations}",
            )

    expensive = True
    requires = ("R",)

    def directions(
        self, estimates: Tensor, R: Tensor, Phi: Tensor, pilot_power: float, noise_power: float
    ) -> Tensor:
        """Combining vectors ``v_jk`` ``[b, N, L, K, M]`` from the estimates ``[b, N, L, L, K, M]``."""
        raise NotImplementedError

    def gains(self, network: Network) -> tuple[Tensor, Tensor]:
        """``a [batch, L, K]`` (eq. 10) and ``b [batch, L, K, L, K]`` with ``b[:, l, i, j, k] = b_{li,jk}``
        (eq. 11, without the subtraction)."""
        R = network["R"]
        p, sigma2 = float(network.params["pilot_power"]), float(network.params["noise_power"])
        batch, nl, _, k, m, _ = R.shape
        nr = self.config.num_realizations
        generator = torch.Generator().manual_seed(self.config.seed)
        per_sample = 16 * (4 * nr * nl * nl * k * m + 4 * nl * nl * k * m * m + 2 * nr * nl * m * m)
        chunk = max(1, CHUNK_BYTES // per_sample)
        a_parts, b_parts = [], []
        for start in range(0, batch, chunk):
            Rc = R[start : start + chunk]
            w, noise = draw_normals(Rc.shape[0], nr, nl, k, m, generator)
            H = draw_channels(Rc, w)  # [b, N, j, l, k, M]
            est, Phi = mmse_estimates(Rc, H, noise, p, sigma2)
            W = _unit(self.directions(est, Rc, Phi, p, sigma2))  # [b, N, j, k, M]
            own = torch.arange(nl)
            h_own = H[:, :, own, own]  # [b, N, j, k, M]: h_{j,jk}
            a_parts.append((W.conj() * h_own).sum(-1).mean(1).abs() ** 2)
            # b_{li,jk} = E|w_liᴴ h_{l,jk}|²
            g = torch.einsum("bnlim,bnljkm->bnlijk", W.conj(), H)
            b_parts.append((g.abs() ** 2).mean(1))
        return torch.cat(a_parts), torch.cat(b_parts)

    def __call__(self, network: Network) -> PowerControlProblem:
        a, b = self.gains(network)
        batch, nl, k = a.shape
        u = nl * k
        a = a.reshape(batch, u)
        # interference_gain[:, user (j,k), variable (l,i)] = b_{li,jk}
        interference = b.reshape(batch, u, u).transpose(1, 2).clone()
        diag = torch.arange(u)
        interference[:, diag, diag] = (interference[:, diag, diag] - a).clamp_min(0)
        tau_c = int(network.params["coherence"])
        return PowerControlProblem(
            signal_gain=torch.diag_embed(a),
            interference_gain=interference,
            noise=torch.full(
                (batch, u), float(network.params["noise_power"]), dtype=a.dtype, device=a.device
            ),
            group=torch.arange(nl, device=a.device).repeat_interleave(k),
            budget=torch.full((batch, nl), float(network.params["p_max"]), dtype=a.dtype, device=a.device),
            weights=torch.ones(batch, u, dtype=a.dtype, device=a.device),
            prelog=(tau_c - k) / tau_c,
        )


@PRECODERS.register("mr")
class MR(MassiveMIMOPrecoder):
    """Maximum-ratio precoding, ``w_jk ∝ ĥ_{j,jk}`` (eq. 7)."""

    @dataclass
    class Config(MassiveMIMOPrecoder.Config):
        name: str = "mr"

    def directions(self, estimates, R, Phi, pilot_power, noise_power):
        nl = estimates.shape[2]
        own = torch.arange(nl)
        return estimates[:, :, own, own]


@PRECODERS.register("mmmse")
class MMMSE(MassiveMIMOPrecoder):
    """Multicell MMSE precoding (eq. 8), all UEs at the uplink power ``pilot_power``::

    w_jk ∝ (Σ_{l,i} ĥ_{j,li} ĥ_{j,li}ᴴ + Σ_{l,i} (R_{j,li} − Φ_{j,li}) + σ²/p I)⁻¹ ĥ_{j,jk}
    """

    @dataclass
    class Config(MassiveMIMOPrecoder.Config):
        name: str = "mmmse"

    def directions(self, estimates, R, Phi, pilot_power, noise_power):
        b, n, nl, _, k, m = estimates.shape
        eye = torch.eye(m, dtype=R.dtype, device=R.device)
        Z = (R - Phi).sum(dim=(2, 3)) + (noise_power / pilot_power) * eye  # [b, j, M, M]
        Hj = estimates.reshape(b, n, nl, nl * k, m)  # [b, N, j, (l,i), M]
        C = Hj.transpose(-1, -2) @ Hj.conj() + Z.unsqueeze(1)  # Σ ĥ ĥᴴ + Z, [b, N, j, M, M]
        own = torch.arange(nl)
        rhs = estimates[:, :, own, own].transpose(-1, -2)  # [b, N, j, M, K]
        return torch.linalg.solve(C, rhs).transpose(-1, -2)


@PRECODERS.register("rzf")
class RZF(MassiveMIMOPrecoder):
    """Regularized zero-forcing precoding, the single-cell counterpart of M-MMSE::

    w_jk ∝ (Σ_i ĥ_{j,ji} ĥ_{j,ji}ᴴ + σ²/p I)⁻¹ ĥ_{j,jk}
    """

    @dataclass
    class Config(MassiveMIMOPrecoder.Config):
        name: str = "rzf"

    def directions(self, estimates, R, Phi, pilot_power, noise_power):
        m = estimates.shape[-1]
        own = torch.arange(estimates.shape[2])
        Hjj = estimates[:, :, own, own]  # [b, N, j, K, M]
        eye = torch.eye(m, dtype=R.dtype, device=R.device)
        C = Hjj.transpose(-1, -2) @ Hjj.conj() + (noise_power / pilot_power) * eye
        return torch.linalg.solve(C, Hjj.transpose(-1, -2)).transpose(-1, -2)
