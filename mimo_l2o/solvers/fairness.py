"""Fairness power control of Sanguinetti, Zappone & Debbah (2018): max-min SE (eq. 12) and max product
SINR (eq. 13) with per-cell sum-power budgets, batched, and cvxpy references.

After precoding, user ``k``'s SINR is ``p_k a_k / (Σ_j p_j b_kj + σ_k²)`` (eqs. 9-11): a
:class:`PowerControlProblem` with diagonal ``signal_gain`` (``a``) and a full ``interference_gain``
(``B[k, j] = b_kj``, its diagonal the self-interference of eq. 11), one budget group per cell.

* Max-min (eq. 12): the optimal common SINR and powers in closed form through Perron-Frobenius
  theory, for all samples at once (:func:`max_min_power`); reference: bisection with LP feasibility
  tests (:func:`max_min_bisection_cvxpy`).
* Max product (eq. 13): concave in the log-powers ``x = log p``; batched minorize-maximize steps, then
  Newton steps on the KKT conditions, with a barrier method as fallback (:func:`max_prod_power`);
  reference: the same convex form in cvxpy (:func:`max_prod_cvxpy`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import MISSING
from torch import Tensor

from mimo_l2o.components import Objective, Solver, SolverConfig
from mimo_l2o.errors import require
from mimo_l2o.problems.power_control import PowerControlProblem, group_sum
from mimo_l2o.registry import SOLVERS
from mimo_l2o.solvers.baselines import MaxPower


def diagonal_refusal(solver: Solver, problem: PowerControlProblem) -> str | None:
    """Why :func:`diagonal_form` cannot be taken of ``problem`` (the ``refuses`` of the solvers built on
    it), or ``None``."""
    try:
        diagonal_form(problem)
    except ValueError as err:
        return f"{solver.name} {err}"
    return None


def diagonal_form(problem: PowerControlProblem) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``a [B, n]``, ``B [B, n, n]``, ``σ² [B, n]``, ``group [n]``, ``budget [B, G]`` in float64.

    Raises ``ValueError`` unless every user has one power variable (``num_users == num_vars``) and
    ``signal_gain`` is diagonal with a positive diagonal, and every interference gain and noise power is
    non-negative (a negative gain has no physical meaning, and the Perron-Frobenius and log-power forms
    both rest on it).
    """
    a = problem.direct_gain().to(torch.float64)
    if not bool((a > 0).all()):
        raise ValueError("needs a diagonal signal_gain with a positive diagonal (user k served by p_k)")
    interference = problem.interference_gain.to(torch.float64)
    if bool((interference < 0).any()) or bool((problem.noise < 0).any()):
        raise ValueError(
            f"needs interference gains and noise >= 0, got a minimum gain of {float(interference.min()):.3g}"
        )
    return (
        a,
        interference,
        problem.noise.to(torch.float64),
        problem.group.to(a.device),
        problem.budget.to(a),
    )


def _scaled_form(problem: PowerControlProblem) -> tuple[Tensor, Tensor, Tensor, int]:
    """The dimensionless form of eqs. (12)-(13): powers ``q_k = p_k / P_g(k)`` against budgets 1, gains
    ``B̃_kj = B_kj P_g(j) / σ_k²`` against noise 1 (``SINR_k = (a_k P_g(k) / σ_k²) q_k / (B̃_k · q + 1)``).

    Returns ``B̃ [B, n, n]``, ``group [n]``, the scale ``P_g(k) [B, n]`` (``p = q · scale``) and ``G``.
    """
    _, interference, noise, group, budget = diagonal_form(problem)
    scale = budget[:, group]
    return interference * scale[:, None, :] / noise[:, :, None], group, scale, budget.shape[1]


# ---------------------------------------------------------------------------------------------
# Max-min fairness, eq. (12)
# ---------------------------------------------------------------------------------------------
def max_min_power(problem: PowerControlProblem) -> tuple[Tensor, Tensor]:
    """Exact max-min powers for per-group sum-power budgets, all samples at once.

    With ``G = diag(1/a) B`` and ``u = σ²/a``, equal SINRs ``t`` mean ``p = t (G p + u)``; the budget
    of group ``g`` binds when ``e_gᵀ p = P_g``, i.e. ``p = t (G + u e_gᵀ / P_g) p``, so ``1/t`` is the
    Perron root of that nonnegative matrix. The largest root over groups gives the optimum
    ``t* = 1 / max_g ρ(G + u e_gᵀ / P_g)`` with powers ``p* = t* (I − t* G)⁻¹ u`` (every SINR equal to
    ``t*``, the group of the largest root at full power, the others within budget).

    Parameters
    ----------
    problem : PowerControlProblem
        Diagonal ``signal_gain`` (see :func:`diagonal_form`), ``budget [B, G]``.

    Returns
    -------
    p : Tensor ``[B, n]``
        Optimal powers (float64, on the problem's device), scaled so that the binding group spends
        exactly its budget.
    t : Tensor ``[B]``
        The optimal common SINR ``t*``.
    """
    a, interference, noise, group, budget = diagonal_form(problem)
    n, num_groups = a.shape[1], budget.shape[1]
    gmat = interference / a[:, :, None]  # G = diag(1/a) B
    u = noise / a
    indicator = torch.nn.functional.one_hot(group, num_groups).T.to(a)  # e_g, [G, n]
    rank_one = u[:, None, :, None] * (indicator / budget[:, :, None])[:, :, None, :]  # u e_gᵀ / P_g
    mats = gmat[:, None] + rank_one  # [B, G, n, n]
    rho = torch.linalg.eigvals(mats).abs().amax(dim=-1).amax(dim=-1)  # Perron roots, max over groups
    t = 1.0 / rho
    eye = torch.eye(n, dtype=a.dtype, device=a.device)
    p = t[:, None] * torch.linalg.solve(eye - t[:, None, None] * gmat, u)  # p* = t* (I − t* G)⁻¹ u
    ratio = (group_sum(p, group, num_groups) / budget).amax(dim=1)
    return p / ratio[:, None], t


@functools.lru_cache(maxsize=16)
def _max_min_lp(group: tuple[int, ...]):
    """The feasibility LP of :func:`max_min_bisection_cvxpy` for one variable-to-group map, compiled
    once (cvxpy parameters): ``q >= 0``, ``Σ_{k∈g} q_k <= 1``, ``snr ∘ q >= T q + t`` with ``snr``,
    ``T = t B̃`` and ``t`` set for each ``t`` and problem (the rows scaled as in the SINR, which keeps
    HiGHS's absolute feasibility tolerance small against them). Returns ``(problem, q, snr, T, t)``."""
    import cvxpy as cp

    n, idx = len(group), np.asarray(group)
    indicator = (idx[None, :] == np.arange(idx.max() + 1)[:, None]).astype(float)
    q = cp.Variable(n, nonneg=True)  # p / P_g
    snr, coef, level = cp.Parameter(n, nonneg=True), cp.Parameter((n, n), nonneg=True), cp.Parameter(n)
    lp = cp.Problem(cp.Minimize(0), [indicator @ q <= 1.0, cp.multiply(snr, q) >= coef @ q + level])
    return lp, q, snr, coef, level


def max_min_bisection_cvxpy(
    problem: PowerControlProblem, tol: float = 1e-6
) -> tuple[Tensor, tuple[float, float]]:
    """Reference max-min for ONE sample: bisection on the common SINR ``t`` with LP feasibility tests.

    Feasibility of ``t``: ``p >= 0``, ``Σ_{k∈g} p_k <= P_g``, ``a_k p_k >= t (B_k · p + σ_k²)`` (eq. 12
    in SINR form), posed in the dimensionless form of :func:`_scaled_form` (powers over budgets, each
    SINR constraint over ``σ_k²``): with realistic gains (``a ~ 1e-12``, ``σ² ~ 4e-13``) the LP in watts
    has coefficients below the solver's feasibility tolerance and ``p = 0`` passes for feasible. Starts
    from ``[min SINR at full power, min_k a_k P_g(k) / σ_k²]`` and stops when ``hi − lo <= tol · lo``.
    The LP is compiled once per group structure and only its parameters change (:func:`_max_min_lp`).

    Returns
    -------
    p : Tensor ``[n]``
        Powers of the last feasible LP (float64, CPU).
    (lo, hi) : tuple[float, float]
        Final bracket: ``lo`` feasible, ``hi`` infeasible (or the initial upper bound).
    """
    import cvxpy as cp

    if problem.batch_size != 1:
        raise ValueError(f"max_min_bisection_cvxpy takes one sample, got {problem.batch_size}")
    a_t, _, s_t, _, _ = diagonal_form(problem)
    gains_t, g_t, scale_t, _ = _scaled_form(problem)
    gains, scale = gains_t[0].cpu().numpy(), scale_t[0].cpu().numpy()
    snr = (a_t[0] / s_t[0]).cpu().numpy() * scale  # a_k P_g(k) / σ_k²
    lp, q, snr_p, coef, level = _max_min_lp(tuple(g_t.tolist()))
    snr_p.value = snr
    full = problem.full_power().to(torch.float64)
    best = full[0].cpu()
    lo = float(problem.to(dtype=torch.float64).sinr(full).amin())
    hi = float(np.min(snr))
    while hi - lo > tol * lo:
        t = 0.5 * (lo + hi)
        coef.value, level.value = t * gains, np.full_like(snr, t)
        lp.solve(solver=cp.HIGHS)
        if lp.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            lo, best = t, torch.as_tensor(np.maximum(q.value, 0.0) * scale)
        else:
            hi = t
    return best, (lo, hi)


@SOLVERS.register("max_min_pf")
class MaxMinPF(Solver):
    """Exact max-min SE powers (eq. 12) by Perron-Frobenius, batched; see :func:`max_min_power`."""

    display_name = "Max-min (optimal)"

    objectives = ("max_min",)

    refuses = diagonal_refusal

    def solve(
        self, problem: PowerControlProblem, objective: Objective, generator: torch.Generator | None = None
    ) -> Tensor:
        """Powers ``[batch, n]`` (float64, on the problem's device)."""
        return max_min_power(problem)[0]


@dataclass
class MaxMinCvxpyConfig(SolverConfig):
    """Parameters
    ----------
    name : str
        Registry key, ``max_min_cvxpy``.
    tol : float
        Relative width of the final bisection bracket on the common SINR.
    """

    name: str = MISSING
    tol: float = 1e-6

    def __post_init__(self) -> None:
        require(0 < self.tol < 1, "tol", f"must be in (0, 1), got {self.tol}")


@SOLVERS.register("max_min_cvxpy")
class MaxMinCvxpy(Solver):
    """Reference max-min (eq. 12): bisection with cvxpy LPs, one sample at a time (slow)."""

    display_name = "Max-min (CVX)"

    Config = MaxMinCvxpyConfig
    objectives = ("max_min",)

    refuses = diagonal_refusal

    def solve(
        self, problem: PowerControlProblem, objective: Objective, generator: torch.Generator | None = None
    ) -> Tensor:
        """Powers ``[batch, n]`` (float64, on the problem's device)."""
        tol = self.config.tol
        rows = [max_min_bisection_cvxpy(problem[i : i + 1], tol)[0] for i in range(problem.batch_size)]
        return torch.stack(rows).to(problem.device)


# ---------------------------------------------------------------------------------------------
# Max product SINR, eq. (13)
# ---------------------------------------------------------------------------------------------
def _log_prod_terms(x: Tensor, interference: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``φ(x) = Σ_k x_k − log(Σ_j B_kj e^{x_j} + σ_k²)`` (``Σ log SINR`` less ``Σ log a``), its
    gradient and Hessian, for ``x [b, n]``."""
    p = x.exp()
    total = torch.einsum("bkj,bj->bk", interference, p) + noise  # I_k
    share = interference * p[:, None, :] / total[:, :, None]  # W_kj = B_kj p_j / I_k
    col = share.sum(dim=1)
    value = x.sum(dim=1) - total.log().sum(dim=1)
    grad = 1.0 - col
    hess = share.transpose(1, 2) @ share - torch.diag_embed(col)  # −Σ_k (diag(W_k) − W_k W_kᵀ)
    return value, grad, hess


def _barrier_terms(
    x: Tensor, group: Tensor, log_budget: Tensor, same: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``Σ_g log(−h_g)`` with ``h_g = log Σ_{k∈g} e^{x_k} − log P_g``, its gradient and Hessian."""
    num_groups = log_budget.shape[1]
    p = x.exp()
    total = group_sum(p, group, num_groups)
    h = total.log() - log_budget  # < 0 inside
    q = p / total[:, group]  # ∇h_g restricted to group g
    hk = h[:, group]
    value = (-h).log().sum(dim=1)
    grad = q / hk
    coef = (1.0 / hk + 1.0 / hk**2)[:, :, None]
    hess = torch.diag_embed(q / hk) - q[:, :, None] * q[:, None, :] * same * coef
    return value, grad, hess


def _values(
    x: Tensor, interference: Tensor, noise: Tensor, group: Tensor, log_budget: Tensor, inv_t: float
) -> Tensor:
    """``φ(x) + Σ_g log(−h_g) / t`` for ``x [b, s, n]`` (``-inf`` outside the budgets): ``[b, s]``."""
    p = x.exp()
    total = torch.einsum("bkj,bsj->bsk", interference, p) + noise[:, None, :]
    h = group_sum(p, group, log_budget.shape[1]).log() - log_budget[:, None, :]
    value = x.sum(dim=2) - total.log().sum(dim=2) + inv_t * (-h).log().sum(dim=2)
    return value.masked_fill(~(h < 0).all(dim=2), -math.inf)


_MAX_CENTERING = 100  # Newton steps per centering (damped Newton needs far fewer from the last center)


def _max_prod_barrier(
    interference: Tensor, noise: Tensor, group: Tensor, budget: Tensor, tol: float, max_iter: int, mu: float
) -> Tensor:
    """The barrier method of :func:`max_prod_power` (its fallback): powers ``[b, n]``.

    For ``t = 1, μ, μ², ...`` maximize ``φ(x) + Σ_g log(−h_g(x)) / t`` (``φ`` of
    :func:`_log_prod_terms`, ``h_g = log Σ_{k∈g} e^{x_k} − log P_g``) by damped Newton steps (analytic
    Hessians, batched solves, backtracking over 40 step sizes at once) from the strictly feasible
    ``p = full_power / 2``, until the duality gap per user ``G / (t n)`` is at most ``tol`` or
    ``max_iter`` Newton steps are spent in all.
    """
    batch, n = noise.shape
    num_groups = budget.shape[1]
    log_budget = budget.log()
    same = (group[:, None] == group[None, :]).to(noise)
    x = (0.5 * budget / torch.bincount(group, minlength=num_groups).to(budget))[:, group].log()
    steps = 0.5 ** torch.arange(40, dtype=noise.dtype, device=noise.device)  # [S]
    t = 1.0
    iters = 0
    while True:
        done = torch.zeros(batch, dtype=torch.bool, device=x.device)
        for _ in range(_MAX_CENTERING):
            if iters >= max_iter or bool(done.all()):
                break
            iters += 1
            value, grad, hess = _log_prod_terms(x, interference, noise)
            bvalue, bgrad, bhess = _barrier_terms(x, group, log_budget, same)
            value, grad, hess = value + bvalue / t, grad + bgrad / t, hess + bhess / t
            delta = torch.linalg.solve(-hess, grad)  # Newton direction (−H positive definite)
            decrement = (grad * delta).sum(dim=1)
            trial = x[:, None, :] + steps[None, :, None] * delta[:, None, :]
            new = _values(trial, interference, noise, group, log_budget, 1.0 / t)
            # Armijo, and a strict gain: a decrement at rounding level gains nothing and ends the centering
            ok = (new >= value[:, None] + 0.25 * steps[None, :] * decrement[:, None]) & (new > value[:, None])
            first = ok.to(torch.int8).argmax(dim=1)
            found = ok.any(dim=1) & ~done
            step = torch.where(found, steps[first], torch.zeros_like(decrement))
            x = x + step[:, None] * delta
            done = done | ~found | (decrement <= 1e-13 * (1 + value.abs()))  # converged to rounding
        if num_groups / (t * n) <= tol or iters >= max_iter:
            break
        t *= mu
    return x.exp()


def _matvec(gains: Tensor, q: Tensor) -> Tensor:
    """``I = B̃ q + 1``, ``[b, n]`` (batched BLAS: several times faster than ``einsum`` on a CPU)."""
    return torch.bmm(gains, q[:, :, None])[:, :, 0] + 1.0


def _vecmat(v: Tensor, gains: Tensor) -> Tensor:
    """``B̃ᵀ v``, ``[b, n]``."""
    return torch.bmm(v[:, None, :], gains)[:, 0, :]


def _mm_multipliers(
    c: Tensor, group: Tensor, count: Tensor, start: Tensor | None = None, steps: int = 3
) -> tuple[Tensor, Tensor]:
    """Per-group multipliers of the minorant step: ``μ_g`` with ``Σ_{m∈g} 1/(c_m + μ_g) = 1`` where
    that sum exceeds 1 at ``μ = 0`` (the budget binds), else ``μ_g = 0``.

    ``u(μ) = 1 / Σ_{m∈g} 1/(c_m + μ)`` is concave and increasing, so Newton's method on ``u(μ) = 1``
    climbs monotonically to the root from below (quadratically near it) and lands below it from above.
    It starts at ``start`` (the last step's multipliers) and is kept above the lower bound
    ``n_g − mean_{m∈g} c_m`` (AM-HM) of the root. Returns ``μ [b, G]`` and whether each budget binds
    ``[b, G]`` (bool). A few steps suffice: the minorant step rescales onto the budget anyway.
    """
    num_groups = count.shape[0]
    c = c.clamp_min(torch.finfo(c.dtype).tiny ** 0.5)  # a user nobody hears: 1/c stays finite
    binds = group_sum(1.0 / c, group, num_groups) > 1.0
    lower = (count - group_sum(c, group, num_groups) / count).clamp_min(0.0)
    mu = lower if start is None else torch.maximum(lower, start)
    for _ in range(steps):
        inv = 1.0 / (c + mu[:, group])
        total = group_sum(inv, group, num_groups)
        mu = mu + (total - 1.0) * total / group_sum(inv * inv, group, num_groups)  # (1 − u) / u'
        mu = torch.maximum(mu, lower)
    return torch.where(binds, mu, torch.zeros_like(mu)), binds


def _minorant_steps(
    gains: Tensor, group: Tensor, count: Tensor, q: Tensor, steps: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``steps`` minorize-maximize steps from ``q``; returns ``q``, the last multipliers ``μ [b, G]`` and
    the binding budgets ``[b, G]`` (bool).

    ``−log(B̃_k · q + 1)`` is convex in ``q``, so its tangent at the current ``q⁰`` bounds it from below;
    the bound ``Σ_m log q_m − c_m q_m + const`` with ``c_m = Σ_k B̃_km / (B̃_k · q⁰ + 1)`` is maximized under
    the budgets by ``q_m = 1 / (c_m + μ_g(m))`` (:func:`_mm_multipliers`). Every step raises
    ``Σ log SINR``; the iteration converges linearly to the optimum.
    """
    num_groups = count.shape[0]
    binds = torch.ones(q.shape[0], num_groups, dtype=torch.bool, device=q.device)
    mu = torch.zeros(q.shape[0], num_groups, dtype=q.dtype, device=q.device)
    for step in range(steps):
        c = _vecmat(1.0 / _matvec(gains, q), gains)
        mu, binds = _mm_multipliers(c, group, count, mu if step else None)
        q = 1.0 / (c + mu[:, group])
        used = group_sum(q, group, num_groups)  # 1 up to the multiplier's rounding where binding
        q = q / torch.where(binds, used, torch.ones_like(used))[:, group]
    return q, mu, binds


def _nonneg_lcp(mat: Tensor, d: Tensor, free: Tensor, pivots: int) -> tuple[Tensor, Tensor]:
    """``ν >= 0`` with ``w = M ν − d >= 0`` and ``νᵀ w = 0``, for positive definite ``M [b, G, G]`` and
    ``d [b, G]``: the dual of the step's quadratic program, by block principal pivoting (Júdice & Pires
    1994).

    From the guess ``free`` (the groups with ``ν > 0``) solve ``M_FF ν_F = d_F``; swap every group
    with ``ν_g < 0`` or ``w_g < 0`` (or, after three swaps that did not reduce their number, the last
    such group only, which terminates for P-matrices). At most ``pivots`` solves of ``G × G`` systems.
    Returns ``ν [b, G]`` and ``free [b, G]``.
    """
    batch, num_groups = d.shape
    eye = torch.eye(num_groups, dtype=d.dtype, device=d.device)
    eps = 1e-13 * (1.0 + d.abs().amax(dim=1, keepdim=True))
    best = torch.full((batch,), num_groups + 1, device=d.device)
    stalls = torch.zeros(batch, dtype=torch.long, device=d.device)
    nu = d.new_zeros(batch, num_groups)
    for _ in range(pivots):
        mask = free.to(d)
        system = mat * mask[:, :, None] * mask[:, None, :] + eye * (1.0 - mask)[:, None, :]
        nu = torch.linalg.solve_ex(system, d * mask)[0]
        w = (mat @ nu[:, :, None])[:, :, 0] - d
        wrong = (free & (nu < -eps)) | (~free & (w < -eps))
        count = wrong.sum(dim=1)
        if not bool(wrong.any()):
            break
        stalls = torch.where(count < best, 0, stalls + 1)
        best = torch.minimum(best, count)
        last = wrong & (wrong.flip(1).cumsum(1).flip(1) == 1)
        free = free ^ torch.where((stalls >= 3)[:, None], last, wrong)
    return nu.clamp_min(0.0), free & (nu > 0)


def _newton_polish(
    gains: Tensor, group: Tensor, q: Tensor, lam: Tensor, free: Tensor, tol: float, steps: int
) -> tuple[Tensor, Tensor]:
    """Newton steps on the KKT conditions (sequential quadratic programming with exact Hessians) in
    ``x = log q``, from ``q`` with multiplier estimates ``lam [b, G]`` and the guess ``free [b, G]`` of the
    binding budgets, until the KKT residual is at most ``tol``; returns ``q [b, n]`` and which samples
    converged ``[b]``.

    At a feasible ``q`` with ``I = B̃ q + 1``, ``c = B̃ᵀ (1/I)`` and group sums ``S``, the gradient of
    ``φ(x) = Σ_k x_k − log I_k`` is ``g = 1 − q c`` and the budgets are ``log S_g <= 0``. The KKT residual
    is the largest of the stationarity error ``max_k |g_k − λ_g q_k|``, ``max_g −λ_g`` and
    ``max_g |λ_g (1 − S_g)|`` with the multipliers ``λ_g = Σ_{m∈g} g_m / S_g``: in the original problem
    ``|p_k ∂_k − λ_g' p_k|``, ``−λ_g' P_g`` and ``|λ_g' (P_g − S_g)|`` for ``λ_g' = Σ_{m∈g} p_m ∂_m / S_g``
    (``∂_k`` the derivative of ``Σ log SINR``), all dimensionless.

    A step solves the quadratic program of the Lagrangian (Hessian with the current multipliers,
    augmented by ``λ_g`` times the outer product of the constraint gradient, which leaves the step of
    a binding group unchanged) and the linearized budgets, in ``y = q dx``:

        max  (1/q − c)ᵀ y − ½ yᵀ (diag((c + λ_g) / q) − B̂ᵀ B̂) y   s.t.  Σ_{m∈g} y_m <= −S_g log S_g,

    ``B̂ = diag(1/I) B̃``: one Cholesky factorization, and the ``G``-dimensional dual (a linear
    complementarity problem, :func:`_nonneg_lcp`) whose solution gives the new multipliers. Then
    ``q ← q e^{dx}``, each group above its budget (or binding, after a full step) scaled onto it; a step
    that lowers ``φ`` beyond rounding is halved, up to 8 times. Near the optimum the binding budgets are
    found and the convergence is quadratic. Samples leave the working batch as they converge; those
    still unconverged after ``steps`` steps, with a failed factorization or without an ascent step are
    returned unconverged.
    """
    batch, n = q.shape
    num_groups = lam.shape[1]
    onehot = torch.nn.functional.one_hot(group, num_groups).to(q)  # E, [n, G]
    tol = max(tol, 16 * n * torch.finfo(q.dtype).eps)  # rounding floor of the residual
    out, converged = q.clone(), torch.zeros(batch, dtype=torch.bool, device=q.device)
    work = torch.arange(batch, device=q.device)
    total = _matvec(gains, q)
    value = (q / total).log().sum(dim=1)
    for it in range(steps + 1):
        inv = 1.0 / total
        c = _vecmat(inv, gains)
        grad = 1.0 - q * c
        used = group_sum(q, group, num_groups)
        unit = group_sum(grad, group, num_groups) / used  # multipliers per unit power
        stationarity = (grad - q * unit[:, group]).abs().amax(dim=1)
        residual = torch.maximum(stationarity, (unit * (1.0 - used)).abs().amax(dim=1)).maximum(
            -unit.amin(dim=1)
        )
        ok = residual <= tol
        stop = ok | (it == steps)
        if bool(stop.any()):
            out[work[ok]], converged[work[ok]] = q[ok], True
            keep = ~stop
            if not bool(keep.any()):
                break
            work, gains, q, lam, free = work[keep], gains[keep], q[keep], lam[keep], free[keep]
            total, value, inv, c, used = total[keep], value[keep], inv[keep], c[keep], used[keep]
        scaled = gains * inv[:, :, None]  # B̂
        system = torch.bmm(scaled.transpose(1, 2), scaled).neg_()
        system.diagonal(dim1=1, dim2=2).add_((c + lam[:, group]) / q)
        chol, info = torch.linalg.cholesky_ex(system)
        rhs = torch.cat([(1.0 / q - c)[:, :, None], onehot.expand(len(q), n, num_groups)], dim=2)
        solved = torch.cholesky_solve(rhs, chol)
        base, basis = solved[:, :, 0], solved[:, :, 1:]
        slack = -used * used.log()  # linearized room under each budget, >= 0
        lam, free = _nonneg_lcp(
            onehot.T @ basis, group_sum(base, group, num_groups) - slack, free, 4 * num_groups
        )
        dx = (base - (basis @ lam[:, :, None])[:, :, 0]) / q
        bad = (info != 0) | ~torch.isfinite(dx).all(dim=1)
        dx = torch.where(bad[:, None], torch.zeros_like(dx), dx)
        # the full step, halved where it lowers φ beyond rounding
        step = torch.ones_like(value)
        accept = torch.zeros_like(bad)
        new_q, new_total, new_value = q.clone(), total.clone(), value.clone()
        rounding = 1e-13 * (1.0 + value.abs())
        for _ in range(9):
            todo = ~accept & ~bad
            if not bool(todo.any()):
                break
            idx = todo.nonzero()[:, 0]
            trial = q[idx] * (step[idx, None] * dx[idx]).exp()
            trial_used = group_sum(trial, group, num_groups)
            snap = (trial_used > 1.0) | (free[idx] & (step[idx] == 1.0)[:, None])
            trial = trial / torch.where(snap, trial_used, torch.ones_like(trial_used))[:, group]
            trial_total = _matvec(gains[idx], trial)
            trial_value = (trial / trial_total).log().sum(dim=1)
            good = trial_value >= value[idx] - rounding[idx]
            idx = idx[good]
            new_q[idx], new_total[idx], new_value[idx] = trial[good], trial_total[good], trial_value[good]
            accept[idx] = True
            step = torch.where(todo, 0.5 * step, step)
        q, total, value = new_q, new_total, new_value
        failed = bad | ~accept
        if bool(failed.any()):  # no ascent step: leaves unconverged
            keep = ~failed
            if not bool(keep.any()):
                break
            work, gains, q, lam, free = work[keep], gains[keep], q[keep], lam[keep], free[keep]
            total, value = total[keep], value[keep]
    return out, converged


def max_prod_power(
    problem: PowerControlProblem,
    tol: float = 1e-10,
    max_iter: int = 1000,
    mu: float = 20.0,
    mm_steps: int = 10,
    newton_steps: int = 20,
) -> Tensor:
    """Max product SINR powers (eq. 13) for per-group sum-power budgets, all samples at once.

    In the log-powers ``x = log p`` the problem is concave: maximize
    ``Σ_k x_k − log(Σ_j B_kj e^{x_j} + σ_k²)`` (``Σ log SINR`` up to ``Σ log a``) subject to
    ``log Σ_{k∈g} e^{x_k} <= log P_g``. Its KKT conditions in ``p``: ``1/p_m − Σ_k B_km / I_k = λ_g(m)``
    with ``I_k = Σ_j B_kj p_j + σ_k²``, ``λ_g >= 0`` and ``λ_g (P_g − S_g) = 0``. Solved in the
    dimensionless form of :func:`_scaled_form` (powers over budgets, gains over noise), so any scale works:

    1. ``mm_steps`` minorize-maximize steps ``p_m ← 1/(c_m + λ_g)``, ``c_m = Σ_k B_km / I_k``, from equal
       power at full budget (:func:`_minorant_steps`): each raises ``Σ log SINR`` (linear convergence)
       and gives multiplier estimates and a guess of the binding budgets;
    2. Newton steps on the KKT conditions with the binding budgets chosen by a ``G``-dimensional
       complementarity problem at each step (:func:`_newton_polish`, quadratic convergence), at most
       ``newton_steps``, until the dimensionless KKT residual (stationarity ``max_k |p_k ∂_k − λ_g p_k|``
       with ``∂_k`` the derivative of ``Σ log SINR``, dual feasibility, complementary slackness) is at
       most ``tol``. Samples leave the batch as they converge; from the minorant start, 2-6 steps;
    3. the samples that do not converge so (none in the tests, on cellular M-MMSE/MR/RZF problems or
       on badly scaled random ones) are solved by the barrier method with damped Newton steps
       (``_max_prod_barrier``: duality gap per user ``tol``, at most ``max_iter`` Newton steps, barrier
       parameter growing by ``mu``), about 30 times slower.

    At most ``4 n ε`` relative is then taken off groups that exceed their budget by rounding, so that
    the powers are feasible exactly.

    Parameters
    ----------
    problem : PowerControlProblem
        Diagonal ``signal_gain`` (see :func:`diagonal_form`), ``budget [B, G]``.
    tol : float
        KKT residual at which the Newton steps stop, and duality gap per user (in ``log SINR``) at which
        the fallback stops. Residuals below ``16 n ε`` (rounding) count as met.
    max_iter : int
        Limit on the Newton steps of the barrier fallback in all.
    mu : float
        Factor by which the barrier parameter of the fallback grows between centerings.
    mm_steps : int
        Minorize-maximize steps before the Newton steps.
    newton_steps : int
        Limit on the Newton steps of stage 2; 0 sends every sample to the barrier fallback.

    Returns
    -------
    Tensor ``[B, n]``
        Powers, float64, on the problem's device.
    """
    gains, group, scale, num_groups = _scaled_form(problem)
    batch, n = scale.shape
    count = torch.bincount(group, minlength=num_groups).to(gains)
    q = (1.0 / count)[group].expand(batch, n)
    q, lam, binds = _minorant_steps(gains, group, count, q, mm_steps)
    converged = torch.zeros(batch, dtype=torch.bool, device=q.device)
    if newton_steps > 0:
        q, converged = _newton_polish(gains, group, q, lam, binds, tol, newton_steps)
    if not bool(converged.all()):
        rest = (~converged).nonzero()[:, 0]
        ones = torch.ones(len(rest), num_groups, dtype=q.dtype, device=q.device)
        noise = torch.ones(len(rest), n, dtype=q.dtype, device=q.device)
        q = q.index_copy(0, rest, _max_prod_barrier(gains[rest], noise, group, ones, tol, max_iter, mu))
    p = q * scale
    # groups on their budget may exceed it by rounding: pull those back by a few ulps, to feasible
    budget = problem.budget.to(p)
    used = group_sum(p, group, num_groups)
    shrink = budget / used * (1.0 - 4 * n * torch.finfo(p.dtype).eps)
    return p * torch.where(used > budget, shrink, torch.ones_like(shrink))[:, group]


# the floor of a dimensionless cross gain in :func:`max_prod_cvxpy` (its logarithm is a parameter): a zero
# gain counts as 1e-30 of the noise, which changes no term by more than 1e-30 relative
_LOG_GAIN_FLOOR = 1e-30


@functools.lru_cache(maxsize=16)
def _max_prod_program(group: tuple[int, ...]):
    """The log-power program of :func:`max_prod_cvxpy` for one variable-to-group map, compiled once
    (cvxpy parameters): maximize ``Σ_k x_k − Σ_k log(Σ_j e^{x_j + L_kj} + 1)`` subject to
    ``log Σ_{k∈g} e^{x_k} <= 0``, with ``L = log B̃`` set per problem. Returns ``(problem, x, L)``."""
    import cvxpy as cp

    n, idx = len(group), np.asarray(group)
    x = cp.Variable(n)  # log(p / P_g)
    log_gain = cp.Parameter((n, n))
    rows = np.ones((n, 1)) @ cp.reshape(x, (1, n), order="C") + log_gain  # [k, j]: x_j + L_kj
    terms = cp.log_sum_exp(cp.hstack([rows, np.zeros((n, 1))]), axis=1)  # the noise: e^0
    budgets = [cp.log_sum_exp(x[np.flatnonzero(idx == g)]) <= 0 for g in range(idx.max() + 1)]
    return cp.Problem(cp.Maximize(cp.sum(x) - cp.sum(terms)), budgets), x, log_gain


def max_prod_cvxpy(problem: PowerControlProblem) -> Tensor:
    """Reference max product SINR (eq. 13) for ONE sample, in the log-power convex form with
    ``cp.log_sum_exp`` (exponential cones, Clarabel), posed in the dimensionless form of
    :func:`_scaled_form` and compiled once per group structure (:func:`_max_prod_program`); a zero cross
    gain enters as ``_LOG_GAIN_FLOOR``. Returns powers ``[n]`` (float64, CPU)."""
    import cvxpy as cp

    if problem.batch_size != 1:
        raise ValueError(f"max_prod_cvxpy takes one sample, got {problem.batch_size}")
    gains_t, g_t, scale_t, _ = _scaled_form(problem)
    program, x, log_gain = _max_prod_program(tuple(g_t.tolist()))
    log_gain.value = np.log(np.maximum(gains_t[0].cpu().numpy(), _LOG_GAIN_FLOOR))
    program.solve(solver=cp.CLARABEL)
    return torch.as_tensor(np.exp(x.value) * scale_t[0].cpu().numpy())


@dataclass
class MaxProdNewtonConfig(SolverConfig):
    """Parameters
    ----------
    name : str
        Registry key, ``max_prod_newton``.
    tol : float
        KKT residual at which the Newton steps of :func:`max_prod_power` stop, and duality gap per user
        (in ``log SINR``) at which its barrier fallback stops.
    max_iter : int
        Limit on the Newton steps of the barrier fallback in all.
    """

    name: str = MISSING
    tol: float = 1e-10
    max_iter: int = 1000

    def __post_init__(self) -> None:
        require(0 < self.tol < 1, "tol", f"must be in (0, 1), got {self.tol}")
        require(self.max_iter >= 1, "max_iter", f"must be an integer >= 1, got {self.max_iter}")


@SOLVERS.register("max_prod_newton")
class MaxProdNewton(Solver):
    """Max product SINR powers (eq. 13), batched: minorize-maximize and Newton steps on the KKT conditions,
    barrier method as fallback; see :func:`max_prod_power`."""

    display_name = "Max-prod (optimal)"

    Config = MaxProdNewtonConfig
    objectives = ("max_prod",)

    refuses = diagonal_refusal

    def solve(
        self, problem: PowerControlProblem, objective: Objective, generator: torch.Generator | None = None
    ) -> Tensor:
        """Powers ``[batch, n]`` (float64, on the problem's device)."""
        return max_prod_power(problem, tol=self.config.tol, max_iter=self.config.max_iter)


@SOLVERS.register("max_prod_cvxpy")
class MaxProdCvxpy(Solver):
    """Reference max product SINR (eq. 13) with cvxpy, one sample at a time (slow)."""

    display_name = "Max-prod (CVX)"

    objectives = ("max_prod",)

    refuses = diagonal_refusal

    def solve(
        self, problem: PowerControlProblem, objective: Objective, generator: torch.Generator | None = None
    ) -> Tensor:
        """Powers ``[batch, n]`` (float64, on the problem's device)."""
        return torch.stack([max_prod_cvxpy(problem[i : i + 1]) for i in range(problem.batch_size)]).to(
            problem.device
        )


# ---------------------------------------------------------------------------------------------
# Baseline
# ---------------------------------------------------------------------------------------------
@SOLVERS.register("equal")
class EqualPower(MaxPower):
    """Each group's budget split evenly over its users, ``p_jk = P_max / K``: the max-power baseline
    under the name the massive MIMO papers give it."""

    display_name = "Equal power"
