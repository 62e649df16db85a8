"""Fairness power control of Sanguinetti, Zappone & Debbah (2018): max-min SE (eq. 12) and max product
SINR (eq. 13) with per-cell sum-power budgets, batched, and cvxpy references.

After precoding, user ``k``'s SINR is ``p_k a_k / (Σ_j p_j b_kj + σ_k²)`` (eqs. 9-11): a
:class:`PowerControlProblem` with diagonal ``signal_gain`` (``a``) and a full ``interference_gain``
(``B[k, j] = b_kj``, its diagonal the self-interference of eq. 11), one budget group per cell.

* Max-min (eq. 12): the optimal common SINR and powers in closed form through Perron-Frobenius
  theory, for all samples at once (:func:`max_min_power`); reference: bisection with LP feasibility
  tests (:func:`max_min_bisection_cvxpy`).
* Max product (eq. 13): concave in the log-powers ``x = log p``; a batched barrier method with Newton
  steps (:func:`max_prod_power`); reference: the same convex form in cvxpy (:func:`max_prod_cvxpy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import MISSING
from torch import Tensor

from mimo_l2o.components import Objective, Solver, SolverConfig
from mimo_l2o.errors import require
from mimo_l2o.problem import PowerControlProblem, group_sum
from mimo_l2o.registry import SOLVERS
from mimo_l2o.solvers.baselines import MaxPower


def diagonal_form(problem: PowerControlProblem) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``a [B, n]``, ``B [B, n, n]``, ``σ² [B, n]``, ``group [n]``, ``budget [B, G]`` in float64.

    Raises ``ValueError`` unless every user has one power variable (``num_users == num_vars``) and
    ``signal_gain`` is diagonal with a positive diagonal.
    """
    a = problem.direct_gain().to(torch.float64)
    if not bool((a > 0).all()):
        raise ValueError("needs a diagonal signal_gain with a positive diagonal (user k served by p_k)")
    return (
        a,
        problem.interference_gain.to(torch.float64),
        problem.noise.to(torch.float64),
        problem.group.to(a.device),
        problem.budget.to(a),
    )


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


def max_min_bisection_cvxpy(
    problem: PowerControlProblem, tol: float = 1e-6
) -> tuple[Tensor, tuple[float, float]]:
    """Reference max-min for ONE sample: bisection on the common SINR ``t`` with LP feasibility tests.

    Feasibility of ``t``: ``p >= 0``, ``Σ_{k∈g} p_k <= P_g``, ``a_k p_k >= t (B_k · p + σ_k²)`` (eq. 12
    in SINR form). Starts from ``[min SINR at full power, min_k a_k P_g(k) / σ_k²]`` and stops when
    ``hi − lo <= tol · lo``.

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
    a_t, b_t, s_t, g_t, p_t = diagonal_form(problem)
    a, bmat, sigma = (v[0].cpu().numpy() for v in (a_t, b_t, s_t))
    group, budget = g_t.cpu().numpy(), p_t[0].cpu().numpy()
    indicator = (group[None, :] == np.arange(budget.shape[0])[:, None]).astype(float)

    p = cp.Variable(a.shape[0], nonneg=True)
    t = cp.Parameter(nonneg=True)
    lp = cp.Problem(cp.Minimize(0), [indicator @ p <= budget, cp.multiply(a, p) >= t * (bmat @ p + sigma)])
    full = problem.full_power().to(torch.float64)
    best = full[0].cpu()
    lo = float(problem.to(dtype=torch.float64).sinr(full).amin())
    hi = float(np.min(a * budget[group] / sigma))
    while hi - lo > tol * lo:
        t.value = 0.5 * (lo + hi)
        lp.solve(solver=cp.HIGHS)
        if lp.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            lo, best = t.value, torch.as_tensor(np.maximum(p.value, 0.0))
        else:
            hi = t.value
    return best, (lo, hi)


@SOLVERS.register("max_min_pf")
class MaxMinPF(Solver):
    """Exact max-min SE powers (eq. 12) by Perron-Frobenius, batched; see :func:`max_min_power`."""

    objectives = ("max_min",)

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

    Config = MaxMinCvxpyConfig
    objectives = ("max_min",)

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


def max_prod_power(
    problem: PowerControlProblem, tol: float = 1e-10, max_iter: int = 1000, mu: float = 20.0
) -> Tensor:
    """Max product SINR powers (eq. 13) for per-group sum-power budgets, all samples at once.

    In the log-powers ``x = log p`` the problem is concave: maximize
    ``Σ_k x_k − log(Σ_j B_kj e^{x_j} + σ_k²)`` (``Σ log SINR`` up to ``Σ log a``) subject to
    ``log Σ_{k∈g} e^{x_k} <= log P_g``. Barrier method: for ``t = 1, μ, μ², ...`` maximize
    ``φ(x) + Σ_g log(−h_g(x)) / t`` by damped Newton steps (analytic Hessians, batched solves,
    backtracking over 40 step sizes at once) from the strictly feasible ``p = full_power / 2``, until
    the duality gap per user ``G / (t U)`` is at most ``tol``. Then each user's SINR is within a factor
    ``exp(tol)`` of the optimum in geometric mean; multipliers ``λ_g = 1 / (S_g t (−h_g))`` satisfy the
    KKT conditions with complementary slackness ``≈ 1/t``.

    Parameters
    ----------
    problem : PowerControlProblem
        Diagonal ``signal_gain`` (see :func:`diagonal_form`), ``budget [B, G]``.
    tol : float
        Duality gap per user at which to stop (in ``log SINR``).
    max_iter : int
        Limit on the Newton steps in all.
    mu : float
        Factor by which ``t`` grows between centerings.

    Returns
    -------
    Tensor ``[B, n]``
        Powers, float64, on the problem's device.
    """
    _, interference, noise, group, budget = diagonal_form(problem)
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


def max_prod_cvxpy(problem: PowerControlProblem) -> Tensor:
    """Reference max product SINR (eq. 13) for ONE sample, in the log-power convex form with
    ``cp.log_sum_exp`` (exponential cones, Clarabel). Returns powers ``[n]`` (float64, CPU)."""
    import cvxpy as cp

    if problem.batch_size != 1:
        raise ValueError(f"max_prod_cvxpy takes one sample, got {problem.batch_size}")
    _, b_t, s_t, g_t, p_t = diagonal_form(problem)
    bmat, sigma = b_t[0].cpu().numpy(), s_t[0].cpu().numpy()
    group, budget = g_t.cpu().numpy(), p_t[0].cpu().numpy()
    n = sigma.shape[0]
    x = cp.Variable(n)
    terms = []
    for k in range(n):
        idx = np.flatnonzero(bmat[k] > 0)
        parts = [np.array([np.log(sigma[k])])]
        if idx.size:
            parts.insert(0, x[idx] + np.log(bmat[k, idx]))
        terms.append(cp.log_sum_exp(cp.hstack(parts)))
    constraints = [
        cp.log_sum_exp(x[np.flatnonzero(group == g)]) <= np.log(budget[g]) for g in range(len(budget))
    ]
    cp.Problem(cp.Maximize(cp.sum(x) - cp.sum(cp.hstack(terms))), constraints).solve(solver=cp.CLARABEL)
    return torch.as_tensor(np.exp(x.value))


@dataclass
class MaxProdNewtonConfig(SolverConfig):
    """Parameters
    ----------
    name : str
        Registry key, ``max_prod_newton``.
    tol : float
        Duality gap per user at which the barrier method stops (in ``log SINR``).
    max_iter : int
        Limit on the Newton steps in all.
    """

    name: str = MISSING
    tol: float = 1e-10
    max_iter: int = 1000

    def __post_init__(self) -> None:
        require(0 < self.tol < 1, "tol", f"must be in (0, 1), got {self.tol}")
        require(self.max_iter >= 1, "max_iter", f"must be an integer >= 1, got {self.max_iter}")


@SOLVERS.register("max_prod_newton")
class MaxProdNewton(Solver):
    """Max product SINR powers (eq. 13): batched barrier-Newton method; see :func:`max_prod_power`."""

    Config = MaxProdNewtonConfig
    objectives = ("max_prod",)

    def solve(
        self, problem: PowerControlProblem, objective: Objective, generator: torch.Generator | None = None
    ) -> Tensor:
        """Powers ``[batch, n]`` (float64, on the problem's device)."""
        return max_prod_power(problem, tol=self.config.tol, max_iter=self.config.max_iter)


@SOLVERS.register("max_prod_cvxpy")
class MaxProdCvxpy(Solver):
    """Reference max product SINR (eq. 13) with cvxpy, one sample at a time (slow)."""

    objectives = ("max_prod",)

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
