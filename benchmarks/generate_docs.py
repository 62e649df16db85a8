"""Run the benchmarks and write ``docs/benchmarks.md`` from what they print, stamped with the commit.

Every number in ``docs/benchmarks.md`` comes from one run of this script: each section says what is
measured and how (text below, no measured numbers in it), then the command and its output verbatim.
The benchmarks run one after another, each in its own process on one thread (the scripts set it), so
start it on an otherwise idle machine; the full run takes about ten minutes on two cores. The page is
written to a temporary file and moved into place only when every benchmark has finished, so a failed
or interrupted run leaves the previous page as it was.

    python benchmarks/generate_docs.py                 # the full sizes, writes docs/benchmarks.md
    python benchmarks/generate_docs.py --quick --out /tmp/benchmarks.md   # tiny sizes: a smoke test
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK_NOTE = " **Quick sizes: a smoke test, not a measurement.**"


def args(text: str) -> tuple[str, ...]:
    """A benchmark's arguments, written as on the command line."""
    return tuple(text.split())


@dataclass(frozen=True)
class Section:
    title: str
    intro: str
    script: str
    runs: tuple[tuple[str, ...], ...]  # the arguments of each run at the full sizes
    quick: tuple[str, ...]  # the arguments of one run at tiny sizes (--quick)
    outro: str = ""


WMMSE = Section(
    "Batched WMMSE vs per-sample loops",
    """\
`mimo_l2o.solvers.wmmse.wmmse` runs Fig. 2 of Sun et al. (2018) on a whole batch of samples with tensor
operations. It is compared with two per-sample NumPy versions of Fig. 2 that start from the same point
and use the same stopping rule:

- **numpy**: one NumPy operation per step of Fig. 2, vectorized over the users of a sample: the fastest
  plain per-sample loop.
- **per-user**: a Python loop over the users inside each step. The authors' published Python code
  (repository Haoran-S/SPAWC2017, `WMMSE_sum_rate`) has this structure, and it is what the paper's Table
  I times as "WMMSE (Python)" (17.98, 59.41 and 122.91 s for 10,000 samples at K = 10, 20, 30 on the
  authors' machine; mean sum rates 2.817, 3.654, 4.150).

Gaussian IC (h_kj ~ CN(0, 1), P_max = σ² = 1), tol = 1e-5 bit/s/Hz, at most 500 iterations, float64,
one thread. The batched time is the median of the repeats over all N samples; each loop runs once over
the same samples, so nothing is extrapolated. Sum rates come from the same `SumRate` objective for both.
""",
    "wmmse.py",
    (args("--users 10 20 30 --samples 10000 --repeats 5 --loop-samples 10000"),),
    args("--users 4 --samples 50 --repeats 1 --loop-samples 10"),
    """\
What bounds the speed-up against the NumPy loop: that loop pays NumPy's fixed cost per call (a few µs)
for each of its operations, whatever K is, while the batched solver's cost per sample-iteration is the
real arithmetic of two batched K×K products and about 20 element-wise operations over the users, which
grows with K. The batched solver already drops converged samples from the working batch (and lets waiting
ones in), sizes the working batch to stay in the cache on a CPU, gathers the K×K gains into a second
buffer instead of allocating, writes both products as row vector × matrix (the faster batched-BLAS
form) and validates its input with `count_nonzero`. More would need fused kernels (compiled code or a
GPU), not more eager tensor operations.
""",
)

FAIRNESS = Section(
    "Max-min and max-product solvers against cvxpy references",
    """\
The batched solvers of `mimo_l2o/solvers/fairness.py` for Sanguinetti, Zappone & Debbah (2018),
eqs. (12)-(13), per-cell sum-power budgets, against the cvxpy references, one problem at a time:

- **max-min**: `max_min_power` (Perron-Frobenius, closed form, all samples at once) against
  `max_min_bisection_cvxpy` (bisection on the common SINR with HiGHS LPs, tol 1e-6).
- **max-product**: `max_prod_power` (minorize-maximize steps, then Newton steps on the KKT conditions,
  a barrier method as fallback) against `max_prod_cvxpy` (the log-power convex form, exponential cones,
  Clarabel). The row "barrier only" times the fallback on its own, for comparison.

Both references are compiled once per problem size and group structure, with the problem's data in
cvxpy parameters (a DPP program: only the numbers change between problems, the canonicalization is
reused), and both are posed in the same dimensionless form as the fast solvers (powers over budgets,
gains over noise), so realistic scales (gains 1e-9 to 1e-13, noise 4e-13 W) stay within the solvers'
tolerances. L = 4 cells, K = 5 UEs per cell (n = 20), float64, one thread. The batched solvers run over
all problems, cvxpy over the first ones; times per problem are medians of the repeats. Agreement is the
largest relative difference over the cvxpy problems of the objective: the smallest SINR for max-min,
the geometric-mean SINR for max-product.

The cellular problems use the scenario's defaults with M-MMSE precoding from 5 channel realizations:
few enough that the conditional estimator's control-variate correction alone would take some
interference gains below zero, where it now falls back to the plain mean
(`control_variate_mean(..., nonneg=True)`); the lines under each table count the problems with a
negative gain and the non-finite objectives. The random problems are `make_problem` of
`tests/test_fairness.py`, where some cells stay below their budget.
""",
    "fairness.py",
    (
        args("--samples 10000 --cvxpy-samples 50 --repeats 5 --users 5 --cells 4"),
        args("--samples 10000 --cvxpy-samples 50 --repeats 5 --users 5 --cells 4 --scenario random"),
    ),
    args("--samples 40 --cvxpy-samples 2 --repeats 1 --barrier-samples 4"),
    """\
Max-min costs what G nonsymmetric eigenvalue problems of size n per sample cost; its reference pays
one HiGHS LP per bisection step (about 20 per problem at tol 1e-6), so most of the reference's time is
the LP solver's fixed cost per call. Clarabel may warn "Solution may be inaccurate" on a few of the
max-product problems (the last line counts them); those carry the largest differences.
""",
)

LABELLING = Section(
    "Labelling cost of cellular massive MIMO data",
    """\
One setup is L = 4 cells, K = 5 UEs, 100 channel realizations, MMSE estimates and the averaged gains of
eqs. 10-11 (Sanguinetti et al. 2018). `plain` draws the channels of all 80 UE-BS links and the pilot
noise and averages over them; `conditional` (the default) draws only the 20 received pilot vectors per
realization and averages the conditional expectations given them, with a control variate
(`mimo_l2o/precoders/massive_mimo.py`): the same expectations with far less noise
(`plugins/sanguinetti2018/README.md`). Two threads, medians over the repeats; the last columns
extrapolate to a laptop run (24,000 setups: the `scenario=cellular` data sizes) and a paper preset
(350,000 setups). The solvers' lines at the end are per setup on the same problems.
""",
    "labelling.py",
    (args("--antennas 32 100 --setups 8 --repeats 2 --threads 2"),),
    args("--antennas 8 --setups 2 --repeats 1 --realizations 5 --solver-setups 10"),
)

ENERGY = Section(
    "Energy efficiency: batched projected gradient vs SCA",
    """\
`ee_pga` (`mimo_l2o/solvers/energy_efficiency.py`: multi-start projected gradient ascent, all samples
and starts at once in float64, Adam steps on the powers over each AP's even share, each followed by the
exact Euclidean projection onto the per-AP budgets) against `ee_sca`, the paper's baseline
(`mimo_l2o/solvers/ee_sca.py`: SCA of the rates inside a Dinkelbach-type iteration for the sum of
ratios, cvxpy with CLARABEL and parameters (compiled once), from the even split of every AP's budget,
stopping at 1e-6 relative growth), on the sum energy efficiency of Raghunath, Peng & Jorswieck (2023),
eq. (1), MRT precoding, the `cellfree` scenario's defaults (N = 5 antennas per AP, 100 m x 100 m, 1 W
per AP, B = 1 MHz, P_c = 4 W, μ = 1), seed 0. Both run in one process on one thread (`ee_sca` with
`workers=1`); `ee_pga` with its defaults (2 starts of 500 steps).

`ee_pga`'s cost per sample falls with the batch size (a small batch pays the fixed cost of each tensor
operation), so every speed-up is stated with the batch it was measured at: the label batch of a run
(`data.chunk_size`) sets which row applies. The ratio is per sample, EE(`ee_pga`) / EE(`ee_sca`) on the
`ee_sca` samples; "within -0.1 %" counts the samples where `ee_pga` is at most 0.1 % below.
""",
    "energy_efficiency.py",
    (
        args(
            "--samples 1024 --batch-sizes 20 1024 --sca-samples 256 --repeats 5 --sca-repeats 3 "
            "--settings 1x500 4x300 4x500"
        ),
        args(
            "--samples 1024 --batch-sizes 20 1024 --sca-samples 64 --repeats 3 --sca-repeats 1 "
            "--aps 10 --users 10"
        ),
        args(
            "--samples 1024 --batch-sizes 20 1024 --sca-samples 32 --repeats 3 --sca-repeats 1 "
            "--aps 15 --users 15"
        ),
    ),
    args("--samples 8 --batch-sizes 4 8 --sca-samples 2 --repeats 1 --sca-repeats 1 --settings 1x50"),
    """\
Both are local methods: on most samples they end at the same KKT point, on a few SCA's single start lies
in a better basin, and on more `ee_pga`'s second start finds a better one. Most of a step is memory
traffic: two batched matrix-vector products over the `[samples · starts, K, K·L]` gains forward and two
backward, then the sort of the simplex projection.
""",
)

WMMSE_BF = Section(
    "Batched WMMSE beamforming vs per-sample loops",
    """\
`mimo_l2o.solvers.wmmse_bf.wmmse_bf` (Shi et al. 2011), the labels and upper bound of the beamforming
family (Zhang et al. 2022), on i.i.d. Rayleigh MISO broadcast channels (h_k ~ CN(0, I), P = 20 dB over
unit noise), against two per-sample NumPy transcriptions of Shi et al.'s Table I with the same MRT start
and the same stopping rule (tol 1e-4 bit/s/Hz after at least 5 iterations, at most 500), float64, one
thread. They differ in how each finds the multiplier μ:

- **eig**: one eigendecomposition of A per iteration and Brent's method on Σφ_i/(λ_i+μ)² = P: the
  fastest plain loop we know;
- **solve**: bisection on ‖(A + μI)⁻¹B‖² = P with a linear solve per trial, as Shi et al. state the step.

Both loops iterate in all N_t dimensions; the batched solver iterates in the span of the channels (K of
them) when N_t > K, the same iterates. "same iteration count" counts the loop's samples that stopped at
the batched solver's iteration. **network** is the `model_driven` learner's forward pass (CSI-Net +
Power-Net + eq. 7, default sizes, float32, one batch): its cost at deployment, untrained (the same).
""",
    "wmmse_bf.py",
    (args("--sizes 64x8 32x6 8x4 4x4 --samples 2000 --loop-samples 100 --repeats 5"),),
    args("--sizes 8x4 --samples 40 --loop-samples 4 --repeats 1"),
    """\
At 64 x 8 the eig loop's iteration is an eigendecomposition and a solve of 64 x 64 complex matrices in
LAPACK (about 0.45 ms), little of it Python overhead, and the batched solver's is dominated by the
batched 8 x 8 eigendecompositions (about 60 % of its time, in `torch.linalg.eigh`, one LAPACK call per
matrix): the speed-up over that loop is bounded by the ratio of the two, not by Python.
""",
)

TABLE3 = Section(
    "Deployment time on massive_fdd (Ma et al. 2022, Table III)",
    """\
Per-sample time at the (M, K) of Ma et al.'s Table III on `scenario=massive_fdd` channels (P_DL = 5 dBm,
-85 dBm noise), one thread: WMMSE beamforming batched (from ZF, the labels' solver) and as the per-sample
NumPy loop of the section above (the same start and stopping rule), and the `neural_calibration`
policy with perfect CSI (the user-wise MLP on every user, then ZF onto P_DL; float32, one batch,
untrained: inference costs the same) at the laptop widths (256-512-512) and the paper's (512-2048-2048),
the deep-unfolded WMMSE (`unfolded_wmmse`, 20 layers) and the data-driven MLP (`data_driven_bf`,
512-512). Beside them what each needs at deployment: WMMSE's mean iterations, the NC's multiply-adds per
sample (K passes of the MLP and the ZF) and its weights.
""",
    "ma2022_table3.py",
    (args("--sizes 16x2 32x2 32x8 32x12 64x4 64x12 --samples 500 --loop-samples 50 --repeats 5"),),
    args("--sizes 16x2 --samples 20 --loop-samples 2 --repeats 1"),
)

SECTIONS = (WMMSE, WMMSE_BF, FAIRNESS, LABELLING, ENERGY, TABLE3)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def stamp() -> str:
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    state = " with uncommitted changes" if dirty else ""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"commit `{commit[:12]}`{state}, {when}"


def run(script: str, args: tuple[str, ...]) -> str:
    """The benchmark's stdout; its stderr passes through (progress, warnings). Raises on failure."""
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    print("$", " ".join(command[1:]), file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmarks/{script} failed with exit {done.returncode}; {ROOT / 'docs'} unchanged")
    # lines other than table rows end in a hard line break, so that they don't run together
    return "\n".join(
        line if line.startswith("|") or not line else f"{line}  "
        for line in done.stdout.rstrip().splitlines()
    )


def page(quick: bool) -> str:
    parts = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/generate_docs.py` (do not edit by hand: change the scripts or "
        f"their text, and rerun) at {stamp()}.{QUICK_NOTE if quick else ''}",
        "Each section's first lines of output name the machine; compare rows of one run only.",
    ]
    for section in SECTIONS:
        parts += ["", f"## {section.title}", "", section.intro.rstrip()]
        for args in (section.quick,) if quick else section.runs:
            command = " ".join(("python", f"benchmarks/{section.script}", *args))
            parts += ["", "```", command, "```", "", run(section.script, args)]
        if section.outro:
            parts += ["", section.outro.rstrip()]
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="the page to write")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: checks the scripts, measures nothing"
    )
    args = parser.parse_args()
    text = page(args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
