"""What a run needs to know of the Hydra job it runs in: its output folder, its share of the cores
under a parallel launcher, and that a terminated job unwinds like Ctrl-C (once a tracking write under
way has finished)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path


def _hydra_config():
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get()
    except ValueError:  # not inside a Hydra job (tests, notebooks)
        return None


def output_dir() -> Path:
    """The job's output folder (Hydra's), or the working directory outside Hydra."""
    hydra_cfg = _hydra_config()
    return Path(hydra_cfg.runtime.output_dir) if hydra_cfg else Path.cwd()


def run_files() -> dict[str, Path]:
    """The files of the job that belong in its record, by artifact path: Hydra's composed config,
    overrides and settings (``hydra/``) and the job's log (``run.log``); empty outside Hydra."""
    hydra_cfg = _hydra_config()
    if hydra_cfg is None:
        return {}
    out = Path(hydra_cfg.runtime.output_dir)
    return {"hydra": out / hydra_cfg.output_subdir, "run.log": out / f"{hydra_cfg.job.name}.log"}


def discard_output_dir(path: Path | None = None) -> None:
    """Remove a refused job's output folder (Hydra creates it, with ``.hydra/`` and the log, before the
    job's config is checked) and the date folders above it that this leaves empty, up to the working
    directory: bad input leaves nothing behind."""
    import shutil

    hydra_cfg = _hydra_config()
    if path is None:
        if hydra_cfg is None:
            return
        path = Path(hydra_cfg.runtime.output_dir)
    path, stop = path.resolve(), Path.cwd().resolve()
    if path == stop or stop not in path.parents:
        return  # never above or at the working directory
    shutil.rmtree(path, ignore_errors=True)
    for parent in path.parents:
        if parent == stop or any(parent.iterdir()):
            break
        parent.rmdir()


def job_number() -> int | None:
    """The job's number in a multirun (Hydra's ``hydra.job.num``), ``None`` outside one."""
    from hydra.types import RunMode

    hydra_cfg = _hydra_config()
    if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return int(hydra_cfg.job.num)


def job_overrides() -> list[str]:
    """The job's own overrides (``learner=dnn scenario=imac``), empty outside Hydra."""
    hydra_cfg = _hydra_config()
    return list(hydra_cfg.overrides.task) if hydra_cfg else []


def group_choice(group: str) -> str | None:
    """The option the job chose from a config group (``position_lstm/paper`` for
    ``learner=position_lstm/paper``), ``None`` outside Hydra."""
    hydra_cfg = _hydra_config()
    return hydra_cfg.runtime.choices.get(group) if hydra_cfg else None


def parallel_job_threads() -> int:
    """Threads per job when a sweep runs jobs in parallel processes (joblib), so that the jobs share
    the cores instead of oversubscribing them; in a Slurm job, the CPUs it was given
    (``SLURM_CPUS_PER_TASK``; torch would count the node's); 0 (torch's default) otherwise."""
    slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    slurm_cpus = int(slurm_cpus) if slurm_cpus.isdigit() and int(slurm_cpus) > 0 else 0
    hydra_cfg = _hydra_config()
    if hydra_cfg is None or "Joblib" not in str(hydra_cfg.launcher.get("_target_", "")):
        return slurm_cpus
    cores = slurm_cpus or os.cpu_count() or 1  # a joblib sweep inside an allocation shares its CPUs
    n_jobs = int(hydra_cfg.launcher.get("n_jobs") or -1)
    n_jobs = cores + 1 + n_jobs if n_jobs < 0 else n_jobs  # joblib: -1 means all cores
    return max(1, cores // max(1, min(n_jobs, cores)))


# SIGTERM while a tracking write is under way waits for the write (a write to SQLite cut short leaves
# the database locked and the run RUNNING): the depth of nested deferring blocks, the pending signal
_deferred: dict = {"depth": 0, "pending": None}


def _interrupt(signum: int) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def _terminate(signum, frame) -> None:
    if _deferred["depth"]:
        _deferred["pending"] = (_interrupt, signum)
        return
    _interrupt(signum)


def _deferring(handler):
    """``handler`` (submitit's preemption handler, which requeues the job and exits), run at once or,
    inside a tracking write, when the write is done."""

    def deferring(signum, frame) -> None:
        if _deferred["depth"]:
            _deferred["pending"] = (lambda n: handler(n, None), signum)
            return
        handler(signum, frame)

    deferring.wrapped = handler
    return deferring


@contextlib.contextmanager
def deferred_termination() -> Iterator[None]:
    """SIGTERM (and submitit's preemption signal) that arrives inside the block is acted on when the
    block ends (its write done)."""
    _deferred["depth"] += 1
    try:
        yield
    finally:
        _deferred["depth"] -= 1
        pending = _deferred["pending"]
        if not _deferred["depth"] and pending is not None:
            _deferred["pending"] = None
            act, signum = pending
            act(signum)


def unwind_on_sigterm() -> None:
    """A terminated job (kill, a cluster's time limit; also in launcher worker processes) unwinds like
    Ctrl-C, so its MLflow run ends as KILLED instead of staying RUNNING."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
        usr2 = signal.getsignal(signal.SIGUSR2)  # submitit's preemption and time-limit handler
        if callable(usr2) and not hasattr(usr2, "wrapped"):
            signal.signal(signal.SIGUSR2, _deferring(usr2))
