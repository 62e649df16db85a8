"""Evaluation on held-out networks: the metric contract of every learner.

``test/objective_learner``, ``test/objective_solver``, ``test/objective_ratio`` (learner ÷
solver, of the mean objectives), ``test/objective_<baseline>``, ``test/time_learner_ms``,
``test/time_solver_ms`` (per sample, one batch on the same device after a warm-up, device
synchronised, median of repeats), ``test/speedup`` (solver ÷ learner) and
``test/constraint_violation`` (largest excess over any budget; 0). Objectives with per-user rates add
``test/mse_se`` and per-scheme ``test/se_mean_<name>``, ``test/se_p5_<name>``
(:func:`mimo_l2o.runner.per_user_metrics`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_sample_ms(
    fn: Callable[[], object],
    num_samples: int,
    device: torch.device,
    repeats: int,
    budget_s: float = float("inf"),
) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up, per sample, in ms; the
    runs stop early once they have taken ``budget_s`` seconds together (at least one run), so that a
    solver of seconds per sample is not run ``repeats`` more times."""
    fn()
    synchronize(device)
    times: list[float] = []
    while len(times) < repeats and sum(times) < budget_s:
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times) / num_samples


def cdf_figure(values: dict[str, Tensor], xlabel: str, title: str):
    """Empirical CDFs of per-sample values, one curve per scheme (like Sun et al. 2018, Fig. 7)."""
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for label, v in values.items():
        x = np.sort(v.detach().double().cpu().numpy())
        ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("CDF")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)
