"""Batched WMMSE beamforming against a per-sample NumPy loop, on one CPU thread.

Times :func:`mimo_l2o.solvers.wmmse_bf.wmmse_bf` (Shi et al. 2011, the labels of Zhang et al. 2022) on
N i.i.d. Rayleigh MISO broadcast channels (``h_k ~ CN(0, I)``, ``P = 20 dB`` over unit noise, unless
``--snr-db``) against two per-sample NumPy transcriptions of Shi et al.'s Table I with the same start (MRT
scaled onto the budget) and the same stopping rule (a gain below ``tol`` after ``min_iter`` iterations, at
most ``max_iter``), in all ``N_t`` dimensions (the batched solver iterates in the span of the channels
when ``N_t > K``: the same iterates, a smaller eigendecomposition). They differ in how they find ``μ``:

- ``eig``: one eigendecomposition per iteration and Brent's method on ``P(μ) = Σ φ_i / (λ_i + μ)²`` in
  the closed-form bracket: the fastest plain loop we know;
- ``solve``: bisection on ``‖(A + μI)⁻¹B‖² = P`` with a linear solve per trial, as Shi et al. state the
  step (and as per-sample WMMSE codes usually implement it).

Also timed, per sample, is the forward pass of the ``model_driven`` learner's network (Zhang et al.,
CSI-Net + Power-Net + eq. 7 recovery, the default sizes, untrained: inference costs the same) on the
same channels in one batch, float32, one thread: what a trained model costs at deployment.

The batched solver and the network run ``--repeats`` times (median); the loop once over the first
``--loop-samples`` samples. Sum rates of both solvers are compared on those samples.

    python benchmarks/wmmse_bf.py --sizes 64x8 32x6 4x4 --samples 2000 --loop-samples 100
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch load their BLAS

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import brentq  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.wmmse

from mimo_l2o_plugins.zhang2022.config import ModelDrivenConfig  # noqa: E402
from mimo_l2o_plugins.zhang2022.networks import ModelDrivenNet  # noqa: E402

from benchmarks.wmmse import machine  # noqa: E402
from mimo_l2o.objectives.sum_rate import SumRate  # noqa: E402
from mimo_l2o.problems.beamforming import BeamformingProblem  # noqa: E402
from mimo_l2o.solvers.wmmse_bf import start, wmmse_bf  # noqa: E402

TOL, MIN_ITER, MAX_ITER = 1e-4, 5, 500  # wmmse_bf's defaults


def sum_rate(H: np.ndarray, W: np.ndarray, noise: float) -> float:
    """``H [K, N]`` rows ``h_kᵀ`` (the problem's layout), ``W [N, K]`` [bit/s/Hz]."""
    g = np.abs(H.conj() @ W) ** 2
    signal = np.diag(g)
    return float(np.log2(1 + signal / (g.sum(1) - signal + noise)).sum())


def multiplier_eig(A: np.ndarray, B: np.ndarray, P: float) -> float:
    """``μ`` from one eigendecomposition of ``A`` and Brent's method on ``P(μ) = Σ φ_i / (λ_i + μ)²``
    in the closed-form bracket ``(0, √(Σφ/P)]``; 0 where ``A`` is invertible and ``P(0) <= P``."""
    lam, V = np.linalg.eigh(A)
    lam = np.clip(lam, 0, None)
    phi = (np.abs(V.conj().T @ B) ** 2).sum(1)
    if lam.min() > 1e-12 * lam.max() and (phi / lam**2).sum() <= P:
        return 0.0
    hi = math.sqrt(phi.sum() / P)  # P(hi) <= P; P(0+) > P (a singular A: P(0+) = ∞)
    with np.errstate(divide="ignore"):
        return brentq(lambda m: (phi / (lam + m) ** 2).sum() - P, hi * 1e-300, hi, xtol=1e-300, rtol=1e-15)


def multiplier_solve(A: np.ndarray, B: np.ndarray, P: float) -> float:
    """``μ`` as Shi et al. (2011) state it: bisection on ``‖(A + μI)⁻¹ B‖² = P`` with a linear solve per
    trial, the bracket doubled from 1 until it holds the root, halved to a relative width of 1e-15."""
    eye = np.eye(A.shape[0])

    def power(mu: float) -> float:
        return float(np.linalg.norm(np.linalg.solve(A + mu * eye, B)) ** 2)

    if np.linalg.cond(A) < 1e12 and power(0.0) <= P:
        return 0.0
    lo, hi = 0.0, 1.0
    while power(hi) > P:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-15 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if power(mid) > P else (lo, mid)
    return hi


def loop(H, W, noise, P, multiplier=multiplier_eig, tol=TOL, min_iter=MIN_ITER, max_iter=MAX_ITER):
    """Shi et al. (2011), Table I, for one MISO broadcast channel ``H [K, N]`` from ``W [N, K]``;
    returns the beamformers and the iterations run."""
    N = H.shape[1]
    objective = sum_rate(H, W, noise)
    for step in range(1, max_iter + 1):
        inner = H.conj() @ W  # [K (receiver), K (beam)]: h_kᴴ w_j
        signal = np.diag(inner)
        r = signal / ((np.abs(inner) ** 2).sum(1) + noise)
        omega = 1 / (1 - (r.conj() * signal).real)
        A = (H.T * (omega * np.abs(r) ** 2)) @ H.conj()  # Σ_k ω_k |r_k|² h_k h_kᴴ
        B = H.T * (omega * r)
        W = np.linalg.solve(A + multiplier(A, B, P) * np.eye(N), B)
        new = sum_rate(H, W, noise)
        gain, objective = new - objective, new
        if (gain < tol and step >= min_iter) or step >= max_iter:
            return W, step
    return W, max_iter


LOOPS = {"eig": multiplier_eig, "solve": multiplier_solve}


def rayleigh(n: int, k: int, samples: int, snr_db: float, seed: int) -> BeamformingProblem:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn((samples, 1, k, n), generator=g, dtype=torch.complex128)  # CN(0, 1) entries
    return BeamformingProblem(
        channel=h,
        noise=torch.ones(samples, k, dtype=torch.float64),
        budget=torch.full((samples, 1), 10 ** (snr_db / 10), dtype=torch.float64),
        weights=torch.ones(samples, k, dtype=torch.float64),
    )


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["64x8", "32x6", "4x4"], help="N_t x K")
    parser.add_argument("--samples", type=int, default=2000, help="samples N per size")
    parser.add_argument("--loop-samples", type=int, default=100, help="samples the loops run on")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of the batched runs (median)")
    parser.add_argument("--snr-db", type=float, default=20.0, help="P over unit noise [dB]")
    parser.add_argument("--loops", nargs="+", choices=list(LOOPS), default=list(LOOPS), help="loops to time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rate = SumRate(SumRate.Config(name="sum_rate"))
    n_loop = min(args.loop_samples, args.samples)
    print(f"machine: {machine()}")
    print(
        f"batched and network: median of {args.repeats} runs on all N samples; loop: one run on {n_loop} "
        f"samples; tol {TOL} bit/s/Hz, min_iter {MIN_ITER}, max_iter {MAX_ITER}, P = {args.snr_db:g} dB"
    )
    print()
    print(
        "| N_t x K | N | loop | batched [ms/sample] | loop [ms/sample] | speed-up | network [ms/sample] "
        "| network vs batched | network vs loop | mean sum rate batched | mean sum rate loop "
        "| max abs diff per sample [bit/s/Hz] | same iteration count | mean iterations |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        n, k = (int(v) for v in size.lower().split("x"))
        problem = rayleigh(n, k, args.samples, args.snr_db, args.seed + 1000 * n + k)
        W0 = start(problem, "mrt")
        wmmse_bf(problem[:50], W0[:50])  # warm up
        batched = median_time(lambda p=problem, w=W0: wmmse_bf(p, w), args.repeats) / args.samples
        W, _, iterations = wmmse_bf(problem, W0, history=True)
        ours = rate(problem[:n_loop], W[:n_loop])

        net = ModelDrivenNet(ModelDrivenConfig(), n, k, float(problem.budget[0, 0]), 1.0, 1.0).eval()
        x = torch.view_as_real(problem.channel).flatten(1).float()
        with torch.no_grad():
            net(x[:50])  # warm up
            network = median_time(lambda f=net, z=x: f(z), args.repeats) / args.samples

        H, W0n = problem.channel[:n_loop, 0].numpy(), W0[:n_loop, 0].numpy()
        for name in args.loops:
            t0 = time.perf_counter()
            results = [
                loop(H[b], W0n[b], 1.0, float(problem.budget[b, 0]), LOOPS[name]) for b in range(n_loop)
            ]
            per_sample = (time.perf_counter() - t0) / n_loop
            theirs = np.array([sum_rate(H[b], results[b][0], 1.0) for b in range(n_loop)])
            same = sum(results[b][1] == int(iterations[b]) for b in range(n_loop))
            diff = float(np.abs(ours.numpy() - theirs).max())
            print(
                f"| {n} x {k} | {args.samples} | {name} | {batched * 1e3:.3f} | {per_sample * 1e3:.2f} "
                f"| {per_sample / batched:.0f}x | {network * 1e3:.4f} | {batched / network:.1f}x "
                f"| {per_sample / network:.0f}x "
                f"| {ours.mean():.4f} | {theirs.mean():.4f} | {diff:.1e} | {same}/{n_loop} "
                f"| {iterations.float().mean():.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
