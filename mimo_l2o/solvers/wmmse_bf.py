"""WMMSE beamforming (Shi et al. 2011) for the MISO broadcast and interfering broadcast channels, batched.

For beamformers ``W`` the MMSE receiver of user ``u`` and its weight are

    r_u = h_{c(u),u}ᴴ w_u / (Σ_v |h_{c(v),u}ᴴ w_v|² + σ²_u),     ω_u = 1 / e_u = 1 + SINR_u,

and each BS ``c`` updates its beamformers to ``W_c = (A_c + μ_c I)⁻¹ B_c`` with
``A_c = Σ_u α_u ω_u |r_u|² h_{c,u} h_{c,u}ᴴ`` (every user ``u`` BS ``c`` reaches) and the columns
``α_k ω_k r_k h_{c,k}`` of ``B_c`` (its own users). The multiplier ``μ_c >= 0`` is the smallest that
puts BS ``c`` within its budget: with ``A_c = V Λ Vᴴ`` and ``φ_i = ‖(Vᴴ B_c)_i‖²``, the power
``P(μ) = Σ_i φ_i / (λ_i + μ)²`` falls monotonically in ``μ``; ``μ = 0`` when ``P(0) <= P_c`` (and
``A_c`` is invertible), else it is the root of ``P(μ) = P_c``, found by Newton's method on
``P(μ)^{-1/2}`` from a closed-form point left of it (:func:`multipliers`). Each iteration does not
decrease the weighted sum rate (block coordinate ascent on the WMMSE form); a sample stops when it
gains less than ``tol`` (after at least ``min_iter`` iterations) or at ``max_iter``. Everything runs in
complex128 on the problem's device, all samples and cells at once; stopped samples keep their
beamformers.

When a BS has more antennas than there are users, the iteration runs in an orthonormal basis of the
span of its channels (every update lies in it; exact, and U instead of N dimensions).

The start is scaled MRT or ZF on each budget (``init``); ``starts > 1`` adds random starts (i.i.d.
complex Gaussian beamformers on the budget, from the solver's generator) and keeps each sample's best.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import Tensor

from mimo_l2o.components import Objective, Solver, SolverConfig
from mimo_l2o.errors import require
from mimo_l2o.problems import BEAMFORMING
from mimo_l2o.problems.beamforming import BeamformingProblem
from mimo_l2o.registry import SOLVERS
from mimo_l2o.solvers import beamformers

log = logging.getLogger(__name__)

INITS = ("mrt", "zf", "slnr")
_NEWTON_STEPS, _NEWTON_RTOL = 60, 1e-15  # μ's Newton steps: at most, and the relative step that stops them
# stopped samples leave the working batch once those still iterating are at most this fraction of it
_COMPACT_FRACTION = 0.75


def abs2(z: Tensor) -> Tensor:
    """``|z|²`` without the square root of ``abs`` (a third of WMMSE's time went to it)."""
    return z.real.square() + z.imag.square()


def multipliers(lam: Tensor, phi: Tensor, budget: Tensor) -> Tensor:
    """The smallest ``μ >= 0`` with ``Σ_i φ_i / (λ_i + μ)² <= P`` for ``lam, phi [..., N]`` (the
    eigenvalues of ``A`` and ``φ``) and ``budget [...]``: ``0`` where that holds at ``μ = 0`` with an
    invertible ``A``, else the root of ``ψ(μ) = P(μ)^{-1/2} − P^{-1/2}`` by Newton's method.

    ``ψ`` is increasing and concave (Moré & Sorensen 1983, the trust-region secular equation), so from a
    point left of the root every Newton step stays left of it and moves right, converging monotonically
    (quadratically near the root). The start ``max_i (√(φ_i/P) − λ_i)⁺`` is left of the root, as
    ``P(μ) >= φ_i / (λ_i + μ)²`` for every ``i``. The steps stop once none moves ``μ`` by more than
    ``_NEWTON_RTOL`` of itself (at most ``_NEWTON_STEPS``)."""
    lam = lam.clamp_min(0)
    invertible = lam.amin(-1) > 1e-12 * lam.amax(-1).clamp_min(torch.finfo(lam.dtype).tiny)
    at_zero = (phi / lam.clamp_min(torch.finfo(lam.dtype).tiny).square()).sum(-1)
    free = invertible & (at_zero <= budget)
    mu = ((phi / budget.unsqueeze(-1)).sqrt() - lam).amax(-1).clamp_min(0)
    # a singular A with φ = 0 on its null space: start just right of 0, where P is finite
    mu = torch.where(free, torch.ones_like(mu), mu.clamp_min(torch.finfo(mu.dtype).tiny ** 0.5))
    carried = phi > 0  # the terms of P: where φ_i = 0, d_i³ may overflow at a start just right of 0
    for _ in range(_NEWTON_STEPS):
        d = 1.0 / (lam + mu.unsqueeze(-1))
        power = torch.where(carried, phi * d.square(), 0).sum(-1)
        slope = torch.where(carried, phi * d.pow(3), 0).sum(-1)  # −P'(μ) / 2
        step = power * ((power / budget).sqrt() - 1) / slope.clamp_min(torch.finfo(mu.dtype).tiny)
        step = torch.where(free, torch.zeros_like(step), step.clamp_min(0))  # rounding: never step back
        mu = mu + step
        if not bool((step > _NEWTON_RTOL * mu).any()):
            break
    return torch.where(free, torch.zeros_like(mu), mu)


def _inner(Hall: Tensor, W: Tensor) -> Tensor:
    """``[b, U (receiving), U (beam)]``: ``h_{c(v),u}ᴴ w_v`` for every user ``u`` and beam ``v``."""
    b, c, _, users = Hall.shape
    return torch.einsum("bcnu,bcnk->buck", Hall.conj(), W).reshape(b, users, users)


def _objective(inner: Tensor, noise: Tensor, alpha: Tensor, prelog: float) -> Tensor:
    """The weighted sum rate [bit/s/Hz] from :func:`_inner`'s products."""
    g = abs2(inner)
    signal = g.diagonal(dim1=1, dim2=2)
    sinr = signal / (g.sum(-1) - signal + noise)
    return prelog * (alpha * sinr.log1p()).sum(-1) / math.log(2)


def wmmse_bf(
    problem: BeamformingProblem,
    W0: Tensor,
    tol: float = 1e-4,
    min_iter: int = 5,
    max_iter: int = 500,
    history: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """WMMSE from the start ``W0 [batch, cells, antennas, users per cell]`` (module docstring).

    Stopped samples leave the working batch once the samples still iterating are at most
    ``_COMPACT_FRACTION`` of it, so that the work of an iteration follows the samples still iterating.

    Returns ``W`` (complex128), and with ``history`` also the weighted sum rate after each iteration
    ``[T + 1, batch]`` (NaN once a sample stopped) and each sample's iteration count ``[batch]``.
    """
    p = problem.to(dtype=torch.float64)
    Hall = beamformers.all_channels(p)  # [b, c, N, U]
    b, c, n, users = Hall.shape
    k = users // c
    noise, budget, alpha = p.noise, p.budget, p.weights
    Hown = beamformers.own_channels(p)  # [b, c, N, k]
    W = W0.to(Hall.dtype)
    basis = None
    if n > users:
        # every update of BS c lies in the span of its channels to all users (A_c and B_c do): iterate in
        # an orthonormal basis Q_c of it, U instead of N dimensions (norms kept), and map back at the end
        basis = torch.linalg.qr(Hall).Q  # [b, c, N, U]
        Hall, Hown, W = basis.mH @ Hall, basis.mH @ Hown, basis.mH @ W
    W = W.clone()
    result = W.clone()
    index = torch.arange(b, device=W.device)  # the working batch's samples
    inner = _inner(Hall, W)
    objective = _objective(inner, noise, alpha, p.prelog)
    done = torch.zeros(b, dtype=torch.bool, device=W.device)  # over the working batch
    iterations = torch.full((b,), max_iter, dtype=torch.long, device=W.device)
    trace = [objective.clone()]
    for step in range(1, max_iter + 1):
        total = abs2(inner).sum(-1) + noise  # [w, U]
        signal = inner.diagonal(dim1=1, dim2=2)
        r = signal / total  # MMSE receivers
        omega = 1.0 / (1.0 - (r.conj() * signal).real).clamp_min(torch.finfo(torch.float64).tiny)
        s = alpha * omega * abs2(r)  # [w, U]
        A = (Hall * s[:, None, None, :].to(Hall.dtype)) @ Hall.mH  # [w, c, N, N]
        coef = (alpha * omega).to(Hall.dtype) * r  # α ω r, [w, U]
        B = Hown * coef.reshape(-1, c, 1, k)
        lam, V = torch.linalg.eigh(A)
        Phi = V.mH @ B  # [w, c, N, k]
        mu = multipliers(lam, abs2(Phi).sum(-1), budget)
        # λ as multipliers() takes it (rounding can leave a singular A's λ at −1e-16): λ + μ > 0 always
        new = V @ (Phi / (lam.clamp_min(0) + mu.unsqueeze(-1)).unsqueeze(-1).to(Phi.dtype))
        new_inner = _inner(Hall, new)
        new_objective = _objective(new_inner, noise, alpha, p.prelog)
        live = ~done
        W = torch.where(live[:, None, None, None], new, W)
        inner = torch.where(live[:, None, None], new_inner, inner)
        gain = new_objective - objective
        objective = torch.where(live, new_objective, objective)
        stop = live & (((gain < tol) & (step >= min_iter)) | (step >= max_iter))
        if history:
            row = torch.full((b,), torch.nan, dtype=torch.float64, device=W.device)
            row[index[live]] = objective[live]
            trace.append(row)
        if bool(stop.any()):
            result[index[stop]] = W[stop]
            iterations[index[stop]] = step
            done |= stop
        remaining = int((~done).sum())
        if remaining == 0:
            break
        if remaining <= _COMPACT_FRACTION * done.numel():  # drop the stopped samples from the batch
            keep = ~done
            Hall, Hown, noise, budget, alpha = Hall[keep], Hown[keep], noise[keep], budget[keep], alpha[keep]
            W, inner, objective, index = W[keep], inner[keep], objective[keep], index[keep]
            done = done[keep]
    log.debug("wmmse_bf: %d samples, iterations median %d, max %d", b, iterations.median(), iterations.max())
    if basis is not None:
        result = basis @ result
    if history:
        return result, torch.stack(trace), iterations
    return result


def start(problem: BeamformingProblem, init: str) -> Tensor:
    """The stated start (complex128): MRT or ZF scaled onto each BS's budget, or the SLNR beamformers
    (eq. 32 alternated with the power step of eq. 31), a start that already weighs the interference a
    BS causes in other cells."""
    p = problem.to(dtype=torch.float64)
    return {"mrt": beamformers.mrt, "zf": beamformers.zf, "slnr": beamformers.slnr_alternating}[init](p)


@dataclass
class WMMSEBeamformingConfig(SolverConfig):
    """Parameters
    ----------
    name : str
        Registry key, ``wmmse_bf``.
    init : str
        Start: ``mrt`` or ``zf`` (needs antennas >= users per cell), scaled onto each BS's budget, or
        ``slnr`` (multicell: 7 x 32 at 10 dBm needs 18 iterations from it instead of 254 from MRT, and
        ends 0.35 % higher).
    starts : int
        Number of starts; beyond the first, i.i.d. CN(0, 1) beamformers on the budget. Each sample keeps
        the best (an upper bound closer to the global optimum, at ``starts`` times the cost).
    tol : float
        Stop a sample when its weighted sum rate gains less than this in an iteration [bit/s/Hz].
    min_iter : int
        Iterations every sample runs before the ``tol`` rule applies.
    max_iter : int
        Largest number of iterations per sample.
    """

    name: str = MISSING
    init: str = "mrt"
    starts: int = 1
    tol: float = 1e-4
    min_iter: int = 5
    max_iter: int = 500

    def __post_init__(self) -> None:
        require(self.init in INITS, "init", f"must be one of {', '.join(INITS)}, got {self.init!r}")
        require(self.starts >= 1, "starts", f"must be an integer >= 1, got {self.starts}")
        require(self.tol > 0, "tol", f"must be > 0 [bit/s/Hz], got {self.tol}")
        require(self.min_iter >= 1, "min_iter", f"must be an integer >= 1, got {self.min_iter}")
        require(
            self.max_iter >= self.min_iter,
            "max_iter",
            f"must be >= min_iter ({self.min_iter}), got {self.max_iter}",
        )


@SOLVERS.register("wmmse_bf")
class WMMSEBeamforming(Solver):
    """WMMSE beamforming (Shi et al. 2011), batched; see :func:`wmmse_bf`."""

    display_name = "WMMSE"

    Config = WMMSEBeamformingConfig
    families = (BEAMFORMING,)
    objectives = ("sum_rate",)

    @property
    def stochastic(self) -> bool:  # random starts come from the generator of each chunk
        return self.config.starts > 1

    def refuses(self, problem: BeamformingProblem) -> str | None:
        refusal = beamformers.zf_refusal(problem) if self.config.init == "zf" else None
        return f"wmmse_bf init=zf: {refusal} (use init=mrt)" if refusal else None

    def solve(
        self, problem: BeamformingProblem, objective: Objective, generator: torch.Generator | None = None
    ) -> Tensor:
        """Beamformers ``[batch, cells, antennas, users per cell]`` (complex128, on the problem's device)."""
        cfg = self.config
        run = dict(tol=cfg.tol, min_iter=cfg.min_iter, max_iter=cfg.max_iter)
        best = wmmse_bf(problem, start(problem, cfg.init), **run)
        if cfg.starts == 1:
            return best
        p = problem.to(dtype=torch.float64)
        best_rate = objective(p, best)
        for _ in range(cfg.starts - 1):
            shape = (problem.batch_size, *problem.decision_shape)
            z = torch.randn(shape, generator=generator, dtype=torch.complex128)
            W = wmmse_bf(problem, beamformers.onto_budget(z.to(p.device), p.budget), **run)
            rate = objective(p, W)
            better = rate > best_rate
            best = torch.where(better[:, None, None, None], W, best)
            best_rate = torch.where(better, rate, best_rate)
        return best
