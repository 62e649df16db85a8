"""Cost of labelling cellular massive MIMO data (Sanguinetti et al. 2018): per setup, the Monte-Carlo
gains of each precoder (both estimators) and the solvers, at the laptop default M = 32 and the
paper's M = 100.

Each setup (L = 4 cells, K = 5 UEs each) draws ``--realizations`` channel realizations of all
L²K = 80 UE-BS links, estimates them (MMSE, pilot reuse 1) and averages the precoded gains
(eqs. 10-11). Times are medians of ``--repeats`` runs over ``--setups`` setups, divided by the setups,
on ``--threads`` threads; the last columns extrapolate to a laptop run (24,000 setups: the
``scenario=cellular`` data sizes) and to a paper preset (350,000 setups).

    python benchmarks/labelling.py --antennas 32 100 --setups 16 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from wmmse import machine

from mimo_l2o.precoders.massive_mimo import MMMSE, MR
from mimo_l2o.scenarios.cellular import Cellular
from mimo_l2o.solvers.fairness import max_min_power, max_prod_power

LAPTOP, PRESET = 24_000, 350_000


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--antennas", type=int, nargs="+", default=[32, 100])
    parser.add_argument("--setups", type=int, default=16)
    parser.add_argument("--realizations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--solver-setups", type=int, default=2000)
    parser.add_argument(
        "--estimators", nargs="+", default=["conditional", "plain"], choices=["conditional", "plain"]
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine().replace('1 thread', f'{args.threads} threads')}")
    print(f"setups: {args.setups} per timing, median of {args.repeats}, {args.realizations} realizations\n")
    print(
        "| M | precoder | estimator | precision | ms / setup | laptop run (24k setups) "
        "| paper preset (350k setups) |"
    )
    print("|---|---|---|---|---|---|---|")
    problem = None
    for m in args.antennas:
        net = Cellular(Cellular.Config(num_antennas=m)).sample(args.setups, torch.Generator().manual_seed(0))
        for cls in (MR, MMMSE):
            for estimator in args.estimators:
                for precision in ("single", "double"):
                    pre = cls(
                        cls.Config(
                            name=cls.name,
                            num_realizations=args.realizations,
                            precision=precision,
                            estimator=estimator,
                        )
                    )
                    seconds = median_time(lambda pre=pre, net=net: pre(net), args.repeats) / args.setups
                    laptop, preset = LAPTOP * seconds / 60, PRESET * seconds / 3600
                    cost = f"{1e3 * seconds:.1f} | {laptop:.1f} min | {preset:.1f} h"
                    print(f"| {m} | {cls.name} | {estimator} | {precision} | {cost} |")
        problem = pre(net)
    # solvers on the last problems, repeated up to --solver-setups
    reps = max(1, args.solver_setups // problem.batch_size)
    batch = problem.cat([problem] * reps)
    for name, fn in (("max_min_pf", max_min_power), ("max_prod_newton", max_prod_power)):
        seconds = median_time(lambda fn=fn: fn(batch), args.repeats) / batch.batch_size
        print(f"\n{name}: {1e3 * seconds:.3f} ms / setup ({PRESET * seconds / 60:.1f} min for 350k setups)")


if __name__ == "__main__":
    main()
