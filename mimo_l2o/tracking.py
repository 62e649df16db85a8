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
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from filelock import FileLock
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from mimo_l2o.errors import ConfigError, RunFailure, require

log = logging.getLogger(__name__)

PARENT_RUN_FILE = "mlflow_parent_run_id"
SWEPT_KEYS_FILE = "swept_keys.json"  # the keys a sweep varies, for the names of its runs
MAX_PARAM_LENGTH = 6000
MAX_RUN_NAME = 200  # characters; MLflow keeps 250
MAX_MODEL_NAME = 120  # characters of a logged model's name
DIGEST_LENGTH = 32  # characters of a dataset digest MLflow keeps (of the 64 of a cache key)

# The sweep's parent run while this process holds it open, so that a sweep that raises can
# still close it as FAILED (``mimo_l2o.__main__``).
_open_parent: dict[str, str] = {}


def _mlflow():
    import mlflow  # imported lazily: ~1 s, and not needed to compose configs or to fail on bad input

    return mlflow


# Every request to a tracking server has a bounded time and retry budget (MLflow's own defaults, 7
# retries with exponential backoff and a 120 s timeout, keep a job whose server died blocked for many
# minutes): a server that is gone is reported within seconds, one that hangs within about a minute.
# The environment wins where it sets them.
HTTP_BUDGET = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
for _key, _value in HTTP_BUDGET.items():
    os.environ.setdefault(_key, _value)


class TrackingLost(RunFailure):
    """The tracking server stopped answering during a run: the run ends at once (its record cannot be
    kept), its training state stays in its folder for ``resume=``."""

    def __init__(self, uri: str, error: Exception):
        super().__init__(uri)
        self.uri, self.reason, self.run_id = uri, _no_answer(error), None

    def __str__(self) -> str:
        again = f"; resume={self.run_id} continues from the last epoch once it is back" if self.run_id else ""
        return f"the tracking server {self.uri} stopped answering ({self.reason}){again}"


def _no_answer(error: Exception) -> str:
    """What a request that got no answer met, in a few words (MLflow's own message is a paragraph)."""
    text = str(error)
    for phrase in ("Connection refused", "Read timed out", "Connection reset", "Name or service not known"):
        if phrase in text:
            return phrase.lower() + " after the retries"
    return f"{type(error).__name__} after the retries"


def _unreachable(error: Exception) -> bool:
    """A request that never reached a server or got no answer (refused, reset, timed out, 5xx after
    the retries), as opposed to a request the server refused."""
    import requests

    if isinstance(error, requests.RequestException | ConnectionError | TimeoutError):
        return True
    text = str(error)
    return "Max retries exceeded" in text or "Connection refused" in text or "Read timed out" in text


@contextlib.contextmanager
def store_lock() -> Iterator[None]:
    """Around every write to the store: serialised by a file lock when the store is a local SQLite file,
    with SIGTERM held until the write is done (a write cut short leaves the database locked); a server
    that does not answer raises :class:`TrackingLost`."""
    from mimo_l2o.jobs import deferred_termination

    uri = _mlflow().get_tracking_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        with FileLock(str(db) + ".lock"), deferred_termination():
            yield
    elif uri.startswith(("http://", "https://")):
        try:
            yield
        except Exception as error:
            if _unreachable(error):
                raise TrackingLost(uri, error) from error
            raise
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
    reopen : str, optional
        An existing run to continue (a requeued Slurm job's) instead of creating one.
    """

    def __init__(
        self,
        experiment: str,
        run_name: str,
        tags: dict[str, str],
        parent_run_id: str | None = None,
        reopen: str | None = None,
    ):
        self.experiment = experiment
        self.run_name = run_name
        self.tags = tags
        self.parent_run_id = parent_run_id
        self.reopen = reopen
        self.run_id: str | None = None
        self.files: dict[str, Path] = {}  # logged when the run ends, however it ends (the config, the log)

    def __enter__(self) -> Tracker:
        if self.reopen:
            self.run_id = reopen_run(self.reopen, self._all_tags())
            log.info(
                "MLflow run %s (%s) reopened in %s", self.run_id, self.run_name, _mlflow().get_tracking_uri()
            )
        else:
            self.run_id = create_run(self.experiment, self.run_name, self._all_tags())
            log.info("MLflow run %s (%s) in %s", self.run_id, self.run_name, _mlflow().get_tracking_uri())
        return self

    def _all_tags(self) -> dict[str, str]:
        tags = {k: str(v) for k, v in self.tags.items() if v is not None}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        return tags

    def __exit__(self, exc_type, exc, tb) -> bool:
        from mimo_l2o.jobs import deferred_termination

        if isinstance(exc, TrackingLost):  # nothing more reaches the server; the next run closes this one
            exc.run_id = self.run_id
            return False
        client = _mlflow().MlflowClient()
        # on a SQLite store SIGTERM waits until the run is closed (a write cut short locks the database);
        # a server's requests are bounded instead, so SIGTERM is acted on within seconds whatever it does
        local = _mlflow().get_tracking_uri().startswith("sqlite:")
        with deferred_termination() if local else contextlib.nullcontext():
            try:
                self.log_files(self.files)
            except TrackingLost as lost:
                lost.run_id = self.run_id
                raise
            except Exception as error:  # the record of the outcome matters more than these files
                log.warning("could not log %s: %s", ", ".join(self.files), error)
            with store_lock():
                if exc is None:
                    client.set_terminated(self.run_id, "FINISHED")
                else:
                    # Ctrl-C, SIGTERM, a Slurm requeue (submitit exits): KILLED; an error: FAILED
                    killed = issubclass(exc_type, KeyboardInterrupt | SystemExit)
                    reason = f"{exc_type.__name__}: {exc}"[:MAX_PARAM_LENGTH]
                    client.set_tag(self.run_id, "failure_reason", reason)
                    client.set_terminated(self.run_id, "KILLED" if killed else "FAILED")
        return False

    def address(self) -> str:
        """Where the run is seen (:func:`run_address`)."""
        return run_address(self.run_id)

    # ---- logging ---------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        # a character MLflow allows in no name (eval.shifts' joint key's +) becomes _
        items = [Param(re.sub(r"[^/\w.\- ]", "_", k), str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
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

    def log_model(
        self,
        model,
        input_example,
        metadata: dict[str, Any],
        code_paths: list[str] | None = None,
        registered_name: str | None = None,
    ) -> str:
        """Log a torch module with ``mlflow.pytorch``, named after the run, with its input described in
        ``metadata`` (feature, layout) and the signature inferred from ``input_example``; returns its
        URI (also the run's tag ``mimo_l2o.model_uri``). ``code_paths``: ``None`` logs an exported graph
        (``pt2``, needing torch only), else by pickle with the packages at those paths (a module whose
        forward is no static graph). ``registered_name``: also register it under that name."""
        mlflow = _mlflow()
        export = code_paths is None
        with store_lock():
            with mlflow.start_run(run_id=self.run_id):
                info = mlflow.pytorch.log_model(
                    model,
                    name=model_name(self.run_name),
                    input_example=input_example,
                    pip_requirements=pip_requirements(with_project=not export),
                    code_paths=code_paths,
                    metadata=metadata,
                    serialization_format="pt2" if export else "pickle",
                    registered_model_name=registered_name,
                )
        self.set_tags({"mimo_l2o.model_uri": info.model_uri})
        return info.model_uri

    def log_datasets(self, entries: list[dict[str, Any]]) -> None:
        """The run's datasets in MLflow's Dataset column (``mlflow.log_input``): each entry's ``name``
        (stage, split and size), ``digest`` (its cache key), ``context`` (the split) and ``source`` (the
        cache folder)."""
        import warnings

        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        inputs = []
        for entry in entries:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "can be interpreted in multiple ways": a local folder
                source = resolve_dataset_source(entry["source"])
            dataset = MetaDataset(source, name=entry["name"], digest=entry["digest"][:DIGEST_LENGTH])
            tags = [InputTag("mlflow.data.context", entry["context"])]
            inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags))
        with store_lock():
            _mlflow().MlflowClient().log_inputs(self.run_id, datasets=inputs)

    def log_files(self, files: dict[str, Path]) -> None:
        """Log each existing file or folder under its artifact path (``{"hydra": .hydra/}``)."""
        client = _mlflow().MlflowClient()
        for artifact_path, path in files.items():
            with store_lock():
                if path.is_dir():
                    client.log_artifacts(self.run_id, str(path), artifact_path)
                elif path.is_file():  # under its artifact name (Hydra's __main__.log as run.log)
                    with tempfile.TemporaryDirectory() as tmp:
                        named = Path(tmp) / Path(artifact_path).name
                        shutil.copyfile(path, named)
                        folder = str(Path(artifact_path).parent)
                        client.log_artifact(self.run_id, str(named), None if folder == "." else folder)


# ---------------------------------------------------------------------------------------------
# Runs whose process is gone
# ---------------------------------------------------------------------------------------------
HOST_TAG, PID_TAG, START_TAG = "mimo_l2o.host", "mimo_l2o.pid", "mimo_l2o.pid_start"


def _process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat``; empty elsewhere), so
    that a reused pid is not taken for the process that opened a run."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process of that pid exists
        pass
    return not start or _process_start(pid) in ("", start)


def process_tags() -> dict[str, str]:
    """The host and process that open a run, for :func:`fail_gone_runs`."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), START_TAG: _process_start(pid)}


def fail_gone_runs(client) -> list[str]:
    """Mark FAILED ("process gone") every run of the store still RUNNING whose process on this host
    has ended (a SIGKILL, an out-of-memory kill, a lost node): a run that cannot end its own record is
    ended by the next run that starts. Returns the run ids."""
    host = socket.gethostname()
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    running = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"
    gone = []
    for run in client.search_runs(ids, filter_string=running, max_results=5000):
        tags = run.data.tags
        pid = int(tags.get(PID_TAG, "0") or 0)
        if pid and not _alive(pid, tags.get(START_TAG, "")):
            reason = f"process gone: process {pid} on {host} ended without closing this run"
            client.set_tag(run.info.run_id, "failure_reason", reason)
            client.set_terminated(run.info.run_id, "FAILED")
            log.warning("run %s (%s) marked FAILED: %s", run.info.run_id, run.info.run_name, reason)
            gone.append(run.info.run_id)
    return gone


def context_tags(tags: dict[str, str]) -> dict[str, str]:
    """``tags`` with MLflow's context tags (user, source name and type, git commit), resolved by
    MLflow's own tag providers as ``mlflow.start_run`` would (``create_run`` skips them)."""
    from mlflow.tracking.context.registry import resolve_tags

    return {k: str(v) for k, v in resolve_tags(tags).items()}


def create_run(experiment: str, run_name: str, tags: dict[str, str]) -> str:
    """A new RUNNING run in ``experiment`` (created if need be) with ``tags`` and the process tags,
    after ending the runs of dead processes (:func:`fail_gone_runs`); returns its id."""
    mlflow = _mlflow()
    experiment_id = _experiment_id(experiment)
    client = mlflow.MlflowClient()
    with store_lock():
        fail_gone_runs(client)
        run = client.create_run(
            experiment_id, run_name=run_name, tags=context_tags({**tags, **process_tags()})
        )
    return run.info.run_id


def run_address(run_id: str) -> str:
    """Where a run is seen: its page on a tracking server, else the command that serves the local
    store and the page to open."""
    uri = _mlflow().get_tracking_uri()
    run = _mlflow().MlflowClient().get_run(run_id)
    page = f"#/experiments/{run.info.experiment_id}/runs/{run_id}"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"http://127.0.0.1:5000/{page} after: mlflow ui --backend-store-uri {uri}"


def reopen_run(run_id: str, tags: dict[str, str]) -> str:
    """Set ``run_id`` RUNNING again for this process (a requeued job continuing its run), with ``tags``
    and the process tags, its failure reason removed; returns it."""
    from mlflow.entities import RunTag

    client = _mlflow().MlflowClient()
    with store_lock():
        client.update_run(run_id, status="RUNNING")
        if "failure_reason" in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, "failure_reason")
        merged = {**tags, **process_tags()}
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in merged.items()], synchronous=True)
    return run_id


def open_parent(experiment: str, run_name: str, tags: dict[str, str]) -> str:
    """Create the parent run of the sweep this process launches and hold it open until
    :func:`close_open_parent`; returns its id."""
    run_id = create_run(experiment, run_name, tags)
    _open_parent["run_id"] = run_id
    return run_id


# ---------------------------------------------------------------------------------------------
# The store, checked before any work
# ---------------------------------------------------------------------------------------------
TRACKING_TIMEOUT_S = 5.0  # an unreachable tracking server is reported after this
STORE_ATTEMPTS = 3  # reads of the store, a second apart, before it is reported as unreadable
_DATABASES = ("postgresql", "mysql", "mssql", "databricks")


def check_tracking(experiment: str) -> None:
    """The experiment name is usable and the tracking store answers: a server within
    :data:`TRACKING_TIMEOUT_S` seconds, a SQLite file or folder in a writable folder; an experiment
    of that name is not in the deleted state (MLflow would refuse to create or use it)."""
    mlflow = _mlflow()
    key = "MLFLOW_TRACKING_URI"
    require(experiment.strip() != "", "tracking.experiment", "must be a non-empty name")
    require(
        len(experiment) <= 500,
        "tracking.experiment",
        f"must be at most 500 characters, got {len(experiment)}",
    )
    uri = mlflow.get_tracking_uri()
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=TRACKING_TIMEOUT_S).raise_for_status()
        except requests.RequestException as err:
            raise ConfigError(
                key,
                f"the tracking server {uri} does not answer ({type(err).__name__} within "
                f"{TRACKING_TIMEOUT_S:g} s); start it, or unset {key} for the local store",
            ) from None
    elif scheme in ("sqlite", "file", ""):
        path = Path(uri.removeprefix("sqlite:///") if scheme == "sqlite" else urlparse(uri).path or uri)
        folder = path.parent if scheme == "sqlite" else path
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        require(
            existing.is_dir() and os.access(existing, os.W_OK | os.X_OK),
            key,
            f"{uri}: {existing} is not a writable folder",
        )
        if scheme == "sqlite":
            require(folder.is_dir(), key, f"{uri}: the folder {folder} does not exist")
    elif scheme.split("+")[0] not in _DATABASES:
        raise ConfigError(
            key,
            f"{uri}: unknown scheme '{scheme}'; use sqlite:///<file>, http(s)://<host>:<port> or a folder",
        )
    for attempt in range(STORE_ATTEMPTS):
        try:
            with store_lock():
                found = mlflow.MlflowClient().get_experiment_by_name(experiment)
            break
        except Exception as err:  # a database that refuses the connection, a corrupt SQLite file
            if attempt == STORE_ATTEMPTS - 1:  # (once may be another process creating the store)
                raise ConfigError(key, f"{uri}: the store cannot be read ({_store_error(err)})") from None
            time.sleep(1.0)
    if found is not None and found.lifecycle_stage == "deleted":
        raise ConfigError(
            "tracking.experiment",
            f"experiment '{experiment}' is deleted in {uri}; restore it (mlflow experiments restore) "
            "or choose another name",
        )


def _store_error(err: Exception) -> str:
    """The reason a store cannot be read, in one line: a schema of another mlflow version says what
    to do, anything else gives its type and first sentence."""
    text = " ".join(str(err).split())
    if re.search(r"found version \w+, but expected \w+", text):
        return (
            f"written by another mlflow than this {_mlflow().__version__}: use that version, or back it up "
            "and run `mlflow db upgrade` with the newer one"
        )
    first = text.split(". ")[0][:200]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


SKIPPED_DIR = "skipped"


def record_skip(parent_run_id: str, job: dict[str, str]) -> None:
    """Log a sweep job that was skipped (an incompatible pair) to the sweep's parent run, as the
    artifact ``skipped/<learner>-<scenario>-<n>.json``, so a report can show the pair and the reason."""
    name = f"{job['learner']}-{job['scenario']}-{job.get('job', 0)}.json"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(job, indent=1))
        with store_lock():
            _mlflow().MlflowClient().log_artifact(parent_run_id, str(path), SKIPPED_DIR)


def pip_requirements(with_project: bool = False) -> list[str]:
    """A logged model's environment: torch, numpy and mlflow pinned to this run's versions, and with
    ``with_project`` (a pickled model, whose classes come with it as code) mimo_l2o's own requirements
    as it declares them; never a pin of mimo_l2o itself, which is not on an index."""
    from importlib.metadata import PackageNotFoundError, requires

    import mlflow
    import numpy
    import torch

    pins = [
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={numpy.__version__}",
        f"mlflow=={mlflow.__version__}",
    ]
    if not with_project:
        return pins
    try:
        declared = [r for r in requires("mimo_l2o") or [] if "extra ==" not in r]
    except PackageNotFoundError:
        declared = []
    from packaging.requirements import Requirement

    named = {p.split("==")[0] for p in pins}
    return pins + [r for r in declared if Requirement(r).name not in named]


def model_name(run_name: str) -> str:
    """The logged model's name: the run's name in the characters MLflow allows in a model name."""
    import re

    return re.sub(r"[^A-Za-z0-9_-]+", "_", run_name).strip("_")[:MAX_MODEL_NAME] or "policy"


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


def checkpoint_of(run_id: str) -> str | None:
    """The checkpoint path a run recorded (its tag ``mimo_l2o.checkpoint``), ``None`` if no such run."""
    try:
        return _mlflow().MlflowClient().get_run(run_id).data.tags.get("mimo_l2o.checkpoint")
    except Exception:  # no run of that id in this store
        return None


def open_parent_id() -> str | None:
    """The parent run this process holds open (a sweep it launches), if any."""
    return _open_parent.get("run_id")


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
