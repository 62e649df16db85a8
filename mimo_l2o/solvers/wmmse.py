"""WMMSE power control (Shi et al. 2011) for the scalar interference channel, batched.

This is the real-valued scalar version of Sun et al. (2018), Section II.B and Fig. 2, run on a
whole batch of channels at once: one tensor operation per step of Fig. 2 for all the samples still
iterating, in float64, on the device the problem lives on. A sample stops, as in the paper's data
generation (Section IV), when its weighted sum rate gains less than ``tol`` in an iteration or after
``max_iter`` iterations; stopped samples leave the working batch, so that the work of an iteration
is proportional to the number of samples still iterating.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import Tensor

from mimo_l2o.components import Objective, Solver, SolverConfig
from mimo_l2o.errors import require
from mimo_l2o.problems.power_control import PowerControlProblem
from mimo_l2o.registry import SOLVERS

# Stopped samples are removed from the working batch (and new ones brought in, see below) once the
# samples still iterating are at most this fraction of its rows. Until then stopped rows go on
# iterating harmlessly: their result and iteration count were saved when they stopped. Removing them
# at every change would cost a gather of the [n, K, K] gains each time, about as much as an iteration.
_COMPACT_FRACTION = 0.75
# On a CPU the working batch holds at most this many bytes of gains [n, K, K], so that they stay in the
# cache from one iteration to the next, and at least _MIN_WORKING samples, so that every tensor
# operation has enough work to hide its fixed cost; samples waiting for a place join it as others
# stop. On other devices it holds the whole batch.
_WORKING_BYTES = 4 * 1024 * 1024
_MIN_WORKING = 256


def _tiny(device: torch.device) -> Tensor:
    """The smallest normal float64, as a ``[1, 1, 1]`` tensor on ``device``."""
    return torch.full((1, 1, 1), torch.finfo(torch.float64).tiny, dtype=torch.float64, device=device)


def _check_scalar_ic(problem: PowerControlProblem) -> None:
    """Raise ``ValueError`` unless ``problem`` is a scalar interference channel WMMSE can solve."""
    batch, users, _ = problem.signal_gain.shape
    try:
        problem.direct_gain()
    except ValueError as err:
        raise ValueError(f"wmmse {err}") from None
    group = problem.group.to(problem.signal_gain.device)
    if group.shape != (users,) or not torch.equal(group, torch.arange(users, device=group.device)):
        raise ValueError("wmmse needs one budget per user (group == arange(num_users))")
    if problem.budget.shape != (batch, users):
        raise ValueError(
            f"wmmse needs budget [batch, num_users] = {(batch, users)}, got {tuple(problem.budget.shape)}"
        )


def wmmse(
    problem: PowerControlProblem,
    tol: float = 1e-5,
    max_iter: int = 500,
    history: bool = False,
    working_size: int | None = None,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Batched WMMSE of Sun et al. (2018) Fig. 2 for the scalar interference channel.

    With ``|h_kk|² = signal_gain[b, k, k]``, total received gains ``|h_kj|² = signal_gain +
    interference_gain`` and ``σ_k² = noise``, every sample starts at ``v_k = sqrt(p_max_k)``
    (``p_max = budget``), computes ``u, w`` (Fig. 2 steps 2-3) and repeats the Jacobi updates of
    ``v`` (step 7, clipped to ``[0, sqrt(p_max_k)]``), ``u`` (step 8) and ``w`` (step 9). The
    weighted sum rate ``prelog · Σ_k α_k log2(w_k)`` (``w_k = 1 + SINR_k``, the MMSE-SINR equality
    of Section II.B) is tracked per sample; a sample stops when it gains less than ``tol`` in an
    iteration or after ``max_iter`` iterations, and leaves the working batch. Samples are
    independent: the result of each does not depend on the others or on ``working_size``.

    Parameters
    ----------
    problem : PowerControlProblem
        Scalar interference channels: ``num_users == num_vars = K``, diagonal ``signal_gain``,
        ``group == arange(K)`` and ``budget [batch, K]`` (see
        :meth:`PowerControlProblem.interference_channel`). ``interference_gain [batch, K, K]`` may
        be any non-negative matrix (a non-zero diagonal is self-interference). Any dtype and
        device; the computation runs in float64 on the problem's device.
    tol : float
        Stop a sample when its weighted sum rate gains less than this in an iteration [bit/s/Hz].
    max_iter : int
        Largest number of iterations (updates of ``v``) per sample.
    history : bool
        Also return the objective trace and the iteration counts.
    working_size : int, optional
        Most samples iterated together; the others wait and join as samples stop. Default: the
        whole batch on accelerators; on a CPU, as many as keep the gains in the cache (about
        ``_WORKING_BYTES``), which is faster than streaming a large batch from memory at every
        iteration.

    Returns
    -------
    power : Tensor ``[batch, K]`` float64
        ``p_k = v_k²`` (Fig. 2 step 11).
    trace : Tensor ``[T + 1, batch]`` float64, only with ``history=True``
        ``trace[t, b]``: weighted sum rate [bit/s/Hz] of sample ``b`` after its iteration ``t``
        (``t = 0``: the initial point), NaN once it has stopped; ``T`` is the largest iteration
        count.
    iterations : Tensor ``[batch]`` long, only with ``history=True``
        Number of iterations each sample ran (``1 .. max_iter``).

    Raises
    ------
    ValueError
        If ``problem`` is not a scalar interference channel as described above.
    """
    _check_scalar_ic(problem)
    if tol <= 0 or max_iter < 1:
        raise ValueError(f"wmmse needs tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")
    f64 = torch.float64
    device = problem.device
    batch, users = problem.batch_size, problem.num_users
    if working_size is None:
        if device.type == "cpu":
            working_size = max(_MIN_WORKING, _WORKING_BYTES // (8 * users * users))
        else:
            working_size = batch
    working_size = max(1, working_size)

    x_final = torch.empty(batch, users, dtype=f64, device=device)  # x = v / sqrt(p_max), see _prepare
    iterations = torch.zeros(batch, dtype=torch.long, device=device)
    trace_entries: list[tuple[Tensor, Tensor, Tensor]] = []  # (iteration, sample, objective)

    # The working batch: one row per sample being iterated (or stopped, until the next compaction).
    #   rows [n]: its sample;  joined [n]: the step at which it joined (its iteration is step - joined);
    #   alive [n]: still iterating;  x_stop [n, K], step_stop [n]: its x and the step when it stopped;
    #   x, u, w [n, K], objective [n]: the WMMSE iterates;  gain and constants: see _prepare.
    # The gains [n, K, K], the bulk of it, live in two buffers used in turn: a compaction gathers the
    # rows it keeps from one into the other, where the joining samples are prepared after them.
    capacity = min(working_size, batch)
    buffers = [torch.empty(capacity, users, users, dtype=f64, device=device) for _ in range(2)]
    empty = torch.empty(0, dtype=torch.long, device=device)
    rows, joined, alive, step_stop = empty, empty, empty.bool(), empty
    x_stop = x = u = w = torch.empty(0, users, dtype=f64, device=device)
    objective = torch.empty(0, dtype=f64, device=device)
    gain = buffers[1][:0]
    constants = _prepare(problem[0:0], gain)
    n_rows = n_alive = 0
    queued = 0  # samples [0, queued) have joined the working batch
    step = 0  # iterations of the working batch so far
    oldest = 0  # the step at which the oldest row still iterating joined
    tiny = _tiny(device)
    while True:
        if n_alive <= _COMPACT_FRACTION * n_rows:
            # save the stopped rows, drop them, and let waiting samples join
            done = ~alive
            x_final[rows[done]] = x_stop[done]
            iterations[rows[done]] = step_stop[done] - joined[done]
            keep = alive.nonzero().squeeze(1)
            joining = min(capacity - n_alive, batch - queued)
            buffers.reverse()
            torch.index_select(gain, 0, keep, out=buffers[0][:n_alive])
            gain = buffers[0][: n_alive + joining]
            new = _prepare(problem[queued : queued + joining], gain[n_alive:])
            x_new = torch.ones(joining, users, dtype=f64, device=device)  # step 1: v_k^0 = sqrt(p_max_k)
            u_new, w_new, objective_new = _receive(x_new, gain[n_alive:], *new)  # steps 2-3
            rows_new = torch.arange(queued, queued + joining, device=device)
            joined_new = torch.full((joining,), step, dtype=torch.long, device=device)  # step 4: t = 0
            alive_new = torch.ones(joining, dtype=torch.bool, device=device)
            if history:
                trace_entries.append((torch.zeros_like(joined_new), rows_new, objective_new))
            queued += joining
            kept = (rows, joined, alive, x_stop, step_stop, x, u, w, objective, *constants)
            joins = (
                rows_new,
                joined_new,
                alive_new,
                x_new,
                joined_new,
                x_new,
                u_new,
                w_new,
                objective_new,
                *new,
            )
            rows, joined, alive, x_stop, step_stop, x, u, w, objective, *constants = (
                torch.cat([old[keep], joining_rows]) for old, joining_rows in zip(kept, joins, strict=True)
            )
            n_rows = n_alive = rows.shape[0]
            if n_rows == 0:
                break
            oldest = int(joined.min())
        _, g, _, alpha = constants

        step += 1  # step 6, for every row: t = step - joined
        # step 7: v_k = [α_k w_k u_k |h_kk| / Σ_j α_j w_j u_j² |h_jk|²] clipped to [0, sqrt(p_max_k)]
        awu = alpha * w * u
        # Σ_j α_j w_j u_j² gain_jk, plus the smallest normal float64 so that 0/0 (nobody hears k) is 0
        denominator = torch.baddbmm(tiny, (awu * u)[:, None, :], gain).squeeze(1)
        x = awu.mul_(g).div_(denominator).clamp_(0.0, 1.0)
        u, w, new_objective = _receive(x, gain, *constants)  # steps 8-9
        # stopping rule of Section IV: obj_new - obj_old < tol, or the iteration limit
        stop = new_objective - objective < tol
        if step - oldest >= max_iter:  # some rows reach the limit now
            stop |= step - joined >= max_iter
        stop &= alive
        objective = new_objective
        if history:
            trace_entries.append(((step - joined)[alive], rows[alive], objective[alive]))
        x_stop = torch.where(stop[:, None], x, x_stop)
        step_stop = torch.where(stop, step, step_stop)
        alive ^= stop
        n_alive = int(alive.count_nonzero())

    power = x_final.square_().mul_(problem.budget.to(f64))  # p_k = v_k² = x_k² p_max_k (step 11)
    if not history:
        return power
    length = int(iterations.max()) + 1 if batch else 1
    trace = torch.full((length, batch), float("nan"), dtype=f64, device=device)
    for t, sample, value in trace_entries:
        trace[t, sample] = value
    return power, trace, iterations


def _prepare(problem: PowerControlProblem, gain: Tensor) -> list[Tensor]:
    """Per-sample constants of the iteration, in float64: fills ``gain``, returns ``[noise, g, g2, alpha]``.

    The iteration works in ``x_k = v_k / sqrt(p_max_k) ∈ [0, 1]``, so that the box of (2) is
    ``[0, 1]`` for every user; Fig. 2 is unchanged once the gains absorb ``p_max``:

    - ``gain [n, K, K]`` (written in place): ``|h_kj|² p_max_j``, so that ``Σ_j gain_kj x_j² =
      Σ_j |h_kj|² v_j²``;
    - ``noise [n, 1, K]``: ``σ_k²``;
    - ``g [n, K]``: ``|h_kk| sqrt(p_max_k)``, so that ``g_k x_k = |h_kk| v_k``; ``g2 = g²``;
    - ``alpha [n, K]``: ``prelog · α_k`` (the v update of step 7 is invariant to a common scale of
      the weights, so the pre-log folds in).
    """
    f64 = torch.float64
    p_max = problem.budget.to(f64)
    signal = problem.signal_gain.to(f64)
    torch.add(signal, problem.interference_gain.to(f64), out=gain).mul_(p_max[:, None, :])
    g = signal.diagonal(dim1=1, dim2=2).sqrt() * p_max.sqrt()
    alpha = problem.weights.to(f64) * problem.prelog
    return [problem.noise.to(f64)[:, None, :], g, g * g, alpha]


def _receive(
    x: Tensor, gain: Tensor, noise: Tensor, g: Tensor, g2: Tensor, alpha: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Fig. 2 steps 8-9 (and 2-3) at ``x [n, K]``: ``u``, ``w`` ``[n, K]`` and the objective ``[n]``."""
    q = x * x  # p_k / p_max_k
    # Σ_j |h_kj|² v_j² + σ_k², the denominator of step 2 (step 8 of Fig. 2 misprints it), as a row
    # vector times a matrix, which batched BLAS does faster than a matrix times a column
    total = torch.baddbmm(noise, q[:, None, :], gain.mT).squeeze(1)
    u = (g * x).div_(total)  # step 8
    # step 9: w = 1 / (1 - u_k |h_kk| v_k) = total / (total - |h_kk|² v_k²) = 1 + SINR_k, the same
    # number without the cancellation of 1 - u|h|v at high SINR
    w = total / (total - g2 * q)
    objective = (alpha * torch.log2(w)).sum(dim=1)  # Σ_k α_k log2(1 + SINR_k)
    return u, w, objective


@dataclass
class WMMSEConfig(SolverConfig):
    """Parameters
    ----------
    name : str
        Registry key, ``wmmse``.
    tol : float
        Stop a sample when its weighted sum rate gains less than this in an iteration [bit/s/Hz].
    max_iter : int
        Iteration limit per sample.
    """

    name: str = MISSING
    tol: float = 1e-5
    max_iter: int = 500

    def __post_init__(self) -> None:
        require(self.tol > 0, "tol", f"must be > 0 [bit/s/Hz], got {self.tol}")
        require(self.max_iter >= 1, "max_iter", f"must be an integer >= 1, got {self.max_iter}")


@SOLVERS.register("wmmse")
class WMMSE(Solver):
    """WMMSE power control (Sun et al. 2018 Fig. 2) for scalar interference channels.

    Maximizes the weighted sum rate (a stationary point of it) with per-user budgets; returns
    powers ``[batch, K]`` in float64 on the problem's device. See :func:`wmmse`.
    """

    display_name = "WMMSE"

    Config = WMMSEConfig
    objectives = ("sum_rate",)

    def refuses(self, problem: PowerControlProblem) -> str | None:
        try:
            _check_scalar_ic(problem)
        except ValueError as err:
            return str(err)
        return None

    def solve(
        self, problem: PowerControlProblem, objective: Objective, generator: torch.Generator | None = None
    ) -> Tensor:
        """Powers ``[batch, K]`` (float64) for ``problem``; ``objective`` must be the sum rate."""
        return wmmse(problem, tol=self.config.tol, max_iter=self.config.max_iter)
