"""Sweeps (``python -m mimo_l2o -m ...``): one parent MLflow run per multirun, every job's run its
child, and every job checked before the first starts.

:class:`SweepCallback` is Hydra's callback (``hydra.callbacks.mlflow_sweep`` in ``conf/config.yaml``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mimo_l2o.errors import short
from mimo_l2o.jobs import unwind_on_sigterm
from mimo_l2o.tracking import (
    MAX_RUN_NAME,
    PARENT_RUN_FILE,
    SWEPT_KEYS_FILE,
    check_tracking,
    close_open_parent,
    open_parent,
    open_parent_id,
)

log = logging.getLogger(__name__)


def _sweep_overrides(config: DictConfig) -> list:
    """The sweep's command-line overrides, parsed (with the config loader, which expands ``glob``)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    return parser.parse_overrides(list(config.hydra.overrides.task))


class SweepCallback(Callback):
    """Opens one parent MLflow run for a multirun; every job's run is its child.

    Before anything starts it composes and validates every job of a basic sweep, so a bad value
    anywhere in the sweep fails at once with one line and no run is created.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import sys

        from mimo_l2o.config import validate
        from mimo_l2o.errors import Incompatible, one_line
        from mimo_l2o.parts import build_parts
        from mimo_l2o.preflight import preflight

        # Hydra turns a callback's exceptions into warnings and goes on, so bad input anywhere in
        # the sweep leaves here through SystemExit, before any job or run starts. An incompatible
        # combination is no bad input: that job is skipped, with its reason, when it comes.
        try:
            overrides = _sweep_overrides(config)
            for job_cfg in _sweep_job_configs(config, overrides):
                run = validate(job_cfg)
                try:
                    preflight(run, build_parts(run), tracking=False)
                except Incompatible:
                    continue
            check_tracking(config.tracking.experiment)
        except Exception as err:
            message = one_line(err)
            if message is None:
                raise
            print(f"error: {short(message)}", file=sys.stderr)
            raise SystemExit(2) from None
        sweep_dir = Path(config.hydra.sweep.dir)
        tags = {
            "sweep_dir": str(sweep_dir),
            "paper": config.get("paper"),
            "overrides": _task_overrides(config),
        }
        tags = {k: str(v) for k, v in tags.items() if v is not None}
        name = f"sweep {tags.get('overrides') or sweep_dir.name}"
        run_id = open_parent(config.tracking.experiment, short(name, MAX_RUN_NAME, word=MAX_RUN_NAME), tags)
        unwind_on_sigterm()  # a terminated launcher closes its parent and children as KILLED
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_RUN_FILE).write_text(run_id)
        # the keys that take several values (a=1,2, range, glob), for the names of the runs
        swept = [o.key_or_group for o in overrides if o.is_sweep_override()]
        (sweep_dir / SWEPT_KEYS_FILE).write_text(json.dumps(swept))
        log.info("MLflow sweep parent run %s", run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        parent = open_parent_id()
        if parent:
            try:
                print(summarize(parent, Path(config.hydra.sweep.dir)), flush=True)
            except Exception as error:  # the sweep's runs are recorded; its summary is a convenience
                log.warning("could not summarize the sweep: %s", error)
        close_open_parent("FINISHED")


def summarize(parent_id: str, sweep_dir: Path) -> str:
    """The sweep's table of runs (name, status, ratio, time per sample, speed-up) and, where a setting
    ran on several seeds (``-m seed=0,1,2``), of its points (mean ± 95 % interval): returned for the
    console and logged to the parent as ``summary.md``, with the counts, the best and mean ratio and
    each repeated point's ``point/<setting>/objective_ratio_mean``, ``_ci95`` and ``seeds`` as the
    parent's metrics and the report of ``mimo-l2o report`` under ``report/``. The console's text ends
    with where everything is: the parent run's id and address, the report folder and the command that
    writes it again; its first line counts the finished, failed and skipped jobs."""
    import mlflow

    from mimo_l2o import report
    from mimo_l2o.tracking import SKIPPED_DIR, run_address, store_lock

    client = mlflow.MlflowClient()
    experiment = client.get_run(parent_id).info.experiment_id
    children = client.search_runs(
        [experiment],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        order_by=["attributes.start_time"],
    )
    header = "| run | status | test/objective_ratio | learner ms/sample | speed-up |"
    lines = [header, "| --- | --- | --- | --- | --- |"]
    ratios = []
    for child in children:
        m = child.data.metrics
        ratio = m.get("test/objective_ratio")
        if ratio is not None and child.info.status == "FINISHED":
            ratios.append(ratio)

        def cell(key: str, fmt: str, m=m) -> str:
            return format(m[key], fmt) if key in m else "—"

        lines.append(
            f"| {child.info.run_name} | {child.info.status} | {cell('test/objective_ratio', '.4f')} "
            f"| {cell('test/time_learner_ms', '.3g')} | {cell('test/speedup', '.3g')} |"
        )
    table = "\n".join(lines)
    metrics = {
        "sweep/runs": len(children),
        "sweep/runs_finished": sum(c.info.status == "FINISHED" for c in children),
    }
    if ratios:
        metrics.update(
            {
                "sweep/best_objective_ratio": max(ratios),
                "sweep/mean_objective_ratio": sum(ratios) / len(ratios),
            }
        )

    def log(table: str, metrics: dict[str, float]) -> None:
        with store_lock():
            client.log_text(parent_id, f"# Sweep {sweep_dir.name}\n\n{table}\n", "summary.md")
            for key, value in metrics.items():
                client.log_metric(parent_id, key, value)

    log(table, metrics)  # before the report, so that a report that fails loses neither
    failed = sum(c.info.status in ("FAILED", "KILLED") for c in children)
    skipped = len(client.list_artifacts(parent_id, SKIPPED_DIR))
    finished = (
        f"sweep {sweep_dir.name}: {metrics['sweep/runs_finished']} of {len(children)} runs finished, "
        f"{failed} failed, {skipped} {'job' if skipped == 1 else 'jobs'} skipped"
    )
    command = f"mimo-l2o report --sweep {parent_id}"
    where = [
        f"parent run  {parent_id}",
        f"MLflow      {run_address(parent_id)}",
    ]
    if not ratios:
        where.append("report      none (no run finished with a ratio)")
        return "\n".join([finished, table, "", *where])
    folder = sweep_dir / "report"
    where += [f"report      {folder}/ (logged to the parent run under report/)", f"again       {command}"]
    points = report.write(client, [parent_id], None, folder, command) or []
    repeated = [p for p in points if p["seeds"] > 1]
    if repeated:  # the sweep's points of several seeds: mean, interval, seeds
        lines = ["", "| setting | seeds | test/objective_ratio (mean ± 95 % CI) |", "| --- | --- | --- |"]
        point_metrics = {}
        for point in repeated:
            mean, half, n = point.stat("objective_ratio")
            lines.append(f"| {point.name} | {n} | {mean:.4f} ± {half:.2g} |")
            name = point_metric(point.name)
            point_metrics.update({f"{name}/objective_ratio_mean": mean, f"{name}/seeds": n})
            if not math.isnan(half):
                point_metrics[f"{name}/objective_ratio_ci95"] = half
        table += "\n".join(lines)
        log(table, point_metrics)  # the summary again, with its points
    return "\n".join([finished, table, "", *where])


def point_metric(label: str) -> str:
    """``point/<label>``, a metric name of a point's label: MLflow allows no ``=`` (written ``:``), and
    other characters beyond letters, digits, ``_ - . :`` and spaces become ``_`` (``/`` too: the label
    is one level of the name)."""
    import hashlib
    import re

    name = re.sub(r"[^\w\-. :]", "_", label.replace("=", ":"))  # no '/': a point is one level
    if len(name) > 160:  # MLflow's names end at 250 characters: a long label keeps its start and a digest
        name = f"{name[:150]} {hashlib.sha256(label.encode()).hexdigest()[:8]}"
    return f"point/{name}"


def _task_overrides(config: DictConfig) -> str:
    try:
        return " ".join(config.hydra.overrides.task)
    except Exception:
        return ""


def _sweep_job_configs(config: DictConfig, overrides: list) -> list[DictConfig]:
    """Each job's composed config for Hydra's basic sweeper (none for other sweepers), from the sweep's
    parsed ``overrides`` (:func:`_sweep_overrides`)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra

    if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
        return []
    loader = GlobalHydra.instance().config_loader()
    batches = BasicSweeper.split_arguments(overrides, None)
    return [loader.load_sweep_config(config, list(job)) for batch in batches for job in batch]
