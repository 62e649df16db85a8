"""Batched max-min and max-product power control against the cvxpy references, on one CPU thread.

Sanguinetti, Zappone & Debbah (2018), eqs. (12)-(13), per-cell sum-power budgets. On the same problems:

- max-min: :func:`max_min_power` (Perron-Frobenius, all samples at once) against
  :func:`max_min_bisection_cvxpy` (bisection on the common SINR with HiGHS LPs, ``--bisection-tol``);
- max-product: :func:`max_prod_power` (minorize-maximize steps, then Newton steps on the KKT
  conditions, all samples at once) against :func:`max_prod_cvxpy` (exponential cones, Clarabel); and,
  for comparison, its barrier-method fallback alone on the first ``--barrier-samples`` problems.

Problems: cellular massive MIMO (``--cells`` cells of ``--users`` UEs, the scenario's other defaults,
M-MMSE or MR precoding with ``--realizations`` channel realizations), or ``--scenario random`` (the
random instances of ``tests/test_fairness.py``). The batched solvers run ``--repeats`` times over all
``--samples`` problems; cvxpy runs ``--repeats`` times over the first ``--cvxpy-samples`` of them, one
problem at a time, each reference compiled once (cvxpy parameters) and only its data set per problem.
Times per problem are medians over the repeats of (run time / problems). Agreement:
the largest relative difference over the cvxpy problems of the objective (the smallest SINR for
max-min, the geometric-mean SINR for max-product).

    python benchmarks/fairness.py --samples 10000 --cvxpy-samples 50 --repeats 5 --users 5 --cells 4
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch load their BLAS

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402
from wmmse import machine  # noqa: E402

from mimo_l2o.objectives.fairness import MaxProd  # noqa: E402
from mimo_l2o.problems.power_control import PowerControlProblem  # noqa: E402
from mimo_l2o.solvers import fairness  # noqa: E402


def cellular(samples: int, cells: int, users: int, precoder: str, realizations: int, seed: int):
    from mimo_l2o.precoders.massive_mimo import MMMSE, MR
    from mimo_l2o.scenarios.cellular import Cellular

    network = Cellular(Cellular.Config(num_cells=cells, num_users=users)).sample(
        samples, torch.Generator().manual_seed(seed)
    )
    cls = {"mmmse": MMMSE, "mr": MR}[precoder]
    return cls(cls.Config(num_realizations=realizations))(network)


def random_instances(samples: int, cells: int, users: int, seed: int) -> PowerControlProblem:
    """``make_problem`` of tests/test_fairness.py: a ~ 100-1000, b ~ U(0, 1), σ² ~ U(0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    n = cells * users
    a = 100 * (1 + 9 * torch.rand(samples, n, generator=g, dtype=torch.float64))
    b = torch.rand(samples, n, n, generator=g, dtype=torch.float64)
    noise = 0.5 + torch.rand(samples, n, generator=g, dtype=torch.float64)
    budget = 0.5 + torch.rand(samples, cells, generator=g, dtype=torch.float64)
    return PowerControlProblem(
        signal_gain=torch.diag_embed(a),
        interference_gain=b,
        noise=noise,
        group=torch.arange(cells).repeat_interleave(users),
        budget=budget,
        weights=torch.ones(samples, n, dtype=torch.float64),
    )


def per_problem(fn, count: int, repeats: int) -> tuple[float, object]:
    """Median over ``repeats`` runs of (run time / ``count``) in seconds, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) / count)
    return statistics.median(times), result


def one_by_one(solve, problem: PowerControlProblem) -> torch.Tensor:
    return torch.stack([solve(problem[i : i + 1]) for i in range(problem.batch_size)]).to(torch.float64)


def rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs() / ref).max().item()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=10_000, help="problems for the batched solvers")
    parser.add_argument("--cvxpy-samples", type=int, default=50, help="problems for cvxpy (the first ones)")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of every timing (median)")
    parser.add_argument("--users", type=int, default=5, help="UEs per cell K")
    parser.add_argument("--cells", type=int, default=4, help="cells L (a perfect square for cellular)")
    parser.add_argument("--scenario", choices=["cellular", "random"], default="cellular")
    parser.add_argument("--precoder", choices=["mmmse", "mr"], default="mmmse")
    parser.add_argument("--realizations", type=int, default=5, help="channel realizations per setup")
    parser.add_argument("--bisection-tol", type=float, default=1e-6, help="max-min cvxpy bisection tol")
    parser.add_argument(
        "--barrier-samples", type=int, default=1000, help="problems for the barrier fallback alone (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_cvx = min(args.cvxpy_samples, args.samples)

    start = time.perf_counter()
    if args.scenario == "cellular":
        problem = cellular(args.samples, args.cells, args.users, args.precoder, args.realizations, args.seed)
        what = f"cellular, {args.precoder} precoding, {args.realizations} realizations"
    else:
        problem = random_instances(args.samples, args.cells, args.users, args.seed)
        what = "random (tests/test_fairness.py)"
    problem = problem.to(dtype=torch.float64)
    made = time.perf_counter() - start
    sub = problem[:n_cvx]
    # warm-ups (first calls load cvxpy and HiGHS, which prints its banner)
    fairness.max_min_power(problem[:10])
    fairness.max_prod_power(problem[:10])
    fairness.max_min_bisection_cvxpy(sub[:1], args.bisection_tol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fairness.max_prod_cvxpy(sub[:1])

    print(f"machine: {machine()}")
    print(
        f"problems: {what}, L = {args.cells} cells, K = {args.users} UEs per cell (n = {problem.num_vars});"
    )
    print(f"{args.samples} made in {made:.1f} s; batched solvers on all of them, cvxpy on the first {n_cvx};")
    print(f"times per problem: median of {args.repeats} runs")
    print()

    rows = []
    batched, (p, _) = per_problem(lambda: fairness.max_min_power(problem), args.samples, args.repeats)
    reference, p_ref = per_problem(
        lambda: one_by_one(lambda pr: fairness.max_min_bisection_cvxpy(pr, args.bisection_tol)[0], sub),
        n_cvx,
        args.repeats,
    )
    ours, theirs = problem[:n_cvx].sinr(p[:n_cvx]).amin(dim=1), sub.sinr(p_ref).amin(dim=1)
    nonfinite = [int((~torch.isfinite(problem.sinr(p).amin(dim=1))).sum())]
    rows.append(("max-min", "min SINR", batched, reference, rel_diff(ours, theirs)))

    fallback = []  # samples that the fast path left to the barrier method, counted on one extra run
    barrier = fairness._max_prod_barrier

    def counting(gains, *rest):
        fallback.append(gains.shape[0])
        return barrier(gains, *rest)

    fairness._max_prod_barrier = counting
    fairness.max_prod_power(problem)
    fairness._max_prod_barrier = barrier
    batched, p = per_problem(lambda: fairness.max_prod_power(problem), args.samples, args.repeats)
    with warnings.catch_warnings(record=True) as caught:  # Clarabel: "Solution may be inaccurate"
        warnings.simplefilter("always")
        reference, p_ref = per_problem(lambda: one_by_one(fairness.max_prod_cvxpy, sub), n_cvx, args.repeats)
    geo_mean = MaxProd(None)
    nonfinite.append(int((~torch.isfinite(geo_mean(problem, p))).sum()))
    ours, theirs = geo_mean(sub, p[:n_cvx]), geo_mean(sub, p_ref)
    rows.append(("max-product", "geometric-mean SINR", batched, reference, rel_diff(ours, theirs)))
    if args.barrier_samples > 0:  # the barrier fallback on its own: the method before the fast path
        n_bar = min(args.barrier_samples, args.samples)
        head = problem[:n_bar]
        batched, p = per_problem(lambda: fairness.max_prod_power(head, newton_steps=0), n_bar, args.repeats)
        ours = geo_mean(sub, p[:n_cvx]) if n_bar >= n_cvx else None
        diff = rel_diff(ours, theirs) if ours is not None else float("nan")
        rows.append((f"max-product, barrier only ({n_bar})", "geometric-mean SINR", batched, reference, diff))

    print(
        "| objective | agreement on | batched [µs/problem] | cvxpy [ms/problem] | speed-up | max rel. diff |"
    )
    print("|---|---|---|---|---|---|")
    for name, measure, ours_s, ref_s, diff in rows:
        speed_up = f"{ref_s / ours_s:.0f}x"
        print(f"| {name} | {measure} | {ours_s * 1e6:.1f} | {ref_s * 1e3:.2f} | {speed_up} | {diff:.1e} |")
    print()
    negative = int((problem.interference_gain < 0).flatten(1).any(1).sum())
    print(f"problems with a negative interference gain: {negative} of {args.samples};")
    print(
        f"non-finite objectives of the batched solvers: max-min {nonfinite[0]}, max-product {nonfinite[1]};"
    )
    print(f"max-product: {sum(fallback)} of {args.samples} problems needed the barrier fallback;")
    print(f"cvxpy warned 'inaccurate' {len(caught)} times in {args.repeats * n_cvx} max-product solves")


if __name__ == "__main__":
    main()
