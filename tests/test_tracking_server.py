"""Against a real MLflow tracking server on PostgreSQL (``scripts/tracking_server.sh``; skipped where
PostgreSQL is not installed): a server that dies mid-training ends the run in seconds, with its
checkpoint intact for ``resume=`` once the server is back (a Slurm sweep against it is in
``test_slurm.py``, beside the cluster)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.conftest import app_env, isolated_env, run_app

# about half a second per epoch: long enough to kill the server between two epochs
TRAINING = [
    "data.num_train=6000",
    "data.num_val=300",
    "data.num_test=300",
    "data.chunk_size=6000",
    "learner.train.max_epochs=30",
    "learner.train.batch_size=50",
    "eval.timing_samples=50",
    "eval.timing_repeats=1",
    "num_threads=1",
    "tracking.log_model=false",
]


def _env(work: Path, uri: str) -> dict[str, str]:
    """The folder's own cache, the server as the store."""
    return {**isolated_env(work), "MLFLOW_TRACKING_URI": uri}


def _start_training(work: Path, uri: str, *extra: str) -> subprocess.Popen:
    """The app in the background, its stdout and stderr in files (``proc.err`` names the latter): a
    pipe nobody reads would fill and stall it."""
    env = app_env(_env(work, uri))
    command = [sys.executable, "-m", "mimo_l2o", *TRAINING, *extra]
    stamp = time.monotonic_ns()
    out, err = work / f"app-{stamp}.out", work / f"app-{stamp}.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(command, cwd=work, env=env, stdout=stdout, stderr=stderr, text=True)
    proc.err = err
    return proc


def _ended(proc: subprocess.Popen) -> str:
    """Wait for ``proc`` (two minutes at most); its stderr."""
    proc.wait(timeout=120)
    return proc.err.read_text()


def _wait_for_epoch(work: Path, epoch: int, proc: subprocess.Popen, earlier: tuple = ()) -> Path:
    """The run's ``last.pt`` (none of the ``earlier`` runs') once it holds ``epoch`` (0-based) or later."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        for last in set(work.glob("outputs/*/*/checkpoints/last.pt")) - set(earlier):
            try:
                if torch.load(last, weights_only=False)["epoch"] >= epoch:
                    return last
            except Exception:  # being replaced
                pass
        time.sleep(0.1)
    raise AssertionError(f"training did not reach epoch {epoch + 1}: {proc.err.read_text()[-2000:]}")


def test_a_dead_tracking_server_ends_the_run_in_seconds_and_resume_continues(tracking_server, tmp_path):
    import mlflow

    # the server dies mid-training and the job is terminated (a cluster's time limit)
    first = _start_training(tmp_path, tracking_server.uri)
    last = _wait_for_epoch(tmp_path, 2, first)
    tracking_server.stop()
    first.send_signal(signal.SIGTERM)
    began = time.monotonic()
    err = _ended(first)
    assert time.monotonic() - began < 60, "the run took more than a minute to end after SIGTERM"
    assert first.returncode != 0
    assert len(err.strip().splitlines()) == 1, err[-3000:]  # one line
    state = torch.load(last, weights_only=False)  # the checkpoint is intact
    assert state["epoch"] >= 2
    run_id = next(tmp_path.glob("outputs/*/*/*.log")).read_text().split("MLflow run ")[1].split()[0]

    # the server is back: resume= continues the run from its checkpoint, and the run left behind is closed
    tracking_server.start()
    resumed = run_app(*TRAINING, f"resume={run_id}", cwd=tmp_path, env=_env(tmp_path, tracking_server.uri))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_server.uri)
    assert client.get_run(run_id).info.status != "RUNNING"
    logs = "".join(p.read_text() for p in tmp_path.glob("outputs/*/*/*.log"))
    assert f"resuming training after epoch {state['epoch'] + 1} of 30" in logs

    # without a signal, the run whose server died ends by itself, in one line naming the server
    earlier = tuple(tmp_path.glob("outputs/*/*/checkpoints/last.pt"))
    second = _start_training(tmp_path, tracking_server.uri)
    _wait_for_epoch(tmp_path, 2, second, earlier)
    tracking_server.stop()
    began = time.monotonic()
    err = _ended(second)
    assert time.monotonic() - began < 60
    assert second.returncode == 1
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: the tracking server {tracking_server.uri} stopped answering")
    assert "resume=" in line
