"""Time per sample at deployment, as Ma et al. (2022) Table III: WMMSE (batched and the per-sample loop)
against the neural calibration, on ``massive_fdd`` channels, one CPU thread.

For each ``(M, K)`` the script draws ``--samples`` networks of ``scenario=massive_fdd`` (its defaults
otherwise: P_DL = 5 dBm over -85 dBm noise) and times, per sample:

- **WMMSE batched**: :func:`mimo_l2o.solvers.wmmse_bf.wmmse_bf` from ZF on the whole batch (the labels'
  solver), median of ``--repeats``;
- **WMMSE loop**: the per-sample NumPy loop of ``benchmarks/wmmse_bf.py`` (eigendecomposition and
  Brent's method for ``μ``, the same start and stopping rule), once over ``--loop-samples`` samples;
- **NC (laptop)** and **NC (paper)**: the ``neural_calibration`` learner's policy with perfect CSI (``φ``
  on every user, then ZF onto ``P_DL``), untrained (inference costs the same), float32, at the laptop
  default widths (256-512-512) and the paper's (512-2048-2048), one batch, median of ``--repeats``;
- **unfolded WMMSE**: the ``unfolded_wmmse`` learner's 20 layers, float32, one batch;
- **data-driven**: the ``data_driven_bf`` learner's MLP (512-512), float32, one batch.

Beside the times, what a method needs at deployment: the NC's multiply-adds per sample (``K`` passes of
``φ`` and the ZF: ``HᴴH``, its solve and the product) and its weights; WMMSE's mean iterations. The
untrained networks cost what trained ones do.

    python benchmarks/ma2022_table3.py --sizes 16x2 32x2 32x8 32x12 64x4 64x12 --samples 500 --loop-samples 50
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and torch load their BLAS

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.*

from mimo_l2o_plugins.ma2022.networks import (  # noqa: E402
    CalibratedZF,
    Calibrator,
    DataDrivenNet,
    UnfoldedWMMSE,
)

from benchmarks.wmmse import machine  # noqa: E402
from benchmarks.wmmse_bf import loop, median_time  # noqa: E402
from mimo_l2o.precoders.downlink import Downlink  # noqa: E402
from mimo_l2o.scenarios.massive_fdd import MassiveFDD  # noqa: E402
from mimo_l2o.solvers.wmmse_bf import start, wmmse_bf  # noqa: E402

WIDTHS = {"laptop": [256, 512, 512], "paper": [512, 2048, 2048]}


def nc_multiply_adds(m: int, k: int, hidden: list[int]) -> int:
    """Real multiply-adds of one sample: ``K`` passes of ``φ`` (``2M → hidden → 2M``) and the complex ZF
    (``HᴴH``: ``M K²``; the ``K × K`` solve: ``K³/3 + K² M`` for the right-hand side ``H``), a complex
    multiply-add counted as four real ones."""
    widths = [2 * m, *hidden, 2 * m]
    mlp = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    zf = 4 * (m * k * k + k**3 // 3 + m * k * k)
    return k * mlp + zf


def nc_policy(m: int, k: int, hidden: list[int], budget: torch.Tensor) -> torch.nn.Module:
    torch.manual_seed(0)
    phi = Calibrator(m, hidden, batch_norm=True, residual=True, scale=1.0)
    with torch.no_grad():  # a calibration that is not the identity, as a trained one
        torch.nn.init.normal_(phi.net[-1].weight, std=0.01)
    return CalibratedZF(phi, budget).eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["16x2", "32x2", "32x8", "32x12", "64x4", "64x12"])
    parser.add_argument("--samples", type=int, default=500, help="samples per size (batched methods)")
    parser.add_argument("--loop-samples", type=int, default=50, help="samples the loop runs on")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of the batched runs (median)")
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    print(f"massive_fdd at its defaults but (M, K); {a.samples} samples, the loop on {a.loop_samples}")
    print()
    print(
        "| (M, K) | WMMSE batched [ms] | WMMSE loop [ms] | loop ÷ batched | WMMSE iterations "
        "| NC laptop [ms] | NC paper [ms] | unfolded WMMSE [ms] | data-driven [ms] "
        "| NC laptop multiply-adds | NC paper multiply-adds | NC paper weights |"
    )
    print("|" + "---|" * 12)
    for size in a.sizes:
        m, k = (int(v) for v in size.split("x"))
        scenario = MassiveFDD(MassiveFDD.Config(num_antennas=m, num_users=k, seed=a.seed))
        problem = Downlink(None)(scenario.sample(a.samples, torch.Generator().manual_seed(a.seed)))
        W0 = start(problem, "zf")
        batched = median_time(lambda problem=problem, W0=W0: wmmse_bf(problem, W0), a.repeats) / a.samples
        _, _, iterations = wmmse_bf(problem, W0, history=True)
        H = problem.channel[:, 0].numpy()  # [n, K, M]: rows h_k
        noise, power = float(problem.noise[0, 0]), float(problem.budget[0, 0])
        began = time.perf_counter()
        for i in range(a.loop_samples):
            loop(H[i], W0[i, 0].numpy(), noise, power)
        looped = (time.perf_counter() - began) / a.loop_samples
        x = torch.view_as_real(problem.channel).float()
        times, counts, weights = {}, {}, {}
        for name, hidden in WIDTHS.items():
            policy = nc_policy(m, k, hidden, problem.budget[0].float())
            with torch.no_grad():
                times[name] = median_time(lambda policy=policy, x=x: policy(x), a.repeats) / a.samples
            counts[name] = nc_multiply_adds(m, k, hidden)
            weights[name] = sum(p.numel() for p in policy.parameters())
        budget, noise = problem.budget[0].float(), problem.noise[0].float()
        others = {
            "unfolded": UnfoldedWMMSE(20, budget, noise).eval(),
            "data": DataDrivenNet(k, m, [512, 512], budget, 1.0).eval(),
        }
        for name, net in others.items():
            with torch.no_grad():
                times[name] = median_time(lambda net=net, x=x: net(x), a.repeats) / a.samples
        cells = [
            f"({m}, {k})",
            f"{batched * 1e3:.3g}",
            f"{looped * 1e3:.3g}",
            f"{looped / batched:.3g}",
            f"{float(iterations.double().mean()):.1f}",
            f"{times['laptop'] * 1e3:.3g}",
            f"{times['paper'] * 1e3:.3g}",
            f"{times['unfolded'] * 1e3:.3g}",
            f"{times['data'] * 1e3:.3g}",
            f"{counts['laptop'] / 1e6:.2f} M",
            f"{counts['paper'] / 1e6:.2f} M",
            f"{weights['paper'] / 1e6:.2f} M",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
