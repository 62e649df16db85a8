"""``mimo-l2o report`` (also ``python -m mimo_l2o.report``): the comparison of finished runs.

Reads the MLflow store (the default ``sqlite:///mlflow.db`` or ``MLFLOW_TRACKING_URI``): the runs of one
or more sweeps (``--sweep <parent run id>``, repeatable) and single runs (``--run <run id>``, repeatable),
or of an experiment (``--experiment``, default ``mimo_l2o``).

Runs are grouped into *points* (:mod:`mimo_l2o.points`): the runs of one setting, which differ only in
their seeds, shown as the mean over them with a 95 % confidence interval (Student's t) and their number
of seeds; a rerun of the same seeds replaces the older run. Nothing is averaged across settings, and
every figure or cell draws a setting against the solver and baselines of its own runs. Written into
``--out``:

* ``report.md`` and ``report.csv``: the matrix of ``test/objective_ratio``, a row per learner setting and
  a column per problem setting (titled a cross-evaluation only when each column is a scenario of its
  own), then a row per point (paper, learner, scenario, precoder, objective, K, M, p_max, the uplink
  pilots L, seeds; ``test/objective_ratio``, the best heuristic baseline's ratio, the learner's time per
  sample, the speed-up, the constraint violation, the MSE of SEs, epochs, wall time) and, where the
  learner's paper published a number for that setting, that number (``Learner.published``); the pairs a
  sweep skipped, with their reasons; the generalization shifts (``eval.shifts``) per point;
* ``ratio_heatmap.png``: the matrix as a heatmap, skipped pairs marked;
* ``cdf_objective.png``: a panel per problem setting, the CDF of the per-sample test objective of each
  learner setting and of the solver and baselines on the same test sets (pooled over the seeds);
* ``sweep_curves.png``, where the points of a scenario and objective differ in K, M, the power or L (a
  sweep such as ``-m scenario.num_users=2,4,8``): the mean test objective against that axis, one curve
  per learner setting, the solver's and every baseline's beside them, as the papers draw their sum rate
  against the number of users (Zhang et al. 2022, Fig. 4a), and below it each curve's ratio to the
  solver; error bars are the 95 % intervals over the seeds. Other settings the points vary join the
  curves' labels;
* ``shift_<key>.png`` per shifted key: the ratio against the key, a curve per point, with error bars;
* ``training_curves.png``: per point, the training and validation loss and the validation ratio against
  the epoch (mean over the seeds, the interval as a band), so that over- or under-training is seen.

With ``--sweep``, the files are also logged as artifacts of each sweep's parent run (``report/``), so the
MLflow UI shows the comparison; ``--readme FILE`` replaces the block between ``<!-- cross-evaluation -->``
and ``<!-- /cross-evaluation -->`` in FILE with the matrix. Every output is stamped with the commits and
machines of its runs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mimo_l2o.points import SEED_KEYS, fmt_interval, group, interval, setting_of, varying_keys

SCENARIO_ORDER = ("gaussian_ic", "imac", "cellular", "cellfree")
MARK_BEGIN, MARK_END = "<!-- cross-evaluation -->", "<!-- /cross-evaluation -->"
PER_SAMPLE_ARTIFACT = "per_sample_objective.csv"  # logged by every run (mimo_l2o.runner)
SKIPPED_DIR = "skipped"  # a sweep's skipped jobs (mimo_l2o.tracking.record_skip)
COLUMNS = (
    "paper",
    "learner",
    "run",
    "scenario",
    "precoder",
    "objective",
    "K",
    "M",
    "p_max",
    "L",
    "seeds",
    "objective_ratio",
    "best_baseline",
    "best_baseline_ratio",
    "time_learner_ms",
    "speedup",
    "constraint_violation",
    "mse_se",
    "epochs",
    "train_time_s",
    "wall_time_s",
    "published",
    "run_id",
)
# the numeric columns a point shows as a mean (with its interval where marked)
MEANS = {
    "objective_ratio": True,
    "best_baseline_ratio": True,
    "time_learner_ms": False,
    "speedup": False,
    "constraint_violation": False,
    "mse_se": True,
    "epochs": False,
    "train_time_s": False,
    "wall_time_s": False,
}
AXES = (  # the report's column, the config key that sets it, the axis' label (earlier axes win ties)
    ("K", "scenario.num_users", "users K"),
    ("M", "scenario.num_antennas", "antennas M"),
    ("p_max_dbm", "scenario.p_max_dbm", "power budget p_max [dBm]"),
    ("snr_db", "scenario.snr_db", "SNR [dB]"),
    ("p_max", "scenario.p_max", "power budget p_max"),
    ("L", "scenario.pilot_length", "uplink pilot symbols L"),
    ("P_UL", "scenario.pilot_power_dbm", "pilot power P_UL [dBm]"),
)
SHORT = {key: column for column, key, _ in AXES}
# the per-epoch metrics of training_curves.png: the losses (one panel) and the validation ratio
HISTORY = ("train/loss", "val/loss", "val/objective_ratio")


@dataclass
class Row:
    """One finished run, as the report reads it: its values, its params (the composed config) and its
    per-sample test objectives."""

    values: dict[str, object]
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    history: dict[str, dict[int, float]] = field(default_factory=dict)

    def __getitem__(self, key: str):
        return self.values.get(key)

    @property
    def seeds(self) -> tuple[str, ...]:
        return tuple(str(self.params.get(k, "")) for k in SEED_KEYS)


@dataclass
class Point:
    """The runs of one setting (:mod:`mimo_l2o.points`): a value of the report is their mean, with
    :meth:`stat` its 95 % interval. ``label`` names the point among the report's (the run's name and the
    settings that tell it apart), ``learner_label`` its learner setting (a matrix row, a curve) and
    ``column`` its problem setting (a matrix column, a CDF panel)."""

    rows: list[Row]
    setting: dict[str, str]
    label: str = ""
    learner_label: str = ""
    column: str = ""

    def __getitem__(self, key: str):
        if key == "seeds":
            return len(self.rows)
        if key == "run":
            return self.label
        if key == "run_id":
            return " ".join(r["run_id"] for r in self.rows)
        if key == "best_baseline":
            return self.best_baseline()[0]
        if key == "learner_preset":  # the learner's option (position_lstm/paper); older runs: the learner
            return self.rows[0]["learner_preset"] or self.rows[0]["learner"]
        if key in MEANS:
            return self.stat(key)[0]
        return self.rows[0][key]

    def best_baseline(self) -> tuple[str, tuple[float, float, int]]:
        """The baseline of the highest mean ratio over the seeds, and its ``(mean, half-width, n)``."""
        names = dict.fromkeys(name for r in self.rows for name in r["baseline_ratios"] or {})
        stats = {n: interval((r["baseline_ratios"] or {}).get(n, math.nan) for r in self.rows) for n in names}
        stats = {n: v for n, v in stats.items() if not math.isnan(v[0])}
        if not stats:
            return "", (math.nan, math.nan, 0)
        best = max(stats, key=lambda n: stats[n][0])
        return best, stats[best]

    def stat(self, key: str) -> tuple[float, float, int]:
        if key == "best_baseline_ratio":
            return self.best_baseline()[1]
        return interval(_number(r[key]) for r in self.rows)

    @property
    def name(self) -> str:
        """The point among the report's: its learner setting and its problem setting (unique)."""
        return f"{self.learner_label} {self.column}"

    @property
    def problem(self) -> dict[str, str]:
        """The setting without the learner's keys: what the solver and the baselines see."""
        return {k: v for k, v in self.setting.items() if not k.startswith("learner.")}

    @property
    def learner_setting(self) -> dict[str, str]:
        return {k: v for k, v in self.setting.items() if k.startswith("learner.")}


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def natural(text: str) -> tuple:
    """A sort key for a label that reads its numbers as numbers: ``num_aps=5`` before ``num_aps=10``,
    ``num_train=512`` before ``num_train=4096`` (text order would put them the other way)."""
    parts = re.split(r"(\d+(?:\.\d+)?)", text)
    return tuple((0, float(part), "") if i % 2 else (1, 0.0, part) for i, part in enumerate(parts))


def _mlflow():
    import mlflow

    return mlflow


def _published(learner: str, params: dict[str, str]) -> str:
    from mimo_l2o import registry
    from mimo_l2o.errors import ConfigError

    try:
        return registry.LEARNERS.get(learner).published(params) or ""
    except ConfigError:  # a learner that is no longer installed
        return ""


def run_label(run, client) -> str:
    """The run's name, followed by the settings its sweep gave every job (the parent's name is ``sweep
    <overrides>``), or for a single run its command line's overrides (``hydra/overrides.yaml``), that the
    name does not show: two one-job sweeps or two single runs of different settings read apart. The
    scenario and learner have their own columns."""
    name = run.info.run_name or ""
    parent = run.data.tags.get("mlflow.parentRunId")
    try:
        if parent:
            overrides = (client.get_run(parent).info.run_name or "").removeprefix("sweep ").split()
        else:  # a single run: the overrides of its command line, as Hydra logged them
            overrides = _logged_overrides(client, run.info.run_id)
    except Exception:  # the parent or the artifact is gone: the name alone
        return name
    shown = set(name.split())
    extra = [o for o in overrides if o not in shown and "=" in o and "," not in o]
    extra = [o for o in extra if o.split("=")[0] not in ("scenario", "learner")]
    # eval.shifts is where the run was tested, not what it is (and its mapping holds spaces)
    extra = [o for o in extra if not o.startswith("eval.shifts=")]
    return " ".join([name, *extra])


def _logged_overrides(client, run_id: str) -> list[str]:
    """The command-line overrides a run logged (``hydra/overrides.yaml``, a YAML list of strings)."""
    from omegaconf import OmegaConf

    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "hydra/overrides.yaml", tmp)
        return [str(o) for o in OmegaConf.to_container(OmegaConf.load(path)) or []]


def row_of(run, client, with_samples: bool) -> Row:
    """The report's row of an MLflow run (and its per-sample objectives when asked)."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    solver = metrics.get("test/objective_solver", math.nan)
    baselines = {
        key.removeprefix("test/objective_"): value / solver
        for key, value in metrics.items()
        if key.startswith("test/objective_")
        and key.removeprefix("test/objective_") not in ("learner", "solver", "ratio", "ratio_raw")
    }
    best = max(baselines, key=baselines.get) if baselines else ""
    end = run.info.end_time or run.info.start_time
    values = {
        "paper": tags.get("paper", ""),
        "learner": tags.get("learner", ""),
        # the learner's option in its config group (position_lstm/paper); older runs have none
        "learner_preset": tags.get("learner_preset", ""),
        "run": run_label(run, client),
        "scenario": tags.get("scenario", ""),
        "precoder": tags.get("precoder", ""),
        "objective": tags.get("objective", ""),
        "solver": tags.get("solver", ""),
        **{column: params.get(key, "") for column, key, _ in AXES},
        "objective_ratio": metrics.get("test/objective_ratio", math.nan),
        # the mean test objective of the learner, the solver and each baseline (the sweep curves)
        "objectives": {
            key.removeprefix("test/objective_"): value
            for key, value in metrics.items()
            if key.startswith("test/objective_")
            and key not in ("test/objective_ratio", "test/objective_ratio_raw")
        },
        "best_baseline": best,
        "best_baseline_ratio": baselines.get(best, math.nan),
        "baseline_ratios": baselines,
        # what the run's uplink pilots were worth: the LS estimate's NMSE [dB] (runs with pilots)
        "nmse_uplink_ls": metrics.get("test/nmse_uplink_ls", math.nan),
        "time_learner_ms": metrics.get("test/time_learner_ms", math.nan),
        "speedup": metrics.get("test/speedup", math.nan),
        "constraint_violation": metrics.get("test/constraint_violation", math.nan),
        "mse_se": metrics.get("test/mse_se", math.nan),
        "epochs": metrics.get("train/epochs", math.nan),
        # the training loop's own time (Zhang et al.'s Table I), without labelling and evaluation
        "train_time_s": metrics.get("train/train_time_s", math.nan),
        "wall_time_s": (end - run.info.start_time) / 1000,
        "start_time": run.info.start_time,
        "published": _published(tags.get("learner", ""), params),
        # eval.shifts: {key: [(value, ratio), ...]} and the points not applicable
        "shifts": shifts_of(metrics),
        "shifts_not_applicable": int(metrics.get("test/shift/not_applicable", 0)),
        "run_id": run.info.run_id,
        "commit": tags.get("mimo_l2o.commit", ""),
        "machine": tags.get("mimo_l2o.machine", ""),
    }
    row = Row(values, params=dict(params))
    if with_samples:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(run.info.run_id, PER_SAMPLE_ARTIFACT, tmp)
                data = np.genfromtxt(path, delimiter=",", names=True)
            row.per_sample = {
                name: np.atleast_1d(np.asarray(data[name], dtype=float)) for name in data.dtype.names
            }
        except Exception:  # an older run without the artifact: no CDF curve
            row.per_sample = {}
        for key in HISTORY:  # the per-epoch training metrics (training_curves.png)
            try:
                history = client.get_metric_history(run.info.run_id, key)
            except Exception:
                history = []
            if history:
                row.history[key] = {m.step: m.value for m in history}
    return row


def points_of(rows: list[Row]) -> list[Point]:
    """The report's points: ``rows`` grouped by setting (a later run of the same seeds replaces an
    earlier one), labelled (:func:`label_points`) and ordered by scenario, learner, K and the power."""
    latest: dict = {}
    for row in sorted(rows, key=lambda r: r["start_time"] or 0):
        latest[(setting_of(row.params), row.seeds)] = row
    points = [
        Point(sorted(members, key=lambda r: r.seeds), dict(setting_of(members[0].params)))
        for members in group(latest.values(), lambda r: setting_of(r.params))
    ]
    label_points(points)

    def key(point: Point):
        scenario = point["scenario"]
        position = SCENARIO_ORDER.index(scenario) if scenario in SCENARIO_ORDER else len(SCENARIO_ORDER)
        power = _number(point["p_max"])
        return (position, scenario, point["learner"], _number(point["K"]), power, natural(point.label))

    return sorted(points, key=key)


def _short(key: str) -> str:
    """A key as a label shows it: an axis by its column (``K``), a part's name by its group as the
    command line chooses it (``precoder.name`` → ``precoder``), any other key whole."""
    if key in SHORT:
        return SHORT[key]
    group, _, leaf = key.partition(".")
    return group if leaf == "name" else key


def _words(setting: dict[str, str], keys) -> list[str]:
    return [f"{_short(k)}={setting.get(k, 'unset')}" for k in keys]


def label_points(points: list[Point]) -> None:
    """Name each point among the others: ``column`` is its scenario and the problem settings that
    differ among the points of that scenario (``imac K=8 data.num_train=512``), ``learner_label`` its
    learner and the learner settings that differ among that learner's points, less those the problem
    setting fixes (a width that follows the antennas, a preset's epochs per scenario); ``label`` is its
    runs' name without the seeds, and the differing settings that name does not already show. Labels
    that would still collide get the first run's id."""
    by_scenario = defaultdict(list)
    for point in points:
        by_scenario[point["scenario"]].append(point.problem)
    problem_keys = {s: [k for k in varying_keys(v) if k != "scenario.name"] for s, v in by_scenario.items()}
    learner_keys = _learner_keys(points)
    for point in points:
        problem = _words(point.setting, problem_keys[point["scenario"]])
        own = _words(point.setting, learner_keys[point["learner"]])
        point.column = " ".join([point["scenario"], *problem])
        point.learner_label = " ".join([point["learner_preset"], *own])
        name = [w for w in str(point.rows[0]["run"]).split() if w.split("=", 1)[0] not in SEED_KEYS]
        if name and name[0].startswith(f"{point['learner']}-"):  # a name from before the option was in it
            name[0] = point["learner_preset"] + name[0].removeprefix(point["learner"])
        # the settings the name does not show (a key the name already gives, as K in -K8, stays out)
        shown = {w.split("=", 1)[0] for w in name} | {"scenario.num_users"}
        shown |= {f"{k}.name" for k in shown}  # precoder=mr in the name shows precoder.name
        keys = (*learner_keys[point["learner"]], *problem_keys[point["scenario"]])
        extra = _words(point.setting, [k for k in keys if k not in shown])
        point.label = " ".join([*name, *extra])
    for attribute in ("label", "learner_label"):  # the last resort: the run id tells them apart
        seen = defaultdict(list)
        for point in points:
            key = getattr(point, attribute) if attribute == "label" else (point.learner_label, point.column)
            seen[key].append(point)
        for clashing in (same for same in seen.values() if len(same) > 1):
            for point in clashing:
                setattr(point, attribute, f"{getattr(point, attribute)} [run {point.rows[0]['run_id'][:8]}]")


def _learner_keys(points: list[Point]) -> dict[str, list[str]]:
    """For each learner, the learner settings that differ among its ``points`` and that the problem
    setting does not fix (keys with one value within every problem setting, such as a width of
    ``2 N_t K`` in a K sweep, go with the problem's words instead)."""
    by_learner = defaultdict(list)
    for point in points:
        by_learner[point["learner"]].append(point)
    out = {}
    for learner, members in by_learner.items():
        keys = [k for k in varying_keys([p.learner_setting for p in members]) if k != "learner.name"]
        per_problem = defaultdict(lambda: defaultdict(set))
        for point in members:
            problem = tuple(sorted(point.problem.items()))
            for key in keys:
                per_problem[key][problem].add(point.setting.get(key, "unset"))
        kept = [k for k in keys if any(len(v) > 1 for v in per_problem[k].values())]
        presets = group(members, lambda p: p["learner_preset"])
        if len(presets) > 1:  # the option's name (position_lstm/paper) stands for the keys it fixes
            kept = [k for k in kept if any(len({p.setting.get(k) for p in same}) > 1 for same in presets)]
        for key in list(kept):  # a key that follows the problem among otherwise equal settings, if it can go
            others = [k for k in kept if k != key]
            if _follows_problem(members, key, others) and _tells_apart(members, others):
                kept = others
        out[learner] = kept
    return out


def _follows_problem(points: list[Point], key: str, others: list[str]) -> bool:
    """Whether ``key`` takes several values among points equal in ``others`` (a width of ``2 N_t K``
    beside another network's fixed width: the K sweep gives it a value per K)."""
    values = defaultdict(set)
    for point in points:
        values[tuple(point.setting.get(k, "unset") for k in others)].add(point.setting.get(key, "unset"))
    return any(len(v) > 1 for v in values.values())


def _tells_apart(points: list[Point], keys: list[str]) -> bool:
    """Whether ``keys`` tell apart every two learner settings of one problem setting."""
    seen: dict = {}
    for point in points:
        problem = tuple(sorted(point.problem.items()))
        label = (problem, tuple(point.setting.get(k, "unset") for k in keys))
        setting = tuple(sorted(point.learner_setting.items()))
        if seen.setdefault(label, setting) != setting:
            return False
    return True


def shifts_of(metrics: dict[str, float]) -> dict[str, list[tuple[str, float]]]:
    """A run's generalization shifts (``test/shift/<key>/<value>/objective_ratio``) as ``{key: [(value,
    ratio), ...]}``, sorted by the value."""
    from mimo_l2o.figures import value_order
    from mimo_l2o.shifts import shift_points

    return {k: sorted(v, key=lambda p: value_order(p[0])) for k, v in shift_points(metrics).items()}


def skipped_of(client, parent_id: str) -> list[dict]:
    """The jobs a sweep skipped, as :func:`mimo_l2o.tracking.record_skip` logged them."""
    out = []
    try:
        artifacts = client.list_artifacts(parent_id, SKIPPED_DIR)
    except Exception:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        for artifact in artifacts:
            path = client.download_artifacts(parent_id, artifact.path, tmp)
            out.append(json.loads(Path(path).read_text()))
    return out


def select(
    client, sweeps: list[str], experiment: str | None, singles: list[str] = ()
) -> tuple[list, list[dict]]:
    """The finished runs of the sweeps and single runs (or of the experiment) and the jobs the sweeps
    skipped."""
    if sweeps or singles:
        runs, skipped = [], []
        for parent in sweeps:
            experiment_id = client.get_run(parent).info.experiment_id
            found = client.search_runs(
                [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=50000
            )
            runs += found
            skipped += skipped_of(client, parent)
        for run_id in singles:
            try:
                runs.append(client.get_run(run_id))
            except Exception as error:  # MlflowException: no such run
                raise SystemExit(
                    f"error: --run: no run '{run_id}' in {_mlflow().get_tracking_uri()}"
                ) from error
    else:
        name = experiment or "mimo_l2o"
        found = client.get_experiment_by_name(name)
        if found is None:
            raise SystemExit(
                f"error: --experiment: no MLflow experiment '{name}' in {_mlflow().get_tracking_uri()}"
            )
        runs, skipped = client.search_runs([found.experiment_id], max_results=50000), []
    finished = [r for r in runs if r.info.status == "FINISHED" and "test/objective_ratio" in r.data.metrics]
    return finished, skipped


def _fmt(value, digits: int = 4) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.{digits}g}"
    return str(value)


def _cell(point: Point, key: str, digits: int = 4) -> str:
    """A point's value as the table shows it: a mean with its interval, or the value itself."""
    if key in MEANS and MEANS[key]:
        return fmt_interval(*point.stat(key)[:2], digits=digits)
    return _fmt(point[key], digits)


def stamp(rows: list[Row], command: str, points: list[Point] | None = None) -> str:
    """Where the numbers come from: the command, the time, the runs' commits and machines, and how
    many points they make."""
    commits = sorted({r["commit"] for r in rows if r["commit"]}) or ["unknown"]
    machines = sorted({r["machine"] for r in rows if r["machine"]}) or ["unknown"]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    grouped = "" if points is None or len(points) == len(rows) else f" ({len(points)} settings)"
    return (
        f"Generated by `{command}` on {when} from {len(rows)} runs{grouped}; "
        f"commit {', '.join(commits)}; machine {'; '.join(machines)}."
    )


SPREAD_NOTE = (
    "Values of several seeds are the mean ± the half-width of its 95 % confidence interval "
    "(Student's t over the seeds); `seeds` counts the runs of each setting."
)


def markdown(points: list[Point], skipped: list[dict], header: str) -> str:
    """The table of points (a row each) and the pairs a sweep skipped."""
    titles = {
        "objective_ratio": "objective ratio",
        "best_baseline_ratio": "best baseline ratio",
        "time_learner_ms": "learner [ms/sample]",
        "constraint_violation": "violation",
        "mse_se": "MSE of SEs",
        "train_time_s": "training [s]",
        "wall_time_s": "wall [s]",
        "published": "paper's number",
    }
    shown = [c for c in COLUMNS if c != "run_id"]
    lines = [header, ""]
    if any(p["seeds"] > 1 for p in points):
        lines += [SPREAD_NOTE, ""]
    lines += ["| " + " | ".join(titles.get(c, c) for c in shown) + " |"]
    lines.append("| " + " | ".join("---" for _ in shown) + " |")
    for point in points:
        lines.append("| " + " | ".join(_cell(point, c) for c in shown) + " |")
    if skipped:
        lines += ["", "Skipped pairs:", "", "| learner | scenario | reason |", "| --- | --- | --- |"]
        for job in sorted(skipped, key=lambda j: (j["scenario"], j["learner"])):
            lines.append(f"| {job['learner']} | {job['scenario']} | {job['reason']} |")
    return "\n".join(lines) + "\n"


def csv_text(points: list[Point]) -> str:
    """A row per point: the table's columns, the interval's half-width of each averaged column
    (``<column>_ci95``) and the point's run ids."""
    spread = [f"{c}_ci95" for c, with_ci in MEANS.items() if with_ci]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*COLUMNS, *spread, "commit", "machine"])
    for point in points:
        writer.writerow(
            [point[c] for c in COLUMNS]
            + [point.stat(c.removesuffix("_ci95"))[1] for c in spread]
            + [" ".join(sorted({r["commit"] for r in point.rows})), point["machine"]]
        )
    return out.getvalue()


def cells(points: list[Point], skipped: list[dict]):
    """``(rows, columns, point of each cell, reasons)`` of the matrix: a row per learner setting, a
    column per problem setting (scenarios in :data:`SCENARIO_ORDER`), the reasons of the skipped pairs
    keyed by ``(learner, scenario)``."""
    reasons = {(j["learner"], j["scenario"]): j["reason"] for j in skipped}
    grid = {(p.learner_label, p.column): p for p in points}
    learners = sorted({p.learner_label for p in points} | {learner for learner, _ in reasons})
    scenario_of = {p.column: p["scenario"] for p in points}
    for _, scenario in reasons:  # a scenario only skipped pairs name: a column of its own
        if scenario not in scenario_of.values():
            scenario_of[scenario] = scenario

    first = {}
    for point in points:
        first.setdefault(point.column, point)

    def order(column: str):  # by scenario, then by the axes' values as numbers (K = 2 before K = 10)
        scenario = scenario_of[column]
        position = SCENARIO_ORDER.index(scenario) if scenario in SCENARIO_ORDER else len(SCENARIO_ORDER)
        values = [_number(first[column][a]) if column in first else math.nan for a, _, _ in AXES]
        numbers = [(math.isnan(v), 0.0 if math.isnan(v) else v) for v in values]
        return (position, scenario, numbers, natural(column))

    columns = sorted(scenario_of, key=order)
    return learners, columns, grid, scenario_of, reasons


def is_cross_evaluation(points: list[Point]) -> bool:
    """Learners against scenarios, one setting of each scenario: each column is a scenario of its own."""
    columns = {p.column for p in points}
    return len(columns) > 1 and len(columns) == len({p["scenario"] for p in points})


def matrix_markdown(points: list[Point], skipped: list[dict]) -> str:
    """The matrix of ``test/objective_ratio``: a row per learner setting, a column per problem setting
    (the mean over seeds ± its interval and the number of seeds, the best baseline's ratio where the
    learner does not beat it), the pairs a sweep skipped marked, their reasons below the table."""
    learners, columns, grid, scenario_of, reasons = cells(points, skipped)
    lines = ["| learner ↓ setting → | " + " | ".join(columns) + " |"]
    lines.append("| --- | " + " | ".join("---" for _ in columns) + " |")
    notes: list[str] = []
    for learner in learners:
        out = []
        for column in columns:
            point = grid.get((learner, column))
            reason = reasons.get((learner.split()[0], scenario_of[column]))
            if point is not None:
                mean, half, n = point.stat("objective_ratio")
                text = f"{mean:.3f}" + (f" ± {half:.3f} ({n} seeds)" if n > 1 else "")
                best = point.stat("best_baseline_ratio")[0]
                if not math.isnan(best) and mean <= best:
                    text += f", not above the best baseline's {best:.3f}"
                out.append(text)
            elif reason is not None:
                if reason not in notes:
                    notes.append(reason)
                out.append(f"refuses ({notes.index(reason) + 1})")
            else:
                out.append("not run")
        lines.append(f"| {learner} | " + " | ".join(out) + " |")
    if notes:
        lines.append("")
        lines += [f"({i}) {note}  " for i, note in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


def heatmap(points: list[Point], skipped: list[dict], path: Path) -> None:
    """The matrix (:func:`matrix_markdown`) as a heatmap of the mean ratios."""
    from mimo_l2o.figures import close, plt

    learners, columns, grid_of, scenario_of, reasons = cells(points, skipped)
    grid = np.full((len(learners), len(columns)), np.nan)
    for (learner, column), point in grid_of.items():
        grid[learners.index(learner), columns.index(column)] = point.stat("objective_ratio")[0]
    fig, ax = plt.subplots(figsize=(3.6 + 1.4 * len(columns), 1.4 + 0.6 * len(learners)), dpi=110)
    image = ax.imshow(
        grid, cmap="viridis", vmin=min(0.5, np.nanmin(grid) if np.isfinite(grid).any() else 0.5), vmax=1.0
    )
    for i, learner in enumerate(learners):
        for j, column in enumerate(columns):
            value = grid[i, j]
            refused = (learner.split()[0], scenario_of[column]) in reasons
            text = f"{value:.3f}" if np.isfinite(value) else ("refuses" if refused else "")
            color = "black" if np.isfinite(value) and value > 0.8 else "white"
            ax.text(j, i, text, ha="center", va="center", color=color if np.isfinite(value) else "gray")
    ax.set_xticks(range(len(columns)), [c.replace(" ", "\n") for c in columns])
    ax.set_yticks(range(len(learners)), learners)
    ax.set_title("objective ratio (learner ÷ solver), mean over seeds", fontsize="medium")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path)
    close(fig)


def baselines_markdown(points: list[Point]) -> str:
    """The baselines section: per problem setting (a matrix column), each heuristic baseline's ratio to
    the solver on the same test sets (mean ± interval over the data seeds), so that a gap can be read
    against them (ZF of the uplink as the downlink, ZF of the LS estimate, the true channel's ZF ...)."""
    columns = defaultdict(list)
    for point in points:
        columns[point.column].append(point)
    table = {}
    for column in cells(points, [])[1]:
        if column not in columns:
            continue
        runs = _distinct_seeds(columns[column])
        names = dict.fromkeys(n for r in runs for n in r["baseline_ratios"] or {})
        table[column] = {
            n: interval((r["baseline_ratios"] or {}).get(n, math.nan) for r in runs) for n in names
        }
        nmse = interval(_number(r["nmse_uplink_ls"]) for r in runs)
        if nmse[2]:
            table[column]["uplink LS NMSE [dB]"] = nmse
    names = list(dict.fromkeys(n for row in table.values() for n in row))
    if not names:
        return ""
    lines = ["", "## Baselines (ratio to the solver on the same test sets)", ""]
    lines += ["| setting | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for column, row in table.items():
        shown = [fmt_interval(*row[n][:2]) if n in row else "" for n in names]
        lines.append(f"| {column} | " + " | ".join(shown) + " |")
    if any("uplink LS NMSE [dB]" in row for row in table.values()):
        lines += ["", "`uplink LS NMSE [dB]`: the LS estimate of the uplink pilots (test/nmse_uplink_ls)."]
    return "\n".join(lines) + "\n"


def shift_table(points: list[Point]) -> dict[str, dict[str, dict[str, tuple[float, float, int]]]]:
    """``{key: {setting: {value: (mean, half-width, n)}}}`` of the shifted ratios over each point's seeds,
    a setting named by its learner setting and problem setting (unique among the points)."""
    table: dict = defaultdict(dict)
    for point in points:
        values: dict = defaultdict(lambda: defaultdict(list))
        for row in point.rows:
            for key, pairs in (row["shifts"] or {}).items():
                for value, ratio in pairs:
                    values[key][value].append(ratio)
        for key, by_value in values.items():
            table[key][f"{point.learner_label} {point.column}"] = {
                v: interval(r) for v, r in by_value.items()
            }
    return table


def shifts_markdown(points: list[Point]) -> str:
    """The shifts section of the report: per shifted key, a row per point with its ratio at each value."""
    from mimo_l2o.figures import value_order

    table = shift_table(points)
    if not table:
        return ""
    lines = ["", "## Generalization shifts (eval.shifts: trained once, tested at each value)", ""]
    for key in sorted(table):
        values = sorted({v for by_value in table[key].values() for v in by_value}, key=value_order)
        lines += [f"`{key}`:", "", "| run | " + " | ".join(values) + " |"]
        lines.append("| --- |" + " --- |" * len(values))
        for label, by_value in table[key].items():
            shown = [fmt_interval(*by_value[v][:2]) if v in by_value else "" for v in values]
            lines.append(f"| {label} | " + " | ".join(shown) + " |")
        lines.append("")
    if any(row["shifts_not_applicable"] for p in points for row in p.rows):
        lines.append(
            "Points a learner could not read are left blank (their reasons: each run's shifts.json)."
        )
    return "\n".join(lines) + "\n"


def shift_curves(points: list[Point]) -> dict[str, tuple[dict[str, list[tuple]], list[int]]]:
    """Per shifted key, the curves of its figure and the points' numbers of seeds: each point trained once
    and tested at each value (:func:`shift_table`), and where the report also holds runs trained at
    several values of the key (an axis of :data:`AXES`), each learner setting's matched curve beside it,
    ``<its sweep label> (trained at each value)`` (Ma et al. 2022, Figs. 7, 8 and 10: "matched" against
    "mismatch"). A curve's points are ``(value, mean, half-width)``."""
    from mimo_l2o.shifts import TEXT_JOIN

    series = sweep_series(points)
    out = {}
    for key, curves in shift_table(points).items():
        drawn = {  # a value that is no number (a model's name) stays a name: one tick of its own
            label: [
                (v if math.isnan(_number(v)) else _number(v), mean, half)
                for v, (mean, half, _) in by_value.items()
            ]
            for label, by_value in curves.items()
        }
        seeds = {n for by_value in curves.values() for _, _, n in by_value.values()}
        # the matched curves of the shifted points' own scenarios and objectives
        shifted = {
            (p["scenario"], p["objective"]) for p in points if any(key in (r["shifts"] or {}) for r in p.rows)
        }
        if TEXT_JOIN in key:  # keys shifted together: the runs trained at each joint value
            drawn.update(_matched_joint(points, key, shifted, seeds))
        for (scenario, objective, axis), entry in series.items():
            if (scenario, objective) not in shifted or SHORT.get(key) != axis:
                continue
            where = f" {scenario} {objective}" if len(shifted) > 1 else ""
            for label, curve in entry["ratio"].items():
                if not label.endswith(("(solver)", "(baseline)")):  # a learner's curve
                    drawn[f"{label}{where} (trained at each value)"] = curve
                    seeds |= set(entry["seeds"])
        out[key] = (drawn, sorted(seeds))
    return out


def _matched_joint(points: list[Point], key: str, shifted: set, seeds: set[int]) -> dict[str, list[tuple]]:
    """The matched curves of a joint shift (``scenario.num_aps_x_num_users``): per learner, the test ratio
    of its runs in the shifted points' scenarios and objectives at each joint value they were trained at
    (``15x15``), ``(value, mean, half-width)`` over the seeds; their numbers of seeds join ``seeds``."""
    from mimo_l2o.shifts import joint_keys, value_text

    keys = joint_keys(key)
    ratios: dict = defaultdict(lambda: defaultdict(list))
    for point in points:
        if (point["scenario"], point["objective"]) not in shifted:
            continue
        for row in point.rows:
            trained = [_number(row.params.get(k)) for k in keys]
            if not any(math.isnan(v) for v in trained):
                ratios[point["learner"]][value_text(trained)].append(row["objective_ratio"])
    curves = {}
    for learner, by_value in ratios.items():
        if len(by_value) > 1:  # one trained setting is no curve
            curves[f"{learner} (trained at each value)"] = [
                (value, *interval(r)[:2]) for value, r in by_value.items()
            ]
            seeds |= {len(r) for r in by_value.values()}
    return curves


def shift_figures(points: list[Point], out: Path) -> list[str]:
    """``shift_<key>.png`` per shifted key: the ratio against the key, the curves of :func:`shift_curves`
    (each point trained once and tested at each value, and the matched curves of the runs trained at
    each value) with their 95 % intervals as error bars; an older report's shift figures are removed.
    Returns the files written."""
    from mimo_l2o.figures import close, shift_figure
    from mimo_l2o.shifts import TEXT_JOIN

    for old in out.glob("shift_*.png"):
        old.unlink()
    written = []
    for key, (drawn, seeds) in sorted(shift_curves(points).items()):
        spread = _spread(seeds, "\n")
        trained = (
            "trained once or at each value"
            if any(k.endswith("each value)") for k in drawn)
            else "trained once"
        )
        label = key.replace(TEXT_JOIN, " x ")  # keys shifted together: scenario.num_aps x num_users
        fig = shift_figure(drawn, label, f"{trained},\ntested at each {label}{spread}")
        fig.savefig(out / f"shift_{key}.png")
        close(fig)
        written.append(f"shift_{key}.png")
    return written


def _range(counts: list[int]) -> str:
    return str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"


def _spread(seeds: list[int], lead: str) -> str:
    """A title's note of the intervals over ``seeds`` (the points' numbers of seeds), after ``lead``;
    nothing when every point has one seed."""
    return "" if seeds == [1] else f"{lead}mean ± 95 % CI over {_range(seeds)} seeds"


def _distinct_seeds(points: list[Point]) -> list[Row]:
    """One run per problem setting and data seed among ``points``' runs: the solver's and baselines'
    values, which every learner of a setting shares, counted once per test set."""
    runs = {}
    for point in points:
        for row in point.rows:
            runs.setdefault((tuple(sorted(point.problem.items())), row.params.get("scenario.seed")), row)
    return list(runs.values())


def cdf_panels(points: list[Point]) -> dict[str, dict[str, np.ndarray]]:
    """The CDF panels: for each problem setting (a matrix column) the per-sample test objectives of each
    learner setting, of the solver (``<solver> (solver)``) and of each baseline (``<name> (baseline)``)
    on the same test sets, pooled over the seeds (the solver's and baselines' once per test set)."""
    panels = defaultdict(list)
    for point in points:
        if all(row.per_sample for row in point.rows):
            panels[point.column].append(point)
    out = {}
    order = cells(points, [])[1]  # the matrix's columns' order: scenario, then the axes as numbers
    for column, members in sorted(panels.items(), key=lambda item: order.index(item[0])):
        curves = {p.learner_label: np.concatenate([r.per_sample["learner"] for r in p.rows]) for p in members}
        shared = _distinct_seeds(members)
        names = dict.fromkeys(name for r in shared for name in r.per_sample if name != "learner")
        for name in names:  # a baseline only some runs logged: pooled over those
            label = f"{members[0]['solver']} (solver)" if name == "solver" else f"{name} (baseline)"
            curves[label] = np.concatenate([r.per_sample[name] for r in shared if name in r.per_sample])
        out[column] = curves
    return out


def cdf_figures(points: list[Point], path: Path) -> bool:
    """``cdf_objective.png``: a panel per :func:`cdf_panels` entry; ``False`` (and no file) when no run
    logged its per-sample objectives."""
    from mimo_l2o import registry
    from mimo_l2o.figures import cdf_figure, close, plt

    registry.load_all()
    panels = cdf_panels(points)
    if not panels:
        path.unlink(missing_ok=True)
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), dpi=110, squeeze=False)
    for ax, (column, curves) in zip(axes[0], panels.items(), strict=True):
        members = [p for p in points if p.column == column]
        first = members[0]
        try:
            label = registry.OBJECTIVES.get(first["objective"]).label
        except Exception:
            label = first["objective"]
        seeds = sorted({len(p.rows) for p in members})
        pooled = "" if seeds == [1] else f" ({_range(seeds)} seeds pooled)"
        cdf_figure(curves, label, f"{column}, {first['precoder']}{pooled}", ax=ax)
    fig.savefig(path)
    close(fig)
    return True


def _tied(points: list[Point], axis_key: str, keys: list[str]) -> list[str]:
    """The ``keys`` that follow ``axis_key`` over ``points``: one value of the key for each value of the
    axis and the other way round (Fig. 4a's ``M = K``, a dBm power and its W, a width that follows the
    antennas). Beyond the axes themselves a key is taken to follow only over three values or more, so
    that two runs of different settings at two points of the axis stay two curves."""
    axis_keys = {k for _, k, _ in AXES}
    out = []
    for key in keys:
        pairs = {(p.setting.get(axis_key), p.setting.get(key)) for p in points if key in p.setting}
        xs, ys = {x for x, _ in pairs}, {y for _, y in pairs}
        if len(pairs) == len(xs) == len(ys) and (key in axis_keys or len(xs) >= 3):
            out.append(key)
    return out


def sweep_series(points: list[Point]) -> dict:
    """The sweep curves: for each ``(scenario, objective, axis)`` whose points take two values or more of
    the axis (:data:`AXES`: K, M, the power, L, P_UL), ``{"objective": curves, "ratio": curves, "tied":
    [...], "seeds": [...]}``, each curve its points ``(axis value, mean, half-width)`` in increasing order
    (the half-width of the 95 % interval over the seeds; NaN for one seed): of the mean test objective,
    and of its ratio to the solver's on the same test sets (a learner's is its ``test/objective_ratio``;
    the solver has none). A learner's curve is labelled by its learner setting and the problem settings
    the points vary besides the axis, the solver's ``<solver> (solver)`` and a baseline's
    ``<name> (baseline)`` by those problem settings; the solver and the baselines count each test set
    once. Where the learner's paper published a ratio for a point, the ratio curves have it as
    ``<learner> (paper)``. A key that follows the axis (:func:`_tied`) is no curve of its own; the axes
    among them are listed under ``"tied"`` (``M`` or ``M = K``). ``"seeds"``: the numbers of seeds of
    the points."""
    groups = defaultdict(list)
    for point in points:
        groups[(point["scenario"], point["objective"])].append(point)
    series = {}
    for (scenario, objective), members in sorted(groups.items()):
        varying = [a for a in AXES if len({_number(p[a[0]]) for p in members} - {math.nan}) > 1]
        done: set[str] = set()
        problem_keys = [k for k in varying_keys([p.problem for p in members]) if k != "scenario.name"]
        for axis, key, _ in varying:
            if key in done:
                continue
            on_axis = [p for p in members if not math.isnan(_number(p[axis]))]
            own_keys = _learner_keys(on_axis)
            tied = _tied(on_axis, key, [k for k in problem_keys if k != key])
            done |= {key, *tied}
            others = [k for k in problem_keys if k != key and k not in tied]
            objective_points = defaultdict(lambda: defaultdict(list))
            ratio_points = defaultdict(lambda: defaultdict(list))
            for point in on_axis:
                x, context = _number(point[axis]), _words(point.setting, others)
                own = _words(point.setting, own_keys[point["learner"]])
                label = " ".join([point["learner_preset"], *own, *context])
                for row in point.rows:
                    objective_points[label][x].append((row["objectives"] or {}).get("learner", math.nan))
                    ratio_points[label][x].append(row["objective_ratio"])
                paper = published_ratio(point["published"])
                if paper is not None:  # the paper's number at this point, once however many settings
                    ratio_points[" ".join([f"{point['learner']} (paper)", *context])][x] = [paper]

            def place(p: Point, axis=axis, others=others):
                return _number(p[axis]), tuple(_words(p.setting, others))

            for point_group in group(on_axis, place):
                x, context = _number(point_group[0][axis]), _words(point_group[0].setting, others)
                solver = f"{point_group[0]['solver']} (solver)"
                for row in _distinct_seeds(point_group):
                    objectives = row["objectives"] or {}
                    for name, value in objectives.items():
                        if name == "learner":
                            continue
                        head = solver if name == "solver" else f"{name} (baseline)"
                        label = " ".join([head, *context])
                        objective_points[label][x].append(value)
                        if name != "solver" and objectives.get("solver"):
                            ratio_points[label][x].append(value / objectives["solver"])
            series[(scenario, objective, axis)] = {
                "objective": _curves(objective_points),
                "ratio": _curves(ratio_points),
                "tied": [
                    f"{a} = {axis}" if all(_number(p[a]) == _number(p[axis]) for p in on_axis) else a
                    for a, k, _ in AXES
                    if k in tied
                ],
                "seeds": sorted({len(p.rows) for p in on_axis}),
            }
    return series


def published_ratio(text: str | None) -> float | None:
    """The ratio to the solver in a paper's number as ``Learner.published`` words it, where it is one:
    ``98.33 % of WMMSE (Table I)`` → 0.9833, ``1.113x SCA (...)`` → 1.113; ``None`` for other numbers (an
    MSE) and none."""
    match = re.match(r"\s*(\d+(?:\.\d+)?)\s*(%|x)\s+(?:of\s+)?[A-Za-z]", text or "")
    if not match:
        return None
    return float(match[1]) / (100.0 if match[2] == "%" else 1.0)


def _curves(points: dict) -> dict[str, list[tuple[float, float, float]]]:
    return {
        label: [(x, *interval(values)[:2]) for x, values in sorted(by_x.items())]
        for label, by_x in points.items()
    }


def sweep_figure(points: list[Point], path: Path) -> bool:
    """``sweep_curves.png``: a column per :func:`sweep_series` entry, the mean objective above and the
    ratio to the solver below, with the 95 % intervals over the seeds as error bars; the learners'
    curves solid, the solver's dashed black, the baselines' dotted, the paper's published ratios
    (:func:`published_ratio`) black stars. ``False`` (and no file) when no axis varies."""
    from matplotlib.ticker import MaxNLocator

    from mimo_l2o import registry
    from mimo_l2o.figures import close, display_name, error_bars, plt

    series = sweep_series(points)
    if not series:
        path.unlink(missing_ok=True)  # an older report's curves do not describe these runs
        return False
    registry.load_all()
    labels = {a: text for a, _, text in AXES}
    fig, axes = plt.subplots(
        2, len(series), figsize=(5.6 * len(series), 8.0), dpi=110, squeeze=False, sharex="col"
    )
    for column, ((scenario, objective, axis), quantities) in enumerate(series.items()):
        try:
            name = registry.OBJECTIVES.get(objective).label
        except Exception:
            name = objective
        for ax, quantity in zip(axes[:, column], ("objective", "ratio"), strict=True):
            for label, curve in quantities[quantity].items():
                x, y, half = (np.asarray(v, dtype=float) for v in zip(*curve, strict=True))
                head, _, rest = label.partition(" ")
                if "(paper)" in label:  # the paper's published ratios: stars, no line
                    style = {"color": "black", "linestyle": "none", "marker": "*", "markersize": 11}
                elif "(solver)" in label:
                    style = {"color": "black", "linestyle": "--", "marker": "s"}
                elif "(baseline)" in label:
                    style = {"linestyle": ":", "marker": "^"}
                else:
                    style = {"linestyle": "-", "marker": "o"}
                shown = " ".join([display_name(head), rest]).strip()
                ax.errorbar(x, y, yerr=error_bars(half), capsize=3, label=shown, **style)
            if quantity == "ratio":
                ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
                ax.set_ylabel("objective ratio (÷ solver)")
                ties = quantities.get("tied") or []
                ax.set_xlabel(labels[axis] + (f" ({', '.join(ties)})" if ties else ""))
            else:
                ax.set_ylabel(f"mean {name}")
                ax.set_title(scenario + _spread(quantities["seeds"], "\n"))
            if axis in ("K", "M", "L"):  # counts: integer ticks
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    close(fig)
    return True


def training_figure(points: list[Point], path: Path) -> bool:
    """``training_curves.png``: per point, the training and validation loss against the epoch (left: a
    validation loss that turns up while the training loss falls is over-training, both still falling
    at the end under-training) and the validation ratio to the solver (right), the mean over the seeds
    with its 95 % interval as a band. ``False`` (and no file) when no run logged its epochs."""
    from mimo_l2o.figures import close, display_name, plt

    drawn = [p for p in points if any(row.history for row in p.rows)]
    if not drawn:
        path.unlink(missing_ok=True)
        return False
    fig, (losses, ratios) = plt.subplots(1, 2, figsize=(12.0, 4.6), dpi=110)
    for index, point in enumerate(drawn):
        color = f"C{index % 10}"
        name = display_name(point.learner_label.split()[0])  # the learner, or its option (x/paper)
        words = [*point.learner_label.split()[1:], *point.column.split()]
        label = " ".join([name, *words]) if len(drawn) > 1 else name
        for key, ax, style in (
            ("train/loss", losses, "-"),
            ("val/loss", losses, "--"),
            ("val/objective_ratio", ratios, "-"),
        ):
            epochs = sorted({e for row in point.rows for e in row.history.get(key, {})})
            if not epochs:
                continue
            stats = [
                interval(row.history.get(key, {}).get(e, math.nan) for row in point.rows) for e in epochs
            ]
            mean = np.asarray([m for m, _, _ in stats])
            half = np.nan_to_num(np.asarray([h for _, h, _ in stats]))
            shown = f"{label} ({key.split('/')[0]})" if ax is losses else label
            ax.plot(epochs, mean, style, color=color, label=shown)
            ax.fill_between(epochs, mean - half, mean + half, color=color, alpha=0.15, linewidth=0)
    seeds = sorted({len(p.rows) for p in drawn})
    spread = _spread(seeds, "; ")
    losses.set_title(f"training (solid) and validation (dashed) loss{spread}", fontsize="medium")
    ratios.set_title("validation objective ratio (÷ solver)", fontsize="medium")
    for ax in (losses, ratios):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if ax.lines:  # runs without a validation ratio leave that panel empty
            ax.legend(fontsize="x-small")
    losses.set_ylabel("loss (the learner's own)")
    fig.tight_layout()
    fig.savefig(path)
    close(fig)
    return True


def replace_block(path: Path, block: str) -> None:
    """Replace the text between the cross-evaluation markers in ``path`` (both must be there)."""
    text = path.read_text()
    if MARK_BEGIN not in text or MARK_END not in text:
        raise SystemExit(f"error: --readme: {path} has no '{MARK_BEGIN}' ... '{MARK_END}' block")
    head, rest = text.split(MARK_BEGIN, 1)
    _, tail = rest.split(MARK_END, 1)
    path.write_text(f"{head}{MARK_BEGIN}\n{block}{MARK_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mimo-l2o report",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument(
        "--sweep", action="append", default=[], metavar="RUN_ID", help="a sweep's parent run (repeatable)"
    )
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="RUN_ID",
        help="a single run, beside the sweeps (repeatable)",
    )
    parser.add_argument(
        "--experiment", help="an MLflow experiment (default mimo_l2o, when no --sweep or --run)"
    )
    parser.add_argument("--out", default="report", help="folder for the report (default ./report)")
    parser.add_argument(
        "--readme", type=Path, help="a markdown file whose cross-evaluation block gets the matrix"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    command = "mimo-l2o report " + " ".join(argv if argv is not None else sys.argv[1:])

    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    rows = write(client, args.sweep, args.experiment, Path(args.out), command, args.readme, args.run)
    if rows is None:
        print(f"error: no finished runs found in {mlflow.get_tracking_uri()}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/report.md, report.csv and figures for {len(rows)} settings")
    return 0


def write(
    client,
    sweeps: list[str],
    experiment: str | None,
    out: Path,
    command: str,
    readme: Path | None = None,
    singles: list[str] = (),
):
    """The report of ``sweeps`` and the single runs ``singles`` (or of ``experiment``'s runs) into
    ``out``, logged to each sweep's parent under ``report/``; ``readme``: a file whose cross-evaluation
    block gets the matrix. Returns the points, or ``None`` when there is nothing to report."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    runs, skipped = select(client, sweeps, experiment, singles)
    if not runs and not skipped:
        return None
    points = points_of([row_of(run, client, with_samples=True) for run in runs])
    rows = [row for point in points for row in point.rows]  # without the runs a rerun replaced
    out.mkdir(parents=True, exist_ok=True)
    header = stamp(rows, command, points)
    title = "Cross-evaluation" if is_cross_evaluation(points) else "Objective ratio by setting"
    (out / "report.md").write_text(
        f"# {title}\n\n"
        + matrix_markdown(points, skipped)
        + "\n"
        + markdown(points, skipped, header)
        + baselines_markdown(points)
        + shifts_markdown(points)
    )
    (out / "report.csv").write_text(csv_text(points))
    heatmap(points, skipped, out / "ratio_heatmap.png")
    cdf_figures(points, out / "cdf_objective.png")
    sweep_figure(points, out / "sweep_curves.png")
    training_figure(points, out / "training_curves.png")
    shift_figures(points, out)
    from mimo_l2o.tracking import store_lock

    for parent in sweeps:
        with store_lock():
            client.log_artifacts(parent, str(out), "report")
    if readme:
        replace_block(readme, f"{header}\n\n{matrix_markdown(points, skipped)}")
    return points


if __name__ == "__main__":
    sys.exit(main())
