"""Sequential convex approximation with Dinkelbach's transform for the sum energy efficiency of
Raghunath, Peng & Jorswieck (2023), eq. (1): the paper's baseline, ``ee_sca``.

The paper names the method ("SCA with Dinkelbach's transform") and nothing else; this is the algorithm.
For the objective ``J(p) = Σ_k r_k(p) / D_k(p)`` with rates ``r_k = c·ln(T_k / I_k)`` (``T_k`` the
received power plus noise, ``I_k`` the interference plus noise, ``c = B·prelog / ln 2``) and power
consumption ``D_k = μ Σ_{v: owner_v = k} p_v + P_c``, one outer iteration at the point ``p^t``:

1. minorizes each rate by the tangent of the concave ``ln I_k`` (a concave lower bound, equal in value
   and gradient at ``p^t``):  ``r̃_k(p) = c·[ln T_k(p) − ln I_k(p^t) − (I_k(p) − I_k(p^t)) / I_k(p^t)]``;
2. takes the Dinkelbach parameters of the *sum* of ratios with Jong-type weights, ``β_k = 1 / D_k(p^t)``
   and ``λ_k = r_k(p^t) / D_k(p^t)``, and solves the concave program (cvxpy, exponential cones)

       p* = argmax  Σ_k β_k [r̃_k(p) − λ_k D_k(p)]   s.t.  p ≥ 0,  Σ_{v ∈ group g} p_v ≤ budget_g;

   at ``p^t`` the surrogate has exactly ``J``'s gradient, so its fixed points are KKT points of
   ``max J`` (plain per-UE Dinkelbach, ``β_k = 1``, lacks this);
3. moves to ``p^t + τ (p* − p^t)`` for the first ``τ = 1, ½, ¼, …`` (down to ``1e-4``) that does not
   lower ``J``: the EE never decreases;
4. stops once the EE grows by at most ``tol`` relative, no step keeps it from falling, the convex
   solvers fail, or after ``max_iter`` outer iterations.

It starts where a practitioner would: every budget split evenly over its variables (``p_max / K`` per
UE-AP pair). Computed per sample in float64 numpy, on gains divided by the receiver noise and powers
divided by their group's budget (dimensionless, well conditioned). The convex program is written in
disciplined parametrized form (DPP), so cvxpy compiles it once per problem structure and process;
CLARABEL solves it, with ECOS (where installed) and SCS as fallbacks on a solver error or a failed
solve. Samples are spread over worker processes; each sample's result depends neither on the others
nor on the number of workers.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mimo_l2o.components import Objective, Solver, SolverConfig
from mimo_l2o.errors import require
from mimo_l2o.problems.power_control import PowerControlProblem
from mimo_l2o.registry import SOLVERS

MIN_STEP = 1e-4  # smallest fraction of the way to the surrogate's maximizer that is tried
# cvxpy solvers in the order tried (those installed), with their options: tolerances tighter than the
# defaults let the outer iterations converge to ~1e-8 in EE at the same cost; SCS is first-order, so
# tight and patient
CONIC_SOLVERS = (
    ("CLARABEL", {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "tol_ktratio": 1e-8}),
    ("ECOS", {}),
    ("SCS", {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 20000}),
)


@dataclass(frozen=True)
class _Structure:
    """What the samples of a batch share: ``owner [V]`` (the user of each variable), ``group [V]`` (its
    budget group), the EE's constants and the stopping rule."""

    owner: np.ndarray
    group: np.ndarray
    num_users: int
    num_groups: int
    rate_scale: float  # c = bandwidth · 1e-6 · prelog / ln 2: Mbit/s per nat of ln(T / I)
    pa_inefficiency: float
    circuit_power: float
    tol: float
    max_iter: int


@dataclass(frozen=True)
class _Sample:
    """One sample in dimensionless form: with ``q_v = p_v / budget_{group_v}``, ``signal @ q`` and
    ``interference @ q`` are each user's received signal and interference over its noise, and
    ``scale [V]`` is each variable's budget (``p = q · scale``)."""

    signal: np.ndarray  # [K, V]
    interference: np.ndarray  # [K, V]
    scale: np.ndarray  # [V]


def _evaluate(s: _Structure, x: _Sample, q: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """``J`` (Mbit/J) at ``q`` and the rates ``r [K]`` (Mbit/s), consumptions ``D [K]`` (W) and
    ``I [K]`` (interference plus noise, over the noise)."""
    interference = 1.0 + x.interference @ q
    rate = s.rate_scale * np.log1p((x.signal @ q) / interference)
    spent = s.pa_inefficiency * np.bincount(s.owner, weights=x.scale * q, minlength=s.num_users)
    consumption = spent + s.circuit_power
    return float(np.sum(rate / consumption)), rate, consumption, interference


class _Surrogate:
    """The concave program of one outer iteration for one problem structure, compiled once (DPP):

    maximize ``Σ_k w_k t_k − cᵀ q``  s.t.  ``t_k ≤ ln(1 + A_k q)``,  ``Σ_{v ∈ g} q_v ≤ 1``,  ``q ≥ 0``

    with parameters ``A = signal + interference`` (``T_k / noise = 1 + A_k q``), ``w_k = β_k c`` and
    ``c_v = Σ_k w_k interference_kv / I_k(q^t) + μ β_owner λ_owner scale_v`` (constants dropped).
    """

    def __init__(self, s: _Structure, num_vars: int):
        import cvxpy as cp

        self.cp = cp
        self.q = cp.Variable(num_vars, nonneg=True)
        t = cp.Variable(s.num_users)
        self.gain = cp.Parameter((s.num_users, num_vars), nonneg=True)
        self.weight = cp.Parameter(s.num_users, nonneg=True)
        self.cost = cp.Parameter(num_vars, nonneg=True)
        members = (s.group[None, :] == np.arange(s.num_groups)[:, None]).astype(float)  # [G, V]
        self.problem = cp.Problem(
            cp.Maximize(self.weight @ t - self.cost @ self.q),
            [t <= cp.log(1.0 + self.gain @ self.q), members @ self.q <= 1.0],
        )
        assert self.problem.is_dpp()
        installed = set(cp.installed_solvers())
        self.solvers = [(name, opts) for name, opts in CONIC_SOLVERS if name in installed]
        self.problem.get_problem_data(self.solvers[0][0])  # compiles now (forked workers inherit it)

    def solve(self, gain: np.ndarray, weight: np.ndarray, cost: np.ndarray) -> np.ndarray | None:
        """The maximizer ``q*``, or ``None`` when every solver fails."""
        cp = self.cp
        self.gain.value, self.weight.value, self.cost.value = gain, weight, cost
        for name, opts in self.solvers:
            try:
                with warnings.catch_warnings():  # "may be inaccurate": the ascent step checks every step
                    warnings.simplefilter("ignore", UserWarning)
                    self.problem.solve(solver=name, warm_start=False, **opts)
            except cp.error.SolverError:
                continue
            if self.problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and self.q.value is not None:
                if np.all(np.isfinite(self.q.value)):
                    return np.array(self.q.value, dtype=np.float64)
        return None


_SURROGATES: dict[tuple, _Surrogate] = {}  # per process: compiled programs by problem structure


def _surrogate(s: _Structure, num_vars: int) -> _Surrogate:
    key = (s.num_users, s.num_groups, num_vars, s.group.tobytes())
    if key not in _SURROGATES:
        _SURROGATES[key] = _Surrogate(s, num_vars)
    return _SURROGATES[key]


def _onto_budgets(q: np.ndarray, group: np.ndarray, num_groups: int) -> np.ndarray:
    """Clip negatives, then scale each group above its budget 1 down onto it."""
    q = np.maximum(q, 0.0)
    used = np.bincount(group, weights=q, minlength=num_groups)
    return q / np.maximum(used, 1.0)[group]


def _sca(s: _Structure, x: _Sample) -> tuple[np.ndarray, list[float]]:
    """The algorithm of the module docstring for one sample: ``q`` and the EE after each outer iteration
    (the first entry at the even split)."""
    num_vars = x.scale.shape[0]
    surrogate = _surrogate(s, num_vars)
    count = np.bincount(s.group, minlength=s.num_groups).astype(float)
    q = 1.0 / count[s.group]  # the even split of every budget
    gain = x.signal + x.interference
    value, rate, consumption, interference = _evaluate(s, x, q)
    history = [value]
    for _ in range(s.max_iter):
        beta = 1.0 / consumption
        lam = rate / consumption
        weight = beta * s.rate_scale
        cost = (weight / interference) @ x.interference + s.pa_inefficiency * (beta * lam)[s.owner] * x.scale
        target = surrogate.solve(gain, weight, cost)
        if target is None:
            break
        direction = _onto_budgets(target, s.group, s.num_groups) - q
        step = 1.0
        while step >= MIN_STEP:
            trial = q + step * direction
            new = _evaluate(s, x, trial)
            if new[0] >= value:
                break
            step /= 2
        else:
            break  # no ascent along the segment: stationary up to the solver's accuracy
        improvement = new[0] - value
        q, (value, rate, consumption, interference) = trial, new
        history.append(value)
        if improvement <= s.tol * abs(history[-2]):
            break
    return _onto_budgets(q, s.group, s.num_groups), history


def _sca_chunk(s: _Structure, samples: list[_Sample]) -> list[tuple[np.ndarray, list[float]]]:
    return [_sca(s, x) for x in samples]


def _split(problem: PowerControlProblem, objective: Objective, tol: float, max_iter: int):
    """The batch as a :class:`_Structure` and one :class:`_Sample` per sample (float64 numpy, CPU)."""
    if not hasattr(objective.config, "circuit_power"):
        raise ValueError(f"ee_sca maximizes the energy efficiency, got objective={objective.name}")
    cfg = objective.config
    prob = problem.to(device="cpu", dtype=torch.float64)
    batch, num_users, num_vars = prob.batch_size, prob.num_users, prob.num_vars
    if prob.owner is None:
        if num_users != num_vars:
            raise ValueError("a problem without owner needs one variable per user")
        owner = np.arange(num_users)
    else:
        owner = prob.owner.numpy().astype(np.int64)
    group = prob.group.numpy().astype(np.int64)
    structure = _Structure(
        owner=owner,
        group=group,
        num_users=num_users,
        num_groups=prob.num_groups,
        rate_scale=cfg.bandwidth * 1e-6 * prob.prelog / math.log(2.0),
        pa_inefficiency=float(cfg.pa_inefficiency),
        circuit_power=float(cfg.circuit_power),
        tol=tol,
        max_iter=max_iter,
    )
    scale = prob.budget[:, prob.group].numpy()  # [B, V]
    unit = scale[:, None, :] / prob.noise.numpy()[:, :, None]  # per unit of q, over the noise
    signal = prob.signal_gain.numpy() * unit
    interference = prob.interference_gain.numpy() * unit
    samples = [_Sample(signal[b], interference[b], scale[b]) for b in range(batch)]
    return structure, samples


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Terminate a pool's workers and drop its queued work (``shutdown`` alone waits for both)."""
    for process in list((pool._processes or {}).values()):  # no public way before Python 3.14
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def run_sca(
    problem: PowerControlProblem,
    objective: Objective,
    tol: float = 1e-6,
    max_iter: int = 200,
    workers: int = 1,
) -> tuple[Tensor, list[list[float]]]:
    """:func:`_sca` on every sample of ``problem``: powers ``[batch, num_vars]`` (float64, the problem's
    device) and each sample's EE history (Mbit/J after each outer iteration, the first at the even
    split; never decreasing). ``workers`` processes (0: one per available CPU; 1: this process), each
    given contiguous chunks of samples."""
    structure, samples = _split(problem, objective, tol, max_iter)
    workers = available_cpus() if workers == 0 else workers
    workers = min(workers, len(samples))
    if workers <= 1:
        results = _sca_chunk(structure, samples)
    else:
        size = math.ceil(len(samples) / (4 * workers))  # a few chunks per worker: balances the load
        chunks = [samples[i : i + size] for i in range(0, len(samples), size)]
        # fork on Linux: the workers start at once with everything imported; they use numpy and cvxpy
        # only (never torch or a GPU), which is safe in a child of a threaded parent
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        _surrogate(structure, problem.num_vars)  # compiled once, here, before the workers fork
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
        try:
            results = [r for part in pool.map(_sca_chunk, [structure] * len(chunks), chunks) for r in part]
        except BaseException:  # Ctrl-C, SIGTERM: stop the workers now, not after the queued chunks
            stop_pool(pool)
            raise
        pool.shutdown()
    q = np.stack([r[0] for r in results])
    p = torch.from_numpy(q * np.stack([x.scale for x in samples]))
    return p.to(problem.device), [r[1] for r in results]


@dataclass
class EESCAConfig(SolverConfig):
    """Parameters
    ----------
    name : str
        Registry key, ``ee_sca``.
    tol : float
        Stop once an outer iteration raises the EE by at most this fraction.
    max_iter : int
        Most outer iterations (convex programs) per sample.
    workers : int
        Worker processes over the samples; 0: one per available CPU; 1: in this process.
    """

    name: str = "ee_sca"
    tol: float = 1e-6
    max_iter: int = 200
    workers: int = 0

    def __post_init__(self) -> None:
        require(0 < self.tol < 1, "tol", f"must be in (0, 1), got {self.tol}")
        require(self.max_iter >= 1, "max_iter", f"must be an integer >= 1, got {self.max_iter}")
        require(self.workers >= 0, "workers", f"must be an integer >= 0, got {self.workers}")


@SOLVERS.register("ee_sca")
class EESCA(Solver):
    """SCA of the rates inside Dinkelbach's iteration for the sum of per-UE ratios, with cvxpy, one
    sample per worker process at a time, from the even split (module docstring)."""

    display_name = "SCA"

    Config = EESCAConfig
    objectives = ("energy_efficiency",)

    def solve(
        self, problem: PowerControlProblem, objective: Objective, generator: torch.Generator | None = None
    ) -> Tensor:
        """Powers ``[batch, num_vars]`` (float64, the problem's device); deterministic (no randomness)."""
        cfg = self.config
        return run_sca(problem, objective, cfg.tol, cfg.max_iter, cfg.workers)[0]
