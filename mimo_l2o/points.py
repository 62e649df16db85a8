"""Points of a comparison: the runs of one setting, and their spread over seeds.

A *setting* is everything that changes a run's result: its composed config (the MLflow params of
:func:`mimo_l2o.config.flatten`) less the seeds and the keys that change only the record (tracking,
device, threads, paths, timing, where the trained policy was also tested). Runs of one setting that
differ in their seeds (the data's ``scenario.seed``, which fixes every frozen draw of a scenario, and
the training ``seed``) are one *point*: its value is the mean over the runs, its spread a 95 %
confidence interval of Student's t over them. ``python -m mimo_l2o -m seed=0,1,2 ...`` repeats every
job of a sweep on three seeds (the data's seed follows ``seed`` unless ``scenario.seed`` is set).

The report (:mod:`mimo_l2o.report`) draws and tabulates points, never a mean across settings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

# the seeds of a run: repeats of one setting differ in these
SEED_KEYS = ("seed", "scenario.seed")
# keys that change the record, not the result (each with the keys under it; one ending in '_' is a
# prefix): labelling in chunks gives the same labels whatever their size
RECORD_KEYS = (
    "tracking",
    "device",
    "num_threads",
    "progress",
    "log_every",
    "max_memory_gb",
    "cache_dir",
    "cache_check",
    "resume",
    "paper",
    "eval.timing_",
    "eval.shifts",
    "data.chunk_size",
)
CONFIDENCE = 0.95


def _is_record_key(key: str) -> bool:
    return any(
        key == k or key.startswith(k + ".") or (k.endswith("_") and key.startswith(k)) for k in RECORD_KEYS
    )


def setting_of(params: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    """The setting of a run's params (``{"scenario.num_users": "8", ...}``): sorted ``(key, value)``
    pairs without the seeds and the record-only keys; runs with equal settings are repeats."""
    return tuple(
        sorted((k, str(v)) for k, v in params.items() if k not in SEED_KEYS and not _is_record_key(k))
    )


def interval(values: Iterable[float]) -> tuple[float, float, int]:
    """``(mean, half-width, n)`` of the finite ``values``: the half-width of the 95 % confidence
    interval of the mean, ``t_{0.975, n-1} · s / √n`` with the sample standard deviation ``s``
    (Student's t over the seeds); NaN for fewer than two values, and the mean NaN for none."""
    from scipy.stats import t

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan, 0
    if x.size == 1:
        return float(x[0]), math.nan, 1
    half = float(t.ppf(0.5 + CONFIDENCE / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return float(x.mean()), half, int(x.size)


def group(items: Iterable, setting) -> list[list]:
    """``items`` grouped by ``setting(item)``, in the order of each group's first item."""
    groups: dict = {}
    for item in items:
        groups.setdefault(setting(item), []).append(item)
    return list(groups.values())


def varying_keys(settings: Iterable[Mapping[str, str]]) -> list[str]:
    """The keys that take two values or more among ``settings``, sorted; a key that some settings lack
    (a renamed option, an older run) takes the value "unset" in those."""
    settings = list(settings)
    keys = {k for setting in settings for k in setting}
    return sorted(k for k in keys if len({setting.get(k, "unset") for setting in settings}) > 1)


def fmt_interval(mean: float, half: float, digits: int = 4) -> str:
    """``0.951 ± 0.012`` (a mean with its half-width), or the mean alone when there is no interval."""
    if math.isnan(mean):
        return ""
    if math.isnan(half):
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {half:.2g}"
