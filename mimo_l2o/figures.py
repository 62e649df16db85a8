"""Figures of the record: empirical CDFs (per-sample objectives, per-user SEs) and the report's
learner × scenario heatmap. Matplotlib without a display (the Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402


def display_name(scheme: str) -> str:
    """A scheme's name as the papers print it in their legends: the learner's or the solver's
    ``display_name`` (``wmmse`` → ``WMMSE``, ``dnn`` → ``DNN``), a learner's option after it
    (``position_lstm/paper`` → ``LSTM (positions) paper``); other names unchanged."""
    from mimo_l2o import registry

    head, _, option = scheme.partition("/")
    for reg in (registry.LEARNERS, registry.SOLVERS):
        if head in reg.names():
            return " ".join([reg.get(head).display_name or head, option]).strip()
    return scheme


def cdf_figure(values: dict[str, Tensor | np.ndarray], xlabel: str, title: str, ax=None, logx: bool = False):
    """Empirical CDFs of per-sample values, one curve per scheme (like Sun et al. 2018, Fig. 7), the
    legend in the papers' names (:func:`display_name`); on ``ax`` when given (the figure is then the
    axes' own); ``logx``: a logarithmic x axis (squared errors, Sanguinetti et al. 2018, Fig. 1b)."""
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110) if ax is None else (ax.figure, ax)
    for label, v in values.items():
        array = v.detach().double().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v, dtype=float)
        x = np.sort(array.ravel())
        ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", label=display_name(label))
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("CDF")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def close(fig) -> None:
    plt.close(fig)


def error_bars(half) -> np.ndarray | None:
    """``yerr`` for ``errorbar`` from half-widths (NaN: a point without an interval, drawn bare);
    ``None`` when no point has one."""
    half = np.asarray(half, dtype=float)
    return np.where(np.isnan(half), 0.0, half) if np.isfinite(half).any() else None


def value_order(value) -> tuple:
    """A sort key for axis values and their texts: by number, a joint shift's ``10x5`` by its numbers in
    turn (``5x5 < 5x10 < 10x5``), names after the numbers in alphabetical order."""
    try:
        return (0, tuple(float(part) for part in str(value).split("x")))
    except ValueError:
        return (1, str(value))


def shift_figure(curves: dict[str, list[tuple]], key: str, title: str, trained=None, ax=None):
    """The objective ratio against a shifted scenario key (``eval.shifts``), one curve per scheme (a
    learner; in the report one per point), the trained value marked by a dotted line (Ma et al. 2022,
    Fig. 7's "mismatch" curves); on ``ax`` when given. A curve's points are ``(value, ratio)`` or
    ``(value, mean ratio, half-width)``, the half-width (NaN: none) drawn as an error bar; values that are
    not numbers (a model's name, a joint shift's ``5x10``) are one tick each, in the order of
    :func:`value_order`."""
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110) if ax is None else (ax.figure, ax)
    values = [p[0] for points in curves.values() for p in points] + ([trained] if trained is not None else [])
    if all(_is_number(v) for v in values):
        position = float
    else:  # named values (a correlation model; a joint shift's 5x10): one tick each, in order
        names = sorted({str(v) for v in values}, key=value_order)
        ax.set_xticks(range(len(names)), names)

        def position(value):
            return float(names.index(str(value)))

    for label, points in curves.items():
        ordered = sorted(points, key=lambda p: position(p[0]))
        xs = [position(p[0]) for p in ordered]
        ys = [p[1] for p in ordered]
        half = [p[2] if len(p) > 2 else np.nan for p in ordered]
        ax.errorbar(xs, ys, yerr=error_bars(half), capsize=3, marker="o", label=display_name(label))
    if trained is not None:
        ax.axvline(position(trained), color="0.5", linestyle=":", label="trained at")
    ax.set_xlabel(key)
    ax.set_ylabel("objective ratio (learner / solver)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig
