"""The metric contract: what every learner is scored by, on held-out networks.

``test/objective_learner``, ``test/objective_solver``, ``test/objective_ratio`` (learner ÷ solver, of
the mean objectives), ``test/objective_<baseline>``, ``test/time_learner_ms``, ``test/time_solver_ms``
(per sample, one batch on the same device after a warm-up, device synchronised, median of repeats),
``test/speedup`` (solver ÷ learner) and ``test/constraint_violation`` (largest excess over any budget;
0). Objectives with per-user rates add ``test/mse_se`` and per scheme ``test/se_mean_<name>``,
``test/se_p5_<name>`` (:func:`per_user_metrics`). The per-epoch ``val/objective_ratio`` of training is
the same ratio (:class:`ObjectiveRatio`) on the validation set.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from mimo_l2o.components import Objective
from mimo_l2o.problems import Problem


class ObjectiveRatio:
    """Mean objective of decisions on ``problem`` ÷ that of the ``reference`` decisions on it (the
    solver's): the ratio of the metric contract, for the per-epoch validation and the test set alike.

    Decisions are cast to the problem's decision dtype (float64 powers, complex128 beamformers).
    """

    def __init__(self, objective: Objective, problem: Problem, reference: Tensor):
        self.objective, self.problem = objective, problem
        self.reference = self.mean(reference)

    def mean(self, decision: Tensor) -> float:
        """The mean objective of ``decision`` on the problems."""
        return float(self.objective(self.problem, decision.to(self.problem.decision_dtype)).mean())

    def __call__(self, decision: Tensor) -> float:
        return self.mean(decision) / self.reference


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_sample_ms(
    fn: Callable[[], object],
    num_samples: int,
    device: torch.device,
    repeats: int,
    budget_s: float = float("inf"),
    times: list[float] | None = None,
) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up, per sample, in ms; the
    runs stop early once they have taken ``budget_s`` seconds together (at least one run), so that a
    solver of seconds per sample is not run ``repeats`` more times. ``times`` receives each run's
    seconds (for the spread)."""
    fn()
    synchronize(device)
    times = [] if times is None else times
    while len(times) < repeats and sum(times) < budget_s:
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times) / num_samples


def per_user_metrics(per_user: dict[str, Tensor], learner: str, solver: str) -> dict[str, float]:
    """From each scheme's per-user SE ``[samples, users]``: ``test/mse_se`` (mean over samples and users
    of the squared difference between the learner's and the solver's SE: the "MSE of SEs" of
    Sanguinetti et al. 2018), and per scheme the mean and the 5th percentile of the per-user SE
    (``test/se_mean_<name>``, ``test/se_p5_<name>``, with ``learner``/``solver`` for the two)."""
    out = {"test/mse_se": float((per_user[learner] - per_user[solver]).square().mean())}
    for name, se in per_user.items():
        tag = "learner" if name == learner else "solver" if name == solver else name
        flat = se.flatten().double()
        out[f"test/se_mean_{tag}"] = float(flat.mean())
        out[f"test/se_p5_{tag}"] = float(torch.quantile(flat.cpu(), 0.05))
    return out


class Evaluation:
    """The test metrics of one trained learner (:meth:`metrics`), with the per-sample objectives and
    per-user SEs of every scheme for the figures.

    Parameters
    ----------
    problem : Problem
        The test problems (float64, the run's device).
    objective : Objective
        The run's objective.
    decisions : dict[str, Tensor]
        Every scheme's feasible decisions on them: the learner's first, then the solver's, then the
        baselines'.
    learner, solver : str
        The names of the learner's and the solver's entries.
    """

    def __init__(
        self, problem: Problem, objective: Objective, decisions: dict[str, Tensor], learner: str, solver: str
    ):
        self.problem, self.objective, self.learner, self.solver = problem, objective, learner, solver
        self.decisions = {k: v.to(problem.decision_dtype) for k, v in decisions.items()}
        self.ratio = ObjectiveRatio(objective, problem, self.decisions[solver])
        self.per_sample = {k: objective(problem, d) for k, d in self.decisions.items()}
        per_user = {k: objective.per_user(problem, d) for k, d in self.decisions.items()}
        self.per_user = per_user if all(v is not None for v in per_user.values()) else {}

    def per_sample_csv(self) -> str:
        """The per-sample objective of every scheme as CSV: a header of the schemes' names (the learner's
        as ``learner``, the solver's as ``solver``), a row per test sample."""
        names = {self.learner: "learner", self.solver: "solver"}
        columns = {names.get(k, k): v.double().cpu() for k, v in self.per_sample.items()}
        rows = torch.stack(list(columns.values()), dim=1).tolist()
        lines = [",".join(columns)] + [",".join(f"{v:.7g}" for v in row) for row in rows]
        return "\n".join(lines) + "\n"

    def metrics(self) -> dict[str, float]:
        """``test/objective_*``, ``test/objective_ratio`` and, with per-user rates, the per-user metrics."""
        mean = {k: float(v.mean()) for k, v in self.per_sample.items()}
        out = {
            "test/objective_learner": mean[self.learner],
            "test/objective_solver": mean[self.solver],
            "test/objective_ratio": mean[self.learner] / mean[self.solver],
        }
        for name, value in mean.items():
            if name not in (self.learner, self.solver):
                out[f"test/objective_{name}"] = value
        if self.per_user:
            out.update(per_user_metrics(self.per_user, self.learner, self.solver))
        return out


def constraint_violation(problem: Problem, decision: Tensor) -> float:
    """The largest excess of ``decision`` over any budget, in the decision's own precision (a learner's
    float32 decision against float32 budgets: what it would deploy)."""
    return float(problem.to(dtype=decision.real.dtype).constraint_violation(decision).max())


def policy_decisions(policy: nn.Module, inputs: Tensor, problem: Problem) -> tuple[Tensor, float]:
    """A policy's decisions on ``inputs``, made feasible in the problem's precision, and their
    constraint violation before that (in the policy's own precision)."""
    with torch.no_grad():
        final = policy(inputs)
    violation = constraint_violation(problem, final)
    # in float64, float32 budgets may exceed the true ones by a rounding (float32(0.1) > 0.1): the
    # projection only removes that rounding
    return problem.project(final.to(problem.decision_dtype)), violation


def uplink_nmse_db(network) -> float | None:
    """What a run's uplink pilots are worth: the LS estimate's NMSE ``10 log10 E[‖Ĥ_LS − H_UL‖² /
    ‖H_UL‖²]`` [dB] over the samples (each sample's error relative to its own channels, all BSs and users
    together), where the network carries ``h_ul_ls``; ``None`` otherwise."""
    if "h_ul_ls" not in network.tensors:
        return None
    h, estimate = network["h_ul"], network["h_ul_ls"]
    dims = tuple(range(1, h.ndim))
    error = (estimate - h).abs().square().sum(dims) / h.abs().square().sum(dims)
    return float(10 * torch.log10(error.mean()))
