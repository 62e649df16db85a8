"""The batched energy-efficiency optimizer ``ee_pga`` against the paper's baseline ``ee_sca``, one thread.

Raghunath, Peng & Jorswieck (2023), eq. (1): the sum energy efficiency of a cell-free network with MRT
precoding, per-AP budgets. On the same problems (the ``cellfree`` scenario's defaults unless ``--aps``,
``--users``, ``--antennas`` say otherwise):

- ``ee_sca``: SCA of the rates inside a Dinkelbach-type iteration, cvxpy, one sample at a time, from the
  even split of every AP's budget, in this process (``workers=1``), over the first ``--sca-samples``;
- ``ee_pga``: multi-start projected gradient ascent, all ``--samples`` at once, float64, with the
  solver's YAML defaults unless ``--starts``/``--steps`` say otherwise.

Times per sample are medians over ``--repeats`` runs of (run time / samples), ``ee_sca`` over
``--sca-repeats`` runs. ``ee_pga`` is timed at every ``--batch-sizes`` (the first samples; its cost per
sample falls with the batch, so each speed-up is stated with its batch size). Agreement, on the ``ee_sca``
samples of the ``--samples`` run: the mean of the per-sample ratio EE(ee_pga) / EE(ee_sca), its minimum,
and the share of samples where ``ee_pga`` is at most 0.1 % below. ``--settings 1x500 4x500`` adds a
table of other ``starts x steps`` against the same ``ee_sca`` solutions.

    python benchmarks/energy_efficiency.py --samples 1024 --batch-sizes 20 1024 --sca-samples 64
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch load their BLAS

import argparse  # noqa: E402

import torch  # noqa: E402
from fairness import per_problem as per_sample  # noqa: E402
from wmmse import machine  # noqa: E402

from mimo_l2o.objectives.energy_efficiency import EnergyEfficiency, EnergyEfficiencyConfig  # noqa: E402
from mimo_l2o.precoders.mrt import MRT  # noqa: E402
from mimo_l2o.scenarios.cellfree import CellFree  # noqa: E402
from mimo_l2o.solvers.ee_sca import EESCA, EESCAConfig  # noqa: E402
from mimo_l2o.solvers.energy_efficiency import ProjectedGradient, ProjectedGradientConfig  # noqa: E402


def settings(text: str) -> tuple[int, int]:
    starts, steps = text.split("x")
    return int(starts), int(steps)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1024, help="problems for ee_pga's agreement run")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[20, 1024], help="batch sizes ee_pga is timed at"
    )
    parser.add_argument("--sca-samples", type=int, default=64, help="problems for ee_sca (the first ones)")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of the ee_pga timing (median)")
    parser.add_argument("--sca-repeats", type=int, default=3, help="repetitions of the ee_sca timing")
    parser.add_argument("--aps", type=int, default=5, help="APs L")
    parser.add_argument("--users", type=int, default=10, help="UEs K")
    parser.add_argument("--antennas", type=int, default=5, help="antennas N per AP")
    parser.add_argument(
        "--settings", type=settings, nargs="*", default=[], help="other ee_pga starts x steps, e.g. 4x500"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = sorted({min(b, args.samples) for b in args.batch_sizes} | {args.samples})
    n_sca = min(args.sca_samples, args.samples)

    scenario = CellFree(CellFree.Config(num_aps=args.aps, num_users=args.users, num_antennas=args.antennas))
    problem = MRT(None)(scenario.sample(args.samples, torch.Generator().manual_seed(args.seed)))
    objective = EnergyEfficiency(EnergyEfficiencyConfig())
    pga = ProjectedGradient(ProjectedGradientConfig())
    sca = EESCA(EESCAConfig(workers=1))
    sub = problem[:n_sca]
    pga.solve(problem[:8], objective)  # warm-ups: cvxpy compiles its program on the first call
    sca.solve(sub[:1], objective)

    print(f"machine: {machine()}")
    print(
        f"problems: cellfree, L = {args.aps} APs x N = {args.antennas} antennas, K = {args.users} UEs "
        f"({problem.num_vars} powers); ee_pga (starts {pga.config.starts}, steps {pga.config.steps}) at "
        f"batch sizes {', '.join(map(str, sizes))}, ee_sca (tol {sca.config.tol:g}) on the first {n_sca}; "
        "one thread"
    )
    t_sca, p_sca = per_sample(lambda: sca.solve(sub, objective), n_sca, args.sca_repeats)
    ee_sca = objective(sub, p_sca)

    def agreement(p: torch.Tensor) -> str:
        ratio = objective(sub, p[:n_sca]) / ee_sca
        return f"{float(ratio.mean()):.4f} | {float(ratio.min()):.4f} | {int((ratio >= 0.999).sum())}/{n_sca}"

    print()
    print(
        "| L x K | batch | ee_pga [ms/sample] | ee_sca [ms/sample] | speed-up | EE ee_sca [Mbit/J] "
        "| EE ee_pga [Mbit/J] | mean ratio | min ratio | within -0.1 % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        head = problem[:size]
        t_pga, p_pga = per_sample(lambda head=head: pga.solve(head, objective), size, args.repeats)
        same = size >= n_sca  # the agreement needs the ee_sca samples
        ee = (
            f"{float(objective(sub, p_pga[:n_sca]).mean()):.4f} | {agreement(p_pga)}"
            if same
            else "– | – | – | –"
        )
        print(
            f"| {args.aps} x {args.users} | {size} | {t_pga * 1e3:.2f} | {t_sca * 1e3:.1f} "
            f"| {t_sca / t_pga:.0f}x | {float(ee_sca.mean()):.4f} | {ee} |",
            flush=True,
        )
    if args.settings:
        print()
        print(f"other settings, batch {args.samples}, against the same {n_sca} ee_sca solutions:")
        print()
        print("| starts x steps | ms/sample | mean ratio | min ratio | within -0.1 % |")
        print("|---|---|---|---|---|")
        for starts, steps in args.settings:
            other = ProjectedGradient(ProjectedGradientConfig(starts=starts, steps=steps))
            t, p = per_sample(lambda other=other: other.solve(problem, objective), args.samples, args.repeats)
            print(f"| {starts} x {steps} | {t * 1e3:.2f} | {agreement(p)} |", flush=True)


if __name__ == "__main__":
    main()
