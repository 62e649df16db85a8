"""Batched WMMSE against per-sample loops, on one CPU thread.

Times :func:`mimo_l2o.solvers.wmmse.wmmse` on N Gaussian-IC samples (Sun et al. 2018, Section V:
h_kj ~ CN(0, 1), P_max = σ² = 1, tol 1e-5, at most 500 iterations) against two per-sample NumPy
transcriptions of Fig. 2 with the same initialization and stopping rule:

- ``numpy``: one NumPy operation per step of Fig. 2 (vectorized over the users of a sample), the
  fastest plain per-sample loop;
- ``per-user``: a Python loop over the users inside each step, the structure of the authors'
  published Python code (repository Haoran-S/SPAWC2017) that Table I of the paper times.

The batched run is repeated and its median reported; the loops run once over the first
``--loop-samples`` samples and are scaled to N per sample (when that is fewer than N, the table
says so). Sum rates of both are computed with the same objective on the samples both solved.

    python benchmarks/wmmse.py --users 10 20 30 --samples 10000 --repeats 5 --loop-samples 500
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch load their BLAS

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mimo_l2o.objectives.sum_rate import SumRate  # noqa: E402
from mimo_l2o.problems.power_control import PowerControlProblem  # noqa: E402
from mimo_l2o.solvers.wmmse import wmmse  # noqa: E402

TOL, MAX_ITER = 1e-5, 500


def loop_numpy(gains, noise, p_max, alpha, tol=TOL, max_iter=MAX_ITER):
    """Fig. 2 for one sample, one NumPy operation per step; ``gains[k, j] = |h_kj|²``."""
    h_kk = np.sqrt(np.diag(gains))
    v_max = np.sqrt(p_max)
    v = v_max.copy()  # step 1
    u = h_kk * v / (gains @ (v * v) + noise)  # step 2
    w = 1 / (1 - u * h_kk * v)  # step 3
    objective = alpha @ np.log2(w)
    for _ in range(max_iter):  # steps 5-10
        aw = alpha * w
        v = np.clip(aw * u * h_kk / ((aw * u * u) @ gains), 0, v_max)  # step 7
        u = h_kk * v / (gains @ (v * v) + noise)  # step 8
        w = 1 / (1 - u * h_kk * v)  # step 9
        new_objective = alpha @ np.log2(w)
        if new_objective - objective < tol:
            break
        objective = new_objective
    return v * v


def loop_per_user(gains, noise, p_max, alpha, tol=TOL, max_iter=MAX_ITER):
    """Fig. 2 for one sample with a Python loop over the users in each step."""
    k_users = len(p_max)
    h = np.sqrt(gains)
    v = np.sqrt(p_max)  # step 1
    u, w = np.zeros(k_users), np.zeros(k_users)
    objective = 0.0
    for k in range(k_users):  # steps 2-3
        u[k] = h[k, k] * v[k] / (gains[k] @ (v * v) + noise[k])
        w[k] = 1 / (1 - u[k] * h[k, k] * v[k])
        objective += alpha[k] * math.log2(w[k])
    for _ in range(max_iter):  # steps 5-10
        v_new = np.zeros(k_users)
        for k in range(k_users):  # step 7
            ratio = alpha[k] * w[k] * u[k] * h[k, k] / np.sum(alpha * w * u * u * gains[:, k])
            v_new[k] = min(max(ratio, 0.0), math.sqrt(p_max[k]))
        v = v_new
        new_objective = 0.0
        for k in range(k_users):  # steps 8-9
            u[k] = h[k, k] * v[k] / (gains[k] @ (v * v) + noise[k])
            w[k] = 1 / (1 - u[k] * h[k, k] * v[k])
            new_objective += alpha[k] * math.log2(w[k])
        if new_objective - objective < tol:
            break
        objective = new_objective
    return v * v


LOOPS = {"numpy": loop_numpy, "per-user": loop_per_user}


def gaussian_ic(k: int, n: int, seed: int) -> PowerControlProblem:
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, k, k, 2, generator=gen, dtype=torch.float64)
    return PowerControlProblem.interference_channel(h.square().sum(-1) / 2, 1.0, 1.0)


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{model}, nproc {os.cpu_count()}, 1 thread (torch {torch.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, nargs="+", default=[10, 20, 30], help="numbers of users K")
    parser.add_argument("--samples", type=int, default=10_000, help="samples N per K")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of the batched run (median)")
    parser.add_argument("--loop-samples", type=int, default=500, help="samples the loops run on")
    parser.add_argument("--loops", nargs="+", choices=list(LOOPS), default=list(LOOPS), help="loops to time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    objective = SumRate(SumRate.Config(name="sum_rate"))
    n_loop = min(args.loop_samples, args.samples)

    print(f"machine: {machine()}")
    scaled = " (extrapolated)" if n_loop < args.samples else ""
    print(f"batched: median of {args.repeats} runs on all N samples; loops: one run on {n_loop} samples,")
    print(f"scaled to N per sample{scaled}; sum rates compared on those {n_loop} samples")
    print()
    print(
        "| K | N | loop | batched [s] | loop [ms/sample] | loop, N samples [s] | speed-up "
        "| mean sum rate batched | mean sum rate loop | rel. diff of mean | max rel. diff per sample |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k in args.users:
        problem = gaussian_ic(k, args.samples, args.seed + k)
        wmmse(problem[:200])  # warm up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            power = wmmse(problem, tol=TOL, max_iter=MAX_ITER)
            times.append(time.perf_counter() - start)
        batched = statistics.median(times)
        rate = objective(problem[:n_loop], power[:n_loop])

        sub = problem[:n_loop]
        gains = (sub.signal_gain + sub.interference_gain).numpy()
        noise, p_max, alpha = sub.noise.numpy(), sub.budget.numpy(), sub.weights.numpy()
        for name in args.loops:
            loop = LOOPS[name]
            start = time.perf_counter()
            loop_power = [loop(gains[b], noise[b], p_max[b], alpha[b]) for b in range(n_loop)]
            per_sample = (time.perf_counter() - start) / n_loop
            loop_rate = objective(sub, torch.from_numpy(np.stack(loop_power)))
            mean_diff = abs(rate.mean() / loop_rate.mean() - 1).item()
            sample_diff = ((rate - loop_rate).abs() / loop_rate.abs()).max().item()
            loop_n = per_sample * args.samples
            print(
                f"| {k} | {args.samples} | {name} | {batched:.3f} | {per_sample * 1e3:.3f} | {loop_n:.1f} "
                f"| {loop_n / batched:.0f}x | {rate.mean():.4f} | {loop_rate.mean():.4f} "
                f"| {mean_diff:.1e} | {sample_diff:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
