"""Figures of the record: empirical CDFs (per-sample objectives, per-user SEs) and the report's
learner × scenario heatmap. Matplotlib without a display (the Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402


def cdf_figure(values: dict[str, Tensor | np.ndarray], xlabel: str, title: str, ax=None):
    """Empirical CDFs of per-sample values, one curve per scheme (like Sun et al. 2018, Fig. 7); on
    ``ax`` when given (the figure is then the axes' own)."""
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110) if ax is None else (ax.figure, ax)
    for label, v in values.items():
        array = v.detach().double().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v, dtype=float)
        x = np.sort(array.ravel())
        ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("CDF")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)
