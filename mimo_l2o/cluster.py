"""Slurm: ``hydra/launcher=slurm``, submitit's Slurm launcher with what a cluster sweep needs.

- **Requeue.** A job that reaches its time limit or is preempted gets submitit's signal (USR2,
  ``signal_delay_s`` before the limit), is requeued with the same arguments and, being a requeued
  Slurm job (``SLURM_RESTART_COUNT``), reopens its own MLflow run and resumes training from the
  last epoch its output folder holds (:func:`requeued_run`, used by the runner). Time limits requeue
  up to ``max_num_timeout`` times (submitit's plugin defaults to 0; here 10).
- **A quiet console.** Jobs are watched with ``squeue`` (which needs no accounting database, where
  submitit's ``sacct`` warns at every poll on a cluster without one), and each change of a job's
  state is one line: ``job #1 (slurm 42_1): RUNNING``.

The launcher class is ``hydra_plugins.mimo_l2o_slurm.launcher.SlurmLauncher`` (Hydra accepts launchers
from its plugin namespace only); :func:`register` puts it and its config in Hydra's registries when the
``slurm`` extra (``hydra-submitit-launcher``) is installed; ``hydra/launcher=submitit_slurm``
(the plugin's own) still works, without the requeue defaults and with its polling warnings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"  # in a job's output folder: the run a requeued job reopens
POLL_S = 15  # the longest wait between two looks at the queue
# the states in which a job has ended (squeue keeps an ended job for MinJobAge; GONE: left the queue)
FINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
    "SPECIAL_EXIT", "REVOKED", "GONE",
}  # fmt: skip


def slurm_job() -> str | None:
    """This process's Slurm job as the queue names it (``42`` or, in an array, ``42_3``, the same
    across requeues); ``None`` outside Slurm."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def remember_run(output_dir: Path, run_id: str) -> None:
    """In a Slurm job, write ``run_id`` into the job's output folder, where a requeued start of the job
    finds the run to reopen (:func:`requeued_run`); nothing outside Slurm."""
    if slurm_job():
        (output_dir / RUN_ID_FILE).write_text(run_id)


def requeued_run(output_dir: Path) -> str | None:
    """The MLflow run a requeued Slurm job reopens: the id its first start wrote into the job's output
    folder (the same folder on every start), when Slurm says the job was restarted; else ``None``."""
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1:
        return None
    path = output_dir / RUN_ID_FILE
    return path.read_text().strip() or None if path.exists() else None


def _state_lines(states: dict[str, str], seen: dict[str, str], first_job: int) -> list[str]:
    """One line per job whose state changed since ``seen`` (updated in place)."""
    lines = []
    for job_id, state in sorted(states.items()):
        if seen.get(job_id) != state:
            seen[job_id] = state
            task = job_id.split("_", 1)[1] if "_" in job_id else "0"
            number = first_job + int(task) if task.isdigit() else first_job
            lines.append(f"job #{number} (slurm {job_id}): {state}")
    return lines


def parse_squeue(text: str) -> dict[str, str]:
    """``squeue -o '%i|%T'`` lines as {job id: state}; a pending array range (``42_[0-3]``) becomes
    one entry per task."""
    from submitit.slurm.slurm import read_job_id

    states: dict[str, str] = {}
    for line in text.splitlines():
        if "|" not in line:
            continue
        job, state = (part.strip() for part in line.split("|", 1))
        for split in read_job_id(job):
            if len(split) >= 3:
                for index in range(int(split[1]), int(split[2]) + 1):
                    states[f"{split[0]}_{index}"] = state
            else:
                states["_".join(split[:2])] = state
    return states


def _watcher_class():
    from submitit.slurm.slurm import SlurmInfoWatcher

    class QueueWatcher(SlurmInfoWatcher):
        """submitit's watcher, reading ``squeue`` instead of ``sacct`` and logging state changes. A job
        that has left the queue without a result is ``GONE`` (submitit then reports it as failed)."""

        def __init__(self, first_job: int = 0) -> None:
            super().__init__(delay_s=POLL_S)
            self.first_job = first_job
            self.seen: dict[str, str] = {}

        def _make_command(self) -> list[str] | None:
            pending = {x.split("_")[0] for x in self._registered - self._finished}
            if not pending:
                return None
            return ["squeue", "--noheader", "--states=all", "--format=%i|%T", "--jobs", ",".join(pending)]

        def is_done(self, job_id: str, mode: str = "standard") -> bool:
            # squeue names more transient states than sacct (CONFIGURING, SUSPENDED, REQUEUE_HOLD, ...):
            # a job is done only in a state that ends it
            return self.get_state(job_id, mode=mode).upper().split()[0] in FINAL_STATES

        def update(self) -> None:
            command = self._make_command()
            if command is None:
                return
            self._num_calls += 1
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.SubprocessError) as error:  # the next poll tries again
                log.debug("squeue failed: %s", error)
                return
            if done.returncode != 0 and "Invalid job id" not in done.stderr:
                log.debug("squeue failed: %s", done.stderr.strip())
                return
            states = parse_squeue(done.stdout)
            for job_id in self._registered - self._finished:
                if job_id not in states and job_id in self.seen:
                    states[job_id] = "GONE"  # left the queue (MinJobAge) without a result file
            for line in _state_lines(states, self.seen, self.first_job):
                log.info(line)
            self._info_dict.update({job_id: {"State": state} for job_id, state in states.items()})
            self._last_status_check = time.time()
            for job_id in self._registered - self._finished:
                if self.is_done(job_id, mode="cache"):
                    self._finished.add(job_id)

    return QueueWatcher


@contextlib.contextmanager
def quiet_queue(first_job: int) -> Iterator[None]:
    """submitit's Slurm jobs watched by :func:`_watcher_class`'s watcher while the block runs (a sweep's
    launch), numbered from ``first_job`` in its lines."""
    from submitit.slurm import slurm

    previous = slurm.SlurmJob.watcher
    watcher = slurm.SlurmJob.watcher = _watcher_class()(first_job=first_job)
    try:
        yield
        watcher.update()  # the jobs' last states (COMPLETED, FAILED, ...)
    finally:
        slurm.SlurmJob.watcher = previous


def register() -> None:
    """``hydra/launcher=slurm`` in Hydra's ConfigStore, when the ``slurm`` extra is installed."""
    try:
        from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    except ImportError:
        return
    from hydra.core.config_store import ConfigStore

    @dataclass
    class SlurmConf(SlurmQueueConf):
        _target_: str = "hydra_plugins.mimo_l2o_slurm.launcher.SlurmLauncher"
        # requeues after a time limit (a preempted job is always requeued)
        max_num_timeout: int = 10

    from hydra.core.plugins import Plugins

    from hydra_plugins.mimo_l2o_slurm.launcher import SlurmLauncher

    Plugins.instance().register(SlurmLauncher)
    ConfigStore.instance().store(group="hydra/launcher", name="slurm", node=SlurmConf, provider="mimo_l2o")
