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

Two estimators of the same averages (``estimator``):

* ``plain``: draw the channels ``h``, estimate them from the pilots, and average ``wᴴh`` and ``|wᴴh|²``
  over the realizations: the textbook Monte-Carlo.
* ``conditional`` (default): the precoders depend on the channels only through the received pilots
  ``y_{j,k} ~ CN(0, Q_{j,k})``, so only those are drawn (``L·K`` vectors per realization instead of
  ``L²K`` channels and ``L·K`` noise vectors), and each average is replaced by its conditional expectation
  given the pilots: ``E{wᴴh | y} = wᴴĥ`` and ``E{|wᴴh|² | y} = |wᴴĥ|² + wᴴ(R − Φ)w`` (the estimation error
  is independent of the estimates, zero-mean with covariance ``R − Φ``), the second term averaged as
  ``tr((R − Φ) E{wwᴴ})``. ``‖ĥ‖²``, whose mean ``tr Φ`` is known exactly, is a control variate of every
  average over the realizations (the regression estimator, coefficient fitted per entry). With MR a UE's
  precoder depends on its own pilot only, so against a channel on another pilot
  ``E{|wᴴh|²} = tr(R E{wwᴴ})`` exactly. Same expectations as ``plain`` (tested), with far less noise:
  at the laptop defaults (MR, 100 realizations) the gains' error drops from 6 % to 1 % (``a``) and the
  max-min optimum of one draw scores 0.96 instead of 0.87 on an independent draw of the same setups
  (``plugins/sanguinetti2018/README.md``).

Each sample's realizations come from its own CPU generator, seeded with ``seed`` and a hash of the
sample's large-scale gains, so a sample's problem depends neither on its position in the batch nor on
the chunking, and two samples never share draws.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from mimo_l2o.components import Network, Precoder, PrecoderConfig
from mimo_l2o.errors import require
from mimo_l2o.problems.power_control import PowerControlProblem
from mimo_l2o.registry import PRECODERS
from mimo_l2o.scenarios.cellular import correlation_matrices

# rough bound on the bytes of the working tensors of one chunk of samples
CHUNK_BYTES = 256 * 2**20


def sqrtm_psd(R: Tensor) -> Tensor:
    """Hermitian square root of PSD matrices ``[..., M, M]`` (negative rounding eigenvalues clipped)."""
    vals, vecs = torch.linalg.eigh(R)
    return (vecs * vals.clamp_min(0).sqrt().unsqueeze(-2).to(vecs.dtype)) @ vecs.mH


def abs2(z: Tensor) -> Tensor:
    """``|z|²`` of complex ``z`` without the square root of ``abs``."""
    return z.real.square() + z.imag.square()


def complex_normal(
    shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.complex128
) -> Tensor:
    """``CN(0, 1)`` entries (real and imaginary parts of variance 1/2), CPU."""
    return torch.randn(*shape, generator=generator, dtype=dtype)


def draw_normals(
    batch: int,
    num_realizations: int,
    num_cells: int,
    num_users: int,
    num_antennas: int,
    generator: torch.Generator | list[torch.Generator],
    dtype: torch.dtype = torch.complex128,
) -> tuple[Tensor, Tensor]:
    """The ``CN(0, 1)`` draws of ``batch`` samples, one block per sample in sample order (from one
    generator, or one generator per sample), realizations last: fading ``[b, L, L, K, M, N]`` and
    pilot noise ``[b, L, K, M, N]``."""
    fading = (num_cells, num_cells, num_users, num_antennas, num_realizations)
    noise = (num_cells, num_users, num_antennas, num_realizations)
    generators = generator if isinstance(generator, list) else [generator] * batch
    w, n = _draw_blocks(generators, [fading, noise], dtype)
    return w, n


def _draw_blocks(
    generators: list[torch.Generator], shapes: list[tuple[int, ...]], dtype: torch.dtype
) -> list[Tensor]:
    """One ``CN(0, 1)`` block per sample from its generator, split into ``[b, *shape]`` tensors in
    order."""
    sizes = [math.prod(shape) for shape in shapes]
    blocks = torch.stack([complex_normal((sum(sizes),), gen, dtype) for gen in generators])
    return [
        part.reshape(len(generators), *shape)
        for part, shape in zip(blocks.split(sizes, dim=1), shapes, strict=True)
    ]


def sample_generators(network: Network, seed: int) -> list[torch.Generator]:
    """One CPU generator per sample, seeded with ``seed`` and the SHA-256 of the sample's large-scale
    gains (``beta``, or ``R`` for networks given by their correlation matrices) in float64."""
    key = network["beta"] if "beta" in network.tensors else network["R"]
    gens = []
    for row in key.to(torch.float64 if key.is_floating_point() else torch.complex128).cpu():
        digest = hashlib.sha256(row.numpy().tobytes() + seed.to_bytes(8, "little", signed=True)).digest()
        gens.append(torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1)))
    return gens


def draw_channels(R: Tensor, w: Tensor) -> Tensor:
    """``h = R^{1/2} w`` for ``R [b, L, L, K, M, M]`` and ``w [b, L, L, K, M, N]``: ``[b, L, L, K, M, N]``
    (one matrix product per correlation matrix, all realizations at once)."""
    return sqrtm_psd(R) @ w.to(R.device)


def draw_pilot_normals(
    batch: int,
    num_realizations: int,
    num_cells: int,
    num_users: int,
    num_antennas: int,
    generators: list[torch.Generator],
    dtype: torch.dtype = torch.complex128,
) -> Tensor:
    """The ``CN(0, 1)`` draws of the received pilots of ``batch`` samples, one generator per sample,
    realizations last: ``[b, L, K, M, N]``."""
    (z,) = _draw_blocks(generators, [(num_cells, num_users, num_antennas, num_realizations)], dtype)
    return z


def mmse_estimates_from_pilots(
    R: Tensor, z: Tensor, pilot_power: float, noise_power: float
) -> tuple[Tensor, Tensor]:
    """MMSE estimates (eq. 3) from received pilots drawn directly, ``y_{j,k} = Q_{j,k}^{1/2} z``
    (``y = Σ_l h_{j,lk} + n`` has covariance ``Q``), for ``R [b, L, L, K, M, M]`` and ``z [b, L, K, M, N]``:
    the estimates ``[b, L, L, K, M, N]`` and their covariances ``Φ [b, L, L, K, M, M]``."""
    Q = _pilot_covariance(R, noise_power / (pilot_power * R.shape[3]))
    return _mmse_from_received(R, Q, sqrtm_psd(Q) @ z.to(R.device))


def _pilot_covariance(R: Tensor, noise_var: float) -> Tensor:
    """``Q_{j,k} = Σ_l R_{j,lk} + noise_var · I`` ``[b, j, k, M, M]``: the covariance of BS ``j``'s
    received pilot ``k`` (scaled by ``1/(p τ_p)``, noise variance ``σ²/(p τ_p)``)."""
    eye = torch.eye(R.shape[-1], dtype=R.dtype, device=R.device)
    return R.sum(dim=2) + noise_var * eye


def _mmse_from_received(R: Tensor, Q: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The estimates ``ĥ_{j,lk} = R_{j,lk} Q_{j,k}⁻¹ y_{j,k}`` ``[b, L, L, K, M, N]`` and their covariances
    ``Φ = R Q⁻¹ R`` from the received pilots ``y [b, L, K, M, N]``."""
    # A_{j,lk} = R_{j,lk} Q_{j,k}⁻¹ = (Q⁻¹ R)ᴴ (both Hermitian); Q inverted once per (j, k), then one
    # matrix product per (j, l, k): a solve broadcast over l costs twice as much
    A = (torch.linalg.inv(Q).unsqueeze(2) @ R).mH  # [b, j, l, k, M, M]
    return A @ y.unsqueeze(2), A @ R


def control_variate_mean(x: Tensor, c: Tensor, mean_c: Tensor, dim: int, nonneg: bool = False) -> Tensor:
    """Mean of ``x`` over ``dim`` with the control variate ``c`` of known mean ``mean_c`` (``c``
    broadcasts against ``x``; ``mean_c`` has ``dim`` removed): ``x̄ − β (c̄ − E c)``, ``β`` the per-entry
    regression coefficient of ``x`` on ``c``. With one sample (no spread) it is the plain mean.

    ``nonneg``: ``x >= 0``, so its mean is too; where the correction takes the estimate below zero (a
    few realizations and a large regression step: at 5 realizations about 4 % of cellular setups have
    such an entry), the plain mean ``x̄`` is used there instead, which can't be negative."""
    xm, cm = x.mean(dim, keepdim=True), c.mean(dim, keepdim=True)
    cc = c - cm
    var = (cc * cc).mean(dim)
    beta = ((x - xm) * cc).mean(dim) / torch.where(var > 0, var, torch.ones_like(var))
    plain = xm.squeeze(dim)
    corrected = plain - beta * (cm.squeeze(dim) - mean_c)
    return torch.where(corrected < 0, plain, corrected) if nonneg else corrected


def mmse_estimates(
    R: Tensor, H: Tensor, noise: Tensor, pilot_power: float, noise_power: float
) -> tuple[Tensor, Tensor]:
    """MMSE estimates with pilot reuse 1 and ``τ_p = K`` (eq. 3).

    Parameters
    ----------
    R : Tensor ``[b, L(BS j), L(cell l), K, M, M]``
        Correlation matrices ``R_{j,lk}``.
    H : Tensor ``[b, L, L, K, M, N]``
        Channel realizations ``h_{j,lk}``, realizations last.
    noise : Tensor ``[b, L, K, M, N]``
        ``CN(0, 1)`` draws of the pilot noise (scaled here to ``CN(0, σ²/(p τ_p) I)``).
    pilot_power, noise_power : float
        ``p`` and ``σ²`` (W).

    Returns
    -------
    (Tensor ``[b, L, L, K, M, N]``, Tensor ``[b, L, L, K, M, M]``)
        The estimates ``ĥ_{j,lk}`` and their covariances ``Φ_{j,lk}``.
    """
    scale = (noise_power / (pilot_power * H.shape[3])) ** 0.5
    y = H.sum(dim=2) + scale * noise.to(H.device)  # [b, j, k, M, N]
    return _mmse_from_received(R, _pilot_covariance(R, scale**2), y)


def _unit(v: Tensor) -> Tensor:
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(torch.finfo(v.real.dtype).tiny)


class Estimator(str, Enum):
    plain = "plain"  # average over drawn channels
    conditional = "conditional"  # conditional expectations given the pilots, control variates


class Precision(str, Enum):
    single = "single"  # complex64
    double = "double"  # complex128


class MassiveMIMOPrecoder(Precoder):
    """Shared Monte-Carlo machinery; subclasses choose the combining vectors (:meth:`directions`).

    Needs the correlation matrices: a network's ``R`` if it carries one, else built from its
    ``beta`` and ``theta`` (:func:`mimo_l2o.scenarios.cellular.correlation_matrices`), one chunk of
    samples at a time.
    """

    @dataclass
    class Config(PrecoderConfig):
        """Parameters
        ----------
        name : str
            Registry key.
        num_realizations : int
            Realizations per network for the averages of eqs. 10-11 (>= 1): of the received pilots
            (``conditional``) or of the channels and the pilot noise (``plain``).
        seed : int
            Seed of the realizations.
        precision : Precision
            ``single`` (complex64, the default) or ``double`` (complex128) draws and arithmetic for
            the Monte-Carlo averages. Rounding in single precision (~1e-6 relative) is far inside the
            Monte-Carlo error (~1/√N); single is about twice as fast. The problems are float64 either
            way.
        estimator : Estimator
            ``conditional`` (the default: conditional expectations given the pilots and control
            variates, far less Monte-Carlo noise) or ``plain`` (averages over drawn channels); see the
            module docstring.
        """

        num_realizations: int = 100
        seed: int = 0
        precision: Precision = Precision.single
        estimator: Estimator = Estimator.conditional

        def __post_init__(self) -> None:
            require(
                self.num_realizations >= 1,
                "num_realizations",
                f"must be an integer >= 1, got {self.num_realizations}",
            )

    expensive = True
    requires = ("beta", "theta")
    version = 5  # 5: the conditional estimator keeps b_{li,jk} >= 0 at any realization count
    # True where UE k's precoder at BS j depends on BS j's pilot k only (MR), so that it is independent
    # of every channel on another pilot
    pilot_local = False

    @classmethod
    def accepts(cls, tensors: tuple[str, ...]) -> bool:
        return "R" in tensors or all(t in tensors for t in cls.requires)

    def directions(
        self, estimates: Tensor, R: Tensor, Phi: Tensor, pilot_power: float, noise_power: float
    ) -> Tensor:
        """Combining vectors ``v_jk`` ``[b, L, N, K, M]`` from the estimates ``[b, L, L, K, M, N]``."""
        raise NotImplementedError

    def gains(self, network: Network) -> tuple[Tensor, Tensor]:
        """``a [batch, L, K]`` (eq. 10) and ``b [batch, L, K, L, K]`` with ``b[:, l, i, j, k] = b_{li,jk}``
        (eq. 11, without the subtraction)."""
        p, sigma2 = float(network.params["pilot_power"]), float(network.params["noise_power"])
        if "R" in network.tensors:
            batch, nl, _, k, m, _ = network["R"].shape
        else:
            batch, nl, _, k = network["beta"].shape
            m = int(network.params["num_antennas"])
        nr = self.config.num_realizations
        per_sample = 16 * (6 * nl * nl * k * m * (m + nr) + 3 * nr * nl * m * m)
        chunk = max(1, CHUNK_BYTES // per_sample)
        dtype = torch.complex64 if Precision(self.config.precision) == Precision.single else torch.complex128
        # gains relative to the pilot noise σ²/(p τ_p), so that single precision sees numbers near 1
        unit = sigma2 / (p * k)
        a_parts, b_parts = [], []
        conditional = Estimator(self.config.estimator) == Estimator.conditional
        for start in range(0, batch, chunk):
            part = network.select(slice(start, start + chunk))
            Rc = part["R"].to(torch.complex128) if "R" in part.tensors else correlation_matrices(part)
            Rc = (Rc / unit).to(dtype)
            gens = sample_generators(part, self.config.seed)
            if conditional:
                z = draw_pilot_normals(Rc.shape[0], nr, nl, k, m, gens, dtype)
                est, Phi = mmse_estimates_from_pilots(Rc, z, p, sigma2 / unit)
                W = _unit(self.directions(est, Rc, Phi, p, sigma2 / unit))  # [b, j, N, k, M]
                a_part, b_part = self._conditional_averages(Rc, est, Phi, W)
            else:
                w, noise = draw_normals(Rc.shape[0], nr, nl, k, m, gens, dtype)
                H = draw_channels(Rc, w)  # [b, j, l, k, M, N]
                est, Phi = mmse_estimates(Rc, H, noise, p, sigma2 / unit)
                W = _unit(self.directions(est, Rc, Phi, p, sigma2 / unit))
                a_part, b_part = self._plain_averages(H, W)
            a_parts.append(a_part)
            b_parts.append(b_part)
        return unit * torch.cat(a_parts).double(), unit * torch.cat(b_parts).double()

    @staticmethod
    def _plain_averages(H: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
        """``a [b, L, K]`` and ``b [b, L, K, L, K]`` averaged over the channels ``H [b, j, l, k, M, N]``
        with the unit precoders ``W [b, j, N, k, M]``."""
        b_, nl, _, k, m, n_ = H.shape
        own = torch.arange(nl)
        h_own = H[:, own, own].permute(0, 1, 4, 2, 3)  # h_{j,jk}: [b, j, N, k, M]
        a = (W.conj() * h_own).sum(-1).mean(2).abs() ** 2
        # b_{li,jk} = E|w_liᴴ h_{l,jk}|²: at each BS l, [N, K] precoders against [LK] channels
        at_bs = H.reshape(b_, nl, nl * k, m, n_).permute(0, 1, 4, 3, 2)  # [b, l, N, M, (j,k)]
        g = W.conj() @ at_bs  # [b, l, N, i, (j,k)]
        return a, (g.abs() ** 2).mean(2).reshape(b_, nl, k, nl, k)

    def _conditional_averages(self, R: Tensor, est: Tensor, Phi: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
        """``a`` and ``b`` as conditional expectations given the pilots, with ``‖ĥ‖²`` as control variate
        (module docstring), from the estimates ``[b, j, l, k, M, N]``, their covariances ``Φ`` and the
        unit precoders ``W [b, j, N, k, M]``."""
        b_, nl, _, k, m, n_ = est.shape
        own = torch.arange(nl)
        tr_phi = Phi.diagonal(dim1=-2, dim2=-1).real.sum(-1)  # E‖ĥ_{j,lk}‖²: [b, j, l, k]
        h_own = est[:, own, own].permute(0, 1, 4, 2, 3)  # ĥ_{j,jk}: [b, j, N, k, M]
        signal = (W.conj() * h_own).sum(-1)  # wᴴĥ: [b, j, N, k]
        norms_own = abs2(h_own).sum(-1)
        a = control_variate_mean(signal, norms_own, tr_phi[:, own, own], dim=2).abs() ** 2
        at_bs = est.reshape(b_, nl, nl * k, m, n_).permute(0, 1, 4, 3, 2)  # [b, l, N, M, (j,k)]
        g = abs2(W.conj() @ at_bs)  # |w_liᴴ ĥ_{l,jk}|²: [b, l, N, i, (j,k)]
        norms = abs2(at_bs).sum(-2).unsqueeze(3)  # ‖ĥ_{l,jk}‖²: [b, l, N, 1, (j,k)]
        b = control_variate_mean(g, norms, tr_phi.reshape(b_, nl, 1, nl * k), dim=2, nonneg=True)
        # tr(C E{wwᴴ}) for C [b, l, (j,k), M, M] against the [b, l, i] precoders: one matrix product
        Wt = W.permute(0, 1, 3, 4, 2)  # [b, l, i, M, N]
        second = ((Wt @ Wt.mH) / n_).transpose(-1, -2).reshape(b_, nl, k, m * m)

        def trace_with(C: Tensor) -> Tensor:
            return (second @ C.reshape(b_, nl, nl * k, m * m).transpose(-1, -2)).real  # [b, l, i, (j,k)]

        b = b + trace_with(R - Phi)
        if self.pilot_local:
            pilots = torch.arange(nl * k, device=R.device) % k  # of the channels (j, k)
            other_pilot = torch.arange(k, device=R.device)[:, None] != pilots
            b = torch.where(other_pilot, trace_with(R), b)
        return a, b.reshape(b_, nl, k, nl, k)

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

    pilot_local = True

    @dataclass
    class Config(MassiveMIMOPrecoder.Config):
        name: str = "mr"

    def directions(self, estimates, R, Phi, pilot_power, noise_power):
        own = torch.arange(estimates.shape[1])
        return estimates[:, own, own].permute(0, 1, 4, 2, 3)  # ĥ_{j,jk}: [b, j, N, k, M]


@PRECODERS.register("mmmse")
class MMMSE(MassiveMIMOPrecoder):
    """Multicell MMSE precoding (eq. 8), all UEs at the uplink power ``pilot_power``::

    w_jk ∝ (Σ_{l,i} ĥ_{j,li} ĥ_{j,li}ᴴ + Σ_{l,i} (R_{j,li} − Φ_{j,li}) + σ²/p I)⁻¹ ĥ_{j,jk}
    """

    @dataclass
    class Config(MassiveMIMOPrecoder.Config):
        name: str = "mmmse"

    def directions(self, estimates, R, Phi, pilot_power, noise_power):
        b, nl, _, k, m, n = estimates.shape
        eye = torch.eye(m, dtype=R.dtype, device=R.device)
        Z = (R - Phi).sum(dim=(2, 3)) + (noise_power / pilot_power) * eye  # [b, j, M, M]
        Hj = estimates.reshape(b, nl, nl * k, m, n).permute(0, 1, 4, 3, 2)  # [b, j, N, M, (l,i)]
        C = Hj @ Hj.mH + Z.unsqueeze(2)  # Σ ĥ ĥᴴ + Z, [b, j, N, M, M]
        own = torch.arange(nl)
        rhs = estimates[:, own, own].permute(0, 1, 4, 3, 2)  # [b, j, N, M, K]
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
        m = estimates.shape[4]
        own = torch.arange(estimates.shape[1])
        Hjj = estimates[:, own, own].permute(0, 1, 4, 3, 2)  # [b, j, N, M, K]
        eye = torch.eye(m, dtype=R.dtype, device=R.device)
        C = Hjj @ Hjj.mH + (noise_power / pilot_power) * eye
        return torch.linalg.solve(C, Hjj).transpose(-1, -2)
