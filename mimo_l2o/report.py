"""``mimo-l2o report`` (also ``python -m mimo_l2o.report``): the comparison of finished runs.

Reads the MLflow store (the default ``sqlite:///mlflow.db`` or ``MLFLOW_TRACKING_URI``): the runs of one
or more sweeps (``--sweep <parent run id>``, repeatable) and single runs (``--run <run id>``, repeatable),
or of an experiment (``--experiment``, default ``mimo_l2o``), and writes into ``--out``:

* ``report.md`` and ``report.csv``: a row per run (paper, learner, scenario, precoder, objective, K, M,
  p_max, the uplink pilots L; ``test/objective_ratio``, the best heuristic baseline's ratio, the
  learner's time per sample, the speed-up, the constraint violation, the MSE of SEs, epochs, wall
  time) and, where the learner's
  paper published a number for that setting, that number (``Learner.published``); the pairs a sweep
  skipped, with their reasons;
* ``ratio_heatmap.png``: learner × scenario, ``test/objective_ratio`` (the mean where several runs share a
  cell), skipped pairs marked;
* ``cdf_objective.png``: per scenario and objective, the CDF of the per-sample test objective of every
  selected run's learner and of the solver;
* ``sweep_curves.png``, where the runs of a scenario and objective differ in K, M, p_max or L (a sweep such
  as ``-m scenario.num_users=2,4,8``): the mean test objective against that axis, one curve per learner
  (and per setting the runs' names add), the solver's and every baseline's beside them, as the papers
  draw their sum rate against the number of users (Zhang et al. 2022, Fig. 4a), and below it each
  curve's ratio to the solver. Other axes the runs vary too go into the curves' labels.

With ``--sweep``, the files are also logged as artifacts of each sweep's parent run (``report/``), so the
MLflow UI shows the comparison; ``--readme FILE`` replaces the block between ``<!-- cross-evaluation -->``
and ``<!-- /cross-evaluation -->`` in FILE with the learner × scenario matrix. Every output is stamped
with the commits and machines of its runs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

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


@dataclass
class Row:
    """One finished run, as the report shows it."""

    values: dict[str, object]
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, key: str):
        return self.values.get(key)


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
        "run": run_label(run, client),
        "scenario": tags.get("scenario", ""),
        "precoder": tags.get("precoder", ""),
        "objective": tags.get("objective", ""),
        "solver": tags.get("solver", ""),
        "K": params.get("scenario.num_users", ""),
        "M": params.get("scenario.num_antennas", ""),
        "p_max": params.get("scenario.p_max", ""),
        # uplink pilot symbols (beamforming scenarios; empty or None: perfect uplink CSI)
        "L": params.get("scenario.pilot_length", ""),
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
        "time_learner_ms": metrics.get("test/time_learner_ms", math.nan),
        "speedup": metrics.get("test/speedup", math.nan),
        "constraint_violation": metrics.get("test/constraint_violation", math.nan),
        "mse_se": metrics.get("test/mse_se", math.nan),
        "epochs": metrics.get("train/epochs", math.nan),
        # the training loop's own time (Zhang et al.'s Table I), without labelling and evaluation
        "train_time_s": metrics.get("train/train_time_s", math.nan),
        "wall_time_s": (end - run.info.start_time) / 1000,
        "published": _published(tags.get("learner", ""), params),
        # eval.shifts: {key: [(value, ratio), ...]} and the points not applicable
        "shifts": shifts_of(metrics),
        "shifts_not_applicable": int(metrics.get("test/shift/not_applicable", 0)),
        "run_id": run.info.run_id,
        "commit": tags.get("mimo_l2o.commit", ""),
        "machine": tags.get("mimo_l2o.machine", ""),
    }
    row = Row(values)
    if with_samples:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(run.info.run_id, PER_SAMPLE_ARTIFACT, tmp)
                data = np.genfromtxt(path, delimiter=",", names=True)
            row.per_sample = {name: np.asarray(data[name], dtype=float) for name in data.dtype.names}
        except Exception:  # an older run without the artifact: no CDF curve
            row.per_sample = {}
    return row


def shifts_of(metrics: dict[str, float]) -> dict[str, list[tuple[str, float]]]:
    """A run's generalization shifts (``test/shift/<key>/<value>/objective_ratio``) as ``{key: [(value,
    ratio), ...]}``, sorted by the value."""
    from mimo_l2o.shifts import shift_points

    return {k: sorted(v, key=lambda p: _number(p[0])) for k, v in shift_points(metrics).items()}


def shifts_markdown(rows: list[Row]) -> str:
    """The shifts section of the report: per shifted key, a row per run with its ratio at each value."""
    keys = sorted({k for row in rows for k in (row["shifts"] or {})})
    if not keys:
        return ""
    lines = ["", "## Generalization shifts (eval.shifts: trained once, tested at each value)", ""]
    for key in keys:
        values = sorted({v for row in rows for v, _ in (row["shifts"] or {}).get(key, [])}, key=_number)
        lines += [f"`{key}`:", "", "| run | " + " | ".join(values) + " |"]
        lines.append("| --- |" + " --- |" * len(values))
        for row in rows:
            points = dict((row["shifts"] or {}).get(key, []))
            if points:
                lines.append(
                    f"| {row['run']} | " + " | ".join(_fmt(points.get(v, "")) for v in values) + " |"
                )
        lines.append("")
    if any(row["shifts_not_applicable"] for row in rows):
        lines.append(
            "Points a learner could not read are left blank (their reasons: each run's shifts.json)."
        )
    return "\n".join(lines) + "\n"


def shift_figures(rows: list[Row], out: Path) -> list[str]:
    """``shift_<key>.png`` per shifted key: the ratio against the key, one curve per run (Ma et al. 2022,
    Fig. 7's mismatch curves); an older report's shift figures are removed. Returns the files written."""
    from mimo_l2o.figures import close, shift_figure

    for old in out.glob("shift_*.png"):
        old.unlink()
    written = []
    for key in sorted({k for row in rows for k in (row["shifts"] or {})}):
        curves = {
            row["run"]: [(_number(v), r) for v, r in row["shifts"][key]]
            for row in rows
            if (row["shifts"] or {}).get(key)
        }
        fig = shift_figure(curves, key, f"trained once, tested at each {key}")
        fig.savefig(out / f"shift_{key}.png")
        close(fig)
        written.append(f"shift_{key}.png")
    return written


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


def _order(rows: list[Row]) -> list[Row]:
    def key(row: Row):
        scenario = row["scenario"]
        position = SCENARIO_ORDER.index(scenario) if scenario in SCENARIO_ORDER else len(SCENARIO_ORDER)
        return (position, scenario, row["learner"], str(row["K"]), str(row["p_max"]))

    return sorted(rows, key=key)


def _fmt(value, digits: int = 4) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.{digits}g}"
    return str(value)


def stamp(rows: list[Row], command: str) -> str:
    """Where the numbers come from: the command, the time, the runs' commits and machines."""
    commits = sorted({r["commit"] for r in rows if r["commit"]}) or ["unknown"]
    machines = sorted({r["machine"] for r in rows if r["machine"]}) or ["unknown"]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Generated by `{command}` on {when} from {len(rows)} runs; "
        f"commit {', '.join(commits)}; machine {'; '.join(machines)}."
    )


def markdown(rows: list[Row], skipped: list[dict], header: str) -> str:
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
    lines = [header, "", "| " + " | ".join(titles.get(c, c) for c in shown) + " |"]
    lines.append("| " + " | ".join("---" for _ in shown) + " |")
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]) for c in shown) + " |")
    if skipped:
        lines += ["", "Skipped pairs:", "", "| learner | scenario | reason |", "| --- | --- | --- |"]
        for job in sorted(skipped, key=lambda j: (j["scenario"], j["learner"])):
            lines.append(f"| {job['learner']} | {job['scenario']} | {job['reason']} |")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*COLUMNS, "commit", "machine"])
    for row in rows:
        writer.writerow([row[c] for c in (*COLUMNS, "commit", "machine")])
    return out.getvalue()


def cells(rows: list[Row], skipped: list[dict]):
    """``(learners, scenarios, mean ratio, runs, best baseline ratio, reasons)`` of the learner × scenario
    matrix."""
    ratio, baseline, count = defaultdict(list), defaultdict(list), defaultdict(int)
    for row in rows:
        key = (row["learner"], row["scenario"])
        ratio[key].append(row["objective_ratio"])
        baseline[key].append(row["best_baseline_ratio"])
        count[key] += 1
    reasons = {(j["learner"], j["scenario"]): j["reason"] for j in skipped}
    keys = set(ratio) | set(reasons)
    learners = sorted({k[0] for k in keys})
    present = {k[1] for k in keys}
    scenarios = [s for s in SCENARIO_ORDER if s in present] + sorted(present - set(SCENARIO_ORDER))
    mean = {k: float(np.mean(v)) for k, v in ratio.items()}
    best = {
        k: float(np.nanmax(v)) if not all(math.isnan(x) for x in v) else math.nan for k, v in baseline.items()
    }
    return learners, scenarios, mean, count, best, reasons


def matrix_markdown(rows: list[Row], skipped: list[dict]) -> str:
    """The learner × scenario matrix of ``test/objective_ratio`` (with the best baseline's ratio where the
    learner does not beat it), the pairs a sweep skipped marked, their reasons below the table."""
    learners, scenarios, mean, count, best, reasons = cells(rows, skipped)
    lines = ["| learner ↓ scenario → | " + " | ".join(scenarios) + " |"]
    lines.append("| --- | " + " | ".join("---" for _ in scenarios) + " |")
    notes: list[str] = []
    for learner in learners:
        out = []
        for scenario in scenarios:
            key = (learner, scenario)
            if key in mean:
                text = f"{mean[key]:.3f}"
                if count[key] > 1:
                    text += f" (mean of {count[key]})"
                if not math.isnan(best[key]) and mean[key] <= best[key]:
                    text += f", not above the best baseline's {best[key]:.3f}"
                out.append(text)
            elif key in reasons:
                if reasons[key] not in notes:
                    notes.append(reasons[key])
                out.append(f"refuses ({notes.index(reasons[key]) + 1})")
            else:
                out.append("not run")
        lines.append(f"| {learner} | " + " | ".join(out) + " |")
    if notes:
        lines.append("")
        lines += [f"({i}) {note}  " for i, note in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


def heatmap(rows: list[Row], skipped: list[dict], path: Path) -> None:
    from mimo_l2o.figures import close, plt

    learners, scenarios, mean, _, _, reasons = cells(rows, skipped)
    grid = np.full((len(learners), len(scenarios)), np.nan)
    for (learner, scenario), value in mean.items():
        grid[learners.index(learner), scenarios.index(scenario)] = value
    fig, ax = plt.subplots(figsize=(3.6 + 1.4 * len(scenarios), 1.4 + 0.6 * len(learners)), dpi=110)
    image = ax.imshow(
        grid, cmap="viridis", vmin=min(0.5, np.nanmin(grid) if np.isfinite(grid).any() else 0.5), vmax=1.0
    )
    for i, learner in enumerate(learners):
        for j, scenario in enumerate(scenarios):
            value = grid[i, j]
            text = (
                f"{value:.3f}"
                if np.isfinite(value)
                else ("refuses" if (learner, scenario) in reasons else "")
            )
            color = "black" if np.isfinite(value) and value > 0.8 else "white"
            ax.text(j, i, text, ha="center", va="center", color=color if np.isfinite(value) else "gray")
    ax.set_xticks(range(len(scenarios)), scenarios)
    ax.set_yticks(range(len(learners)), learners)
    ax.set_title("objective ratio (learner ÷ solver)", fontsize="medium")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path)
    close(fig)


def cdf_figures(rows: list[Row], path: Path) -> bool:
    """One panel per (scenario, objective): the per-sample CDF of every run's learner and the solver."""
    from mimo_l2o import registry
    from mimo_l2o.figures import cdf_figure, close, plt

    registry.load_all()
    groups = defaultdict(list)
    for row in rows:
        if row.per_sample:
            groups[(row["scenario"], row["objective"])].append(row)
    if not groups:
        return False
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.2), dpi=110, squeeze=False)
    for ax, ((scenario, objective), members) in zip(axes[0], sorted(groups.items()), strict=True):
        curves = {}
        for row in members:
            label = (
                row["learner"]
                if sum(r["learner"] == row["learner"] for r in members) == 1
                else (f"{row['learner']} K={row['K']} p_max={row['p_max']}")
            )
            curves[label] = row.per_sample["learner"]
        first = members[0]
        curves[f"{first['solver']} (solver)"] = first.per_sample["solver"]
        for name, values in first.per_sample.items():
            if name not in ("learner", "solver"):
                curves[f"{name} (baseline)"] = values
        try:
            label = registry.OBJECTIVES.get(objective).label
        except Exception:
            label = objective
        cdf_figure(curves, label, f"{scenario}, {first['precoder']}", ax=ax)
    fig.savefig(path)
    close(fig)
    return True


AXES = (  # the report's column, the config key that sets it, the axis' label
    ("K", "scenario.num_users", "users K"),
    ("M", "scenario.num_antennas", "antennas M"),
    ("p_max", "scenario.p_max", "power budget p_max"),
    ("L", "scenario.pilot_length", "uplink pilot symbols L"),
)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def sweep_series(
    rows: list[Row],
) -> dict[tuple[str, str, str], dict[str, dict[str, list[tuple[float, float]]]]]:
    """The sweep curves: for each ``(scenario, objective, axis)`` whose runs take two values or more of the
    axis (K, M or p_max), ``{"objective": curves, "ratio": curves}``, each curve its points ``(axis value,
    mean)`` in increasing order: of the mean test objective, and of its ratio to the solver's on the same
    test set (a learner's is its ``test/objective_ratio``; the solver has none). A learner's curve is
    labelled by the learner and the settings the run's name adds (without the axis' own key, and without
    the settings every run of the scenario shares), the solver's ``<solver> (solver)``, a baseline's
    ``<name> (baseline)``; the values of other axes that vary too join the label (``M=64``). An axis tied
    to an earlier one (one value of it for each value of the other, as Fig. 4a's ``M = K``) is no axis of
    its own: it is listed under ``"tied"`` of the earlier one's entry (``M`` or ``M = K``), and stays out of
    the labels. Runs on one point and curve are averaged."""
    groups = defaultdict(list)
    for row in rows:
        groups[(row["scenario"], row["objective"])].append(row)
    series = {}
    for (scenario, objective), members in sorted(groups.items()):
        varying = [a for a in AXES if len({_number(r[a[0]]) for r in members} - {math.nan}) > 1]
        tied = _tied_axes(members, [a for a, _, _ in varying])
        keys = {a: k for a, k, _ in varying}
        shared = set.intersection(*(set(str(r["run"]).split()[1:]) for r in members))
        for axis, key, _ in varying:
            if any(axis in followers for followers in tied.values()):
                continue
            points = {q: defaultdict(lambda: defaultdict(list)) for q in ("objective", "ratio")}
            for row in members:
                x, objectives = _number(row[axis]), row["objectives"] or {}
                if math.isnan(x):
                    continue
                others = [f"{a}={row[a]}" for a, _, _ in varying if a != axis and a not in tied[axis]]
                own = {key, *(keys[a] for a in tied[axis])}
                words = [
                    w
                    for w in str(row["run"]).split()[1:]
                    if w.split("=", 1)[0] not in own and w not in shared
                ]
                for name, value in objectives.items():
                    if name == "learner":
                        label = " ".join([row["learner"], *words, *others])
                    elif name == "solver":
                        label = " ".join([f"{row['solver']} (solver)", *others])
                    else:
                        label = " ".join([f"{name} (baseline)", *others])
                    points["objective"][label][x].append(value)
                    if name != "solver" and objectives.get("solver"):
                        points["ratio"][label][x].append(value / objectives["solver"])
            series[(scenario, objective, axis)] = {
                quantity: {
                    label: [(x, float(np.mean(values))) for x, values in sorted(by_x.items())]
                    for label, by_x in curves.items()
                }
                for quantity, curves in points.items()
            }
            series[(scenario, objective, axis)]["tied"] = [
                f"{a} = {axis}"
                if all(_number(r[a]) == _number(r[axis]) for r in members if not math.isnan(_number(r[axis])))
                else a
                for a in tied[axis]
            ]
    return series


def _tied_axes(rows: list[Row], axes: list[str]) -> dict[str, list[str]]:
    """For each axis, the later axes that are a one-to-one function of it over ``rows``."""
    tied: dict[str, list[str]] = {a: [] for a in axes}
    for i, a in enumerate(axes):
        for b in axes[i + 1 :]:
            pairs = {(_number(r[a]), _number(r[b])) for r in rows}
            if len(pairs) == len({x for x, _ in pairs}) == len({y for _, y in pairs}):
                tied[a].append(b)
    return tied


def sweep_figure(rows: list[Row], path: Path) -> bool:
    """``sweep_curves.png``: a column per :func:`sweep_series` entry, the mean objective above and the
    ratio to the solver below; the learners' curves solid, the solver's dashed black, the baselines'
    dotted. ``False`` (and no file) when no axis varies."""
    from matplotlib.ticker import MaxNLocator

    from mimo_l2o import registry
    from mimo_l2o.figures import close, display_name, plt

    series = sweep_series(rows)
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
            for label, points in quantities[quantity].items():
                x, y = zip(*points, strict=True)
                head, _, rest = label.partition(" ")
                if "(solver)" in label:
                    style = {"color": "black", "linestyle": "--", "marker": "s"}
                elif "(baseline)" in label:
                    style = {"linestyle": ":", "marker": "^"}
                else:
                    style = {"linestyle": "-", "marker": "o"}
                ax.plot(x, y, label=" ".join([display_name(head), rest]).strip(), **style)
            if quantity == "ratio":
                ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
                ax.set_ylabel("objective ratio (÷ solver)")
                ties = quantities.get("tied") or []
                ax.set_xlabel(labels[axis] + (f" ({', '.join(ties)})" if ties else ""))
            else:
                ax.set_ylabel(f"mean {name}")
                ax.set_title(scenario)
            if axis in ("K", "M"):  # counts: integer ticks
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
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
    print(f"wrote {args.out}/report.md, report.csv and figures for {len(rows)} runs")
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
    block gets the matrix. Returns the rows, or ``None`` when there is nothing to report."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    runs, skipped = select(client, sweeps, experiment, singles)
    if not runs and not skipped:
        return None
    rows = _order([row_of(run, client, with_samples=True) for run in runs])
    out.mkdir(parents=True, exist_ok=True)
    header = stamp(rows, command)
    (out / "report.md").write_text(
        "# Cross-evaluation\n\n"
        + matrix_markdown(rows, skipped)
        + "\n"
        + markdown(rows, skipped, header)
        + shifts_markdown(rows)
    )
    (out / "report.csv").write_text(csv_text(rows))
    heatmap(rows, skipped, out / "ratio_heatmap.png")
    cdf_figures(rows, out / "cdf_objective.png")
    sweep_figure(rows, out / "sweep_curves.png")
    shift_figures(rows, out)
    from mimo_l2o.tracking import store_lock

    for parent in sweeps:
        with store_lock():
            client.log_artifacts(parent, str(out), "report")
    if readme:
        replace_block(readme, f"{header}\n\n{matrix_markdown(rows, skipped)}")
    return rows


if __name__ == "__main__":
    sys.exit(main())
