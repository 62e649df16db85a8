"""MLflow: one run per job, sweeps nested under one parent run.

The store is MLflow's default (``sqlite:///mlflow.db`` in the working directory) unless
``MLFLOW_TRACKING_URI`` names another. Parallel jobs (``hydra/launcher=joblib``) write to the
same SQLite file, so every write to a SQLite store holds a file lock beside it: the first
creation of the store (its schema migrations) and concurrent inserts never collide, and no run
is lost. A run that raises ends as FAILED with the reason; it is never left RUNNING.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger(__name__)

PARENT_RUN_FILE = "mlflow_parent_run_id"
SWEPT_KEYS_FILE = "swept_keys.json"  # the keys a sweep varies, for the names of its runs
MAX_PARAM_LENGTH = 6000

# The sweep's parent run while this process holds it open, so that a sweep that raises can
# still close it as FAILED (``mimo_l2o.__main__``).
_open_parent: dict[str, str] = {}


def _mlflow():
    import mlflow  # imported lazily: ~1 s, and not needed to compose configs or to fail on bad input

    return mlflow


@contextlib.contextmanager
def store_lock() -> Iterator[None]:
    """Serialise writes when the tracking store is a local SQLite file."""
    uri = _mlflow().get_tracking_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        with FileLock(str(db) + ".lock"):
            yield
    else:
        yield


def _experiment_id(name: str) -> str:
    mlflow = _mlflow()
    with store_lock():
        experiment = mlflow.get_experiment_by_name(name)
        return experiment.experiment_id if experiment else mlflow.create_experiment(name)


class Tracker:
    """One MLflow run; use as a context manager (FINISHED on success, FAILED on an exception).

    Parameters
    ----------
    experiment : str
        MLflow experiment name.
    run_name : str
        Display name of the run.
    tags : dict[str, str]
        Tags (paper, learner, scenario, sweep id, ...).
    parent_run_id : str, optional
        The sweep's parent run.
    """

    def __init__(
        self, experiment: str, run_name: str, tags: dict[str, str], parent_run_id: str | None = None
    ):
        self.experiment = experiment
        self.run_name = run_name
        self.tags = tags
        self.parent_run_id = parent_run_id
        self.run_id: str | None = None

    def __enter__(self) -> Tracker:
        mlflow = _mlflow()
        experiment_id = _experiment_id(self.experiment)
        with store_lock():
            run = mlflow.MlflowClient().create_run(
                experiment_id, run_name=self.run_name, tags=self._all_tags()
            )
        self.run_id = run.info.run_id
        log.info("MLflow run %s (%s) in %s", self.run_id, self.run_name, mlflow.get_tracking_uri())
        return self

    def _all_tags(self) -> dict[str, str]:
        tags = {k: str(v) for k, v in self.tags.items() if v is not None}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        return tags

    def __exit__(self, exc_type, exc, tb) -> bool:
        client = _mlflow().MlflowClient()
        with store_lock():
            if exc is None:
                client.set_terminated(self.run_id, "FINISHED")
            else:
                reason = f"{exc_type.__name__}: {exc}"[:MAX_PARAM_LENGTH]
                client.set_tag(self.run_id, "failure_reason", reason)
                client.set_terminated(self.run_id, "KILLED" if exc_type is KeyboardInterrupt else "FAILED")
        return False

    # ---- logging ---------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        client = _mlflow().MlflowClient()
        for start in range(0, len(items), 100):
            with store_lock():
                client.log_batch(self.run_id, params=items[start : start + 100], synchronous=True)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        client = _mlflow().MlflowClient()
        for start in range(0, len(items), 500):
            with store_lock():
                client.log_batch(self.run_id, metrics=items[start : start + 500], synchronous=True)

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        client = _mlflow().MlflowClient()
        with store_lock():
            client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)

    def log_figure(self, figure, artifact_file: str) -> None:
        with store_lock():
            _mlflow().MlflowClient().log_figure(self.run_id, figure, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        with store_lock():
            _mlflow().MlflowClient().log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: dict, artifact_file: str) -> None:
        with store_lock():
            _mlflow().MlflowClient().log_dict(self.run_id, data, artifact_file)

    def log_model(self, model, input_example, pip_requirements: list[str], export: bool = True) -> str:
        """Log a torch module with ``mlflow.pytorch`` under ``name="model"``; returns its URI. ``export``:
        as an exported graph (``pt2``, MLflow's default), else by pickle (a module whose forward is no
        static graph)."""
        mlflow = _mlflow()
        with store_lock():
            with mlflow.start_run(run_id=self.run_id):
                info = mlflow.pytorch.log_model(
                    model,
                    name="model",
                    input_example=input_example,
                    pip_requirements=pip_requirements,
                    serialization_format="pt2" if export else "pickle",
                )
        return info.model_uri


SKIPPED_DIR = "skipped"


def record_skip(parent_run_id: str, job: dict[str, str]) -> None:
    """Log a sweep job that was skipped (an incompatible pair) to the sweep's parent run, as the
    artifact ``skipped/<learner>-<scenario>-<n>.json``, so a report can show the pair and the reason."""
    import json
    import tempfile

    name = f"{job['learner']}-{job['scenario']}-{job.get('job', 0)}.json"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(job, indent=1))
        with store_lock():
            _mlflow().MlflowClient().log_artifact(parent_run_id, str(path), SKIPPED_DIR)


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model's environment."""
    import mlflow
    import numpy
    import torch

    import mimo_l2o

    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={numpy.__version__}",
        f"mlflow=={mlflow.__version__}",
        f"mimo_l2o=={mimo_l2o.__version__}",
    ]


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------
def _sweep_file(name: str) -> Path | None:
    """A file of the sweep's folder when this job is part of a multirun, else ``None``."""
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return None
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    path = Path(hydra_cfg.sweep.dir) / name
    return path if path.exists() else None


def parent_run_id() -> str | None:
    """The sweep's parent run id when this job is part of a multirun, else ``None``."""
    path = _sweep_file(PARENT_RUN_FILE)
    return path.read_text().strip() if path else None


def swept_overrides() -> list[str]:
    """This job's values of the keys its sweep varies (``scenario.p_max=2``), in the sweep's order;
    empty outside a multirun. Sibling runs differ in these, so they go into the run's name."""
    path = _sweep_file(SWEPT_KEYS_FILE)
    if path is None:
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mimo_l2o.jobs import job_overrides

    job = {o.key_or_group: o for o in OverridesParser.create().parse_overrides(job_overrides())}
    return [
        f"{key}={job[key].get_value_element_as_str()}" for key in json.loads(path.read_text()) if key in job
    ]


def _sweep_overrides(config: DictConfig) -> list:
    """The sweep's command-line overrides, parsed (with the config loader, which expands ``glob``)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    return parser.parse_overrides(list(config.hydra.overrides.task))


def close_open_parent(status: str) -> None:
    """Terminate the parent run this process opened, if any, and any child of it still RUNNING
    (a worker process that was killed or aborted cannot end its own run)."""
    run_id = _open_parent.pop("run_id", None)
    if not run_id:
        return
    client = _mlflow().MlflowClient()
    with store_lock():
        experiment_id = client.get_run(run_id).info.experiment_id
        running = f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'"
        children = client.search_runs([experiment_id], filter_string=running)
        for child in children:
            client.set_tag(child.info.run_id, "failure_reason", "the sweep stopped before this job finished")
            client.set_terminated(child.info.run_id, "KILLED")
        client.set_terminated(run_id, status)


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

        # Hydra turns a callback's exceptions into warnings and goes on, so bad input anywhere in
        # the sweep leaves here through SystemExit, before any job or run starts. An incompatible
        # combination is no bad input: that job is skipped, with its reason, when it comes.
        try:
            overrides = _sweep_overrides(config)
            for job_cfg in _sweep_job_configs(config, overrides):
                try:
                    build_parts(validate(job_cfg))
                except Incompatible:
                    pass
        except Exception as err:
            message = one_line(err)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(2) from None
        mlflow = _mlflow()
        experiment_id = _experiment_id(config.tracking.experiment)
        sweep_dir = Path(config.hydra.sweep.dir)
        tags = {
            "sweep_dir": str(sweep_dir),
            "paper": config.get("paper"),
            "overrides": _task_overrides(config),
        }
        with store_lock():
            run = mlflow.MlflowClient().create_run(
                experiment_id,
                run_name=f"sweep {sweep_dir.name}",
                tags={k: str(v) for k, v in tags.items() if v is not None},
            )
        _open_parent["run_id"] = run.info.run_id
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_RUN_FILE).write_text(run.info.run_id)
        # the keys that take several values (a=1,2, range, glob), for the names of the runs
        swept = [o.key_or_group for o in overrides if o.is_sweep_override()]
        (sweep_dir / SWEPT_KEYS_FILE).write_text(json.dumps(swept))
        log.info("MLflow sweep parent run %s", run.info.run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        close_open_parent("FINISHED")


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
