"""Faults end cleanly: a killed run or sweep leaves no run RUNNING after the next start, a terminated
sweep stops its workers, and two sweeps started in the same second keep their own parents."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import TINY

# long enough to be killed while training (a few seconds per epoch at one thread)
SLOW = [o for o in TINY if not o.startswith(("data.num_train", "learner.train.max_epochs"))] + [
    "data.num_train=20000",
    "learner.train.max_epochs=200",
    "learner.train.early_stopping_patience=0",
]


def _client():
    """The store's client; the store is created now, before any app starts (two processes creating
    one SQLite store at once collide in its migrations, and the test's polls hold no lock)."""
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    client.search_experiments()
    return client


def _all_runs(client):
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


class App:
    """``python -m mimo_l2o`` started in the background, its output in a file (a pipe nobody reads
    would fill and stall it)."""

    def __init__(self, *overrides, cwd):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("HYDRA_FULL_ERROR", None)
        self.log = cwd / f"app-{time.monotonic_ns()}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mimo_l2o", *overrides],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # its own process group: the test sees whether a worker survives
            )
        self.pid = self.proc.pid

    def wait(self, timeout: float) -> tuple[int, str]:
        self.proc.wait(timeout=timeout)
        return self.proc.returncode, self.log.read_text()

    def output(self) -> str:
        return self.log.read_text()


def _start(*overrides, cwd) -> App:
    return App(*overrides, cwd=cwd)


def _wait_for(condition, timeout=300.0, app: App | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
        if app is not None and app.proc.poll() is not None:
            raise AssertionError(f"the app ended first:\n{app.output()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError("timed out waiting" + (f":\n{app.output()[-3000:]}" if app else ""))


def _running(client, count=1):
    runs = [r for r in _all_runs(client) if r.info.status == "RUNNING" and "train/loss" in r.data.metrics]
    return runs if len(runs) >= count else None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_run_of_a_dead_process_is_failed_by_the_next_start(workdir):
    from mimo_l2o import tracking

    client = _client()
    done = subprocess.Popen(["true"])
    done.wait()
    experiment = client.create_experiment("mimo_l2o")
    host = socket.gethostname()
    dead = client.create_run(
        experiment, tags={tracking.HOST_TAG: host, tracking.PID_TAG: str(done.pid), tracking.START_TAG: "1"}
    )
    alive = client.create_run(experiment, tags=tracking.process_tags())
    elsewhere = client.create_run(experiment, tags={tracking.HOST_TAG: "another-host", tracking.PID_TAG: "1"})
    new = tracking.create_run("mimo_l2o", "next", {})
    status = {
        r.info.run_id: (r.info.status, r.data.tags.get("failure_reason", "")) for r in _all_runs(client)
    }
    assert status[dead.info.run_id][0] == "FAILED"
    assert status[dead.info.run_id][1].startswith("process gone")
    assert status[alive.info.run_id][0] == "RUNNING"  # this process is alive
    assert status[elsewhere.info.run_id][0] == "RUNNING"  # another host's processes are not ours to judge
    assert status[new][0] == "RUNNING"


def test_sigkill_then_the_next_run_marks_the_killed_run_failed(workdir):
    client = _client()
    proc = _start(*SLOW, cwd=workdir)
    (killed,) = _wait_for(lambda: _running(client), app=proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert client.get_run(killed.info.run_id).info.status == "RUNNING"  # nobody could close it
    code, err = _start(*TINY, cwd=workdir).wait(timeout=300)
    assert code == 0, err[-2000:]
    after = client.get_run(killed.info.run_id)
    assert after.info.status == "FAILED"
    assert after.data.tags["failure_reason"].startswith("process gone")
    assert all(r.info.status != "RUNNING" for r in _all_runs(client))


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_sigterm_to_a_sweep_closes_every_run_and_stops_the_workers(launcher, workdir):
    values = "scenario.num_users=3,4,5,6"
    args = ["-m", values, *SLOW]
    if launcher == "joblib":
        args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", values, *SLOW]
    client = _client()
    proc = _start(*args, cwd=workdir)
    _wait_for(lambda: _running(client, 2 if launcher == "joblib" else 1), app=proc)
    os.kill(proc.pid, signal.SIGTERM)
    code, err = proc.wait(timeout=60)
    assert code == 130, err[-2000:]
    assert "stopped: terminated by signal 15" in err.splitlines()
    assert "Traceback" not in err
    _wait_for(lambda: not _group_alive(proc.pid), timeout=30)  # no worker survives its launcher
    runs = _all_runs(client)
    assert all(r.info.status != "RUNNING" for r in runs)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) < 4  # the jobs not yet started never start
    assert any(r.info.status == "KILLED" for r in children)


def test_two_sweeps_in_the_same_second_keep_their_own_parents(workdir):
    client = _client()
    first = _start("-m", "scenario.num_users=3,4", *TINY, cwd=workdir)
    second = _start("-m", "scenario.num_users=5,6", *TINY, cwd=workdir)
    for app in (first, second):
        code, err = app.wait(timeout=600)
        assert code == 0, err[-2000:]
    runs = _all_runs(client)
    parents = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert len(parents) == 2
    users = {
        pid: sorted(
            int(r.data.params["scenario.num_users"])
            for r in runs
            if r.data.tags.get("mlflow.parentRunId") == pid
        )
        for pid in parents
    }
    assert sorted(users.values()) == [[3, 4], [5, 6]]
    folders = {r.data.tags["sweep_dir"] for r in parents.values()}
    assert len(folders) == 2


RESUMABLE = [o for o in SLOW if not o.startswith("learner.train.max_epochs")] + ["learner.train.max_epochs=8"]


def test_resume_continues_a_killed_training_run_to_the_uninterrupted_result(workdir):
    """SIGKILL after a few epochs, then ``resume=<run id>``: training goes on from the last epoch's
    checkpoint (weights, optimizer, schedule, shuffling) and ends where an uninterrupted run ends."""
    client = _client()
    code, err = _start(*RESUMABLE, cwd=workdir).wait(timeout=600)
    assert code == 0, err[-2000:]
    (whole,) = _all_runs(client)

    proc = _start(*RESUMABLE, cwd=workdir)

    def three_epochs():
        runs = [r for r in _all_runs(client) if r.info.status == "RUNNING"]
        done = runs and len(client.get_metric_history(runs[0].info.run_id, "train/loss")) >= 3
        return runs[0] if done else None

    killed = _wait_for(three_epochs, app=proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    code, err = _start(*RESUMABLE, f"resume={killed.info.run_id}", cwd=workdir).wait(timeout=600)
    assert code == 0, err[-2000:]
    assert "resuming training after epoch" in err
    resumed = max(_all_runs(client), key=lambda r: r.info.start_time)
    assert resumed.data.tags["mimo_l2o.resumed_from"] == killed.info.run_id
    assert client.get_run(killed.info.run_id).info.status == "FAILED"  # process gone
    for key in ("test/objective_ratio", "train/best_val_loss", "train/epochs"):
        assert resumed.data.metrics[key] == whole.data.metrics[key], key
    assert "checkpoints" in {a.path for a in client.list_artifacts(resumed.info.run_id)}


def test_resume_refuses_another_config(workdir, capsys):
    from tests.test_bad_input import run_main

    code, err = _start(*TINY, cwd=workdir).wait(timeout=600)
    assert code == 0, err[-2000:]
    (done,) = _all_runs(_client())
    last = done.data.tags["mimo_l2o.checkpoint"]
    code, err = run_main([*TINY, "learner.train.lr=0.01", f"resume={last}"], workdir, capsys)
    assert code == 2 and "resume: the checkpoint's run had another config: learner.train.lr=0.001" in err
    code, err = run_main([*TINY, "resume=nosuchrun"], workdir, capsys)
    assert code == 2 and "resume: 'nosuchrun' is neither a checkpoint file nor a run with one" in err


# ---------------------------------------------------------------------------------------------
# a SIGTERM during a tracking write, a full disk
# ---------------------------------------------------------------------------------------------
def test_sigterm_during_a_tracking_write_waits_for_the_write_then_closes_the_run(workdir, monkeypatch):
    import mlflow

    from mimo_l2o import jobs
    from mimo_l2o.tracking import Tracker

    client = _client()  # this test's store (an earlier test may have set another as MLflow's default)
    previous = signal.getsignal(signal.SIGTERM)
    jobs.unwind_on_sigterm()
    real = mlflow.MlflowClient.log_batch
    seen = []

    def interrupted(self, run_id, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the write...
        time.sleep(0.05)
        seen.append("written")  # ... which goes on to the end
        return real(self, run_id, *args, **kwargs)

    try:
        with pytest.raises(KeyboardInterrupt, match="terminated by signal"):
            with Tracker("mimo_l2o", "sigterm", {}) as tracker:
                monkeypatch.setattr(mlflow.MlflowClient, "log_batch", interrupted)
                tracker.log_metrics({"train/loss": 1.0}, step=0)
                seen.append("after the write")  # not reached: the signal is acted on once it is done
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == ["written"]
    run = client.get_run(tracker.run_id)
    assert run.info.status == "KILLED" and run.data.metrics["train/loss"] == 1.0
    assert "terminated by signal" in run.data.tags["failure_reason"]


def _tmpfs(path, size: str) -> None:
    """A small tmpfs at ``path`` (root only; skips the test where it cannot be mounted)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({mounted.stderr.decode().strip()[:80]})")


def test_a_full_disk_is_one_line_naming_the_folder_and_nothing_is_half_written(workdir):
    from tests.conftest import run_app

    full = workdir / "full"
    _tmpfs(full, "200k")
    try:
        proc = run_app("experiment=debug", f"cache_dir={full / 'cache'}", cwd=workdir)
        # one line (after MLflow's creating the store, in a fresh working folder)
        lines = [x for x in proc.stderr.strip().splitlines() if "mlflow.store.db.utils" not in x]
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
        (line,) = lines
        assert line.startswith(f"error: {full / 'cache' / 'networks'}: no space left on the device")
        assert "needs about" in line and "MB free" in line
        assert not [p for p in full.rglob("*") if p.name.endswith((".pt", ".tmp"))]  # nothing half-written
        (run,) = _all_runs(_client())
        assert run.info.status == "FAILED" and "no space left" in run.data.tags["failure_reason"]
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)
