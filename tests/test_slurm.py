"""Against a real Slurm cluster (``scripts/local_slurm.sh`` starts one on this machine; skipped where
Slurm is not installed): the README's sweep command as written; sharded labelling as Slurm jobs giving
the unsharded entry byte for byte, no chunk computed twice; a requeued job continuing its run; a sweep
logging to a tracking server on PostgreSQL (``scripts/tracking_server.sh``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import app_env, isolated_env, readme_block, run_app

pytestmark = pytest.mark.slurm


def run_shell(block: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``block`` through bash, with this interpreter's ``python`` first on the PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    full = app_env({"PATH": path, **env})
    command = ["bash", "-euo", "pipefail", "-c", block]
    return subprocess.run(command, cwd=cwd, env=full, capture_output=True, text=True, timeout=600)


def sweep_runs(tracking_uri: str):
    """(parent, children) of the one sweep in the store."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("mimo_l2o").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, children


def test_the_readme_slurm_sweep_runs_as_written(slurm_cluster, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    env = {**slurm_cluster, "SHARED": str(shared), **isolated_env(tmp_path)}
    env.pop("MIMO_L2O_CACHE_DIR")  # the README's cache: .cache/mimo_l2o under the shared folder
    done = run_shell(readme_block("slurm-sweep"), tmp_path, env)
    assert done.returncode == 0, done.stderr[-3000:]
    client, parent, children = sweep_runs(env["MLFLOW_TRACKING_URI"])
    assert parent.info.status == "FINISHED"
    assert sorted(c.data.params["scenario.num_users"] for c in children) == ["4", "8"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert all(0 < c.data.metrics["test/objective_ratio"] <= 1.0 + 1e-9 for c in children)
    # the jobs ran on the cluster: their folders hold submitit's logs, the cache is under the shared folder
    assert list(shared.glob("multirun/*/*/.submitit/*/*_log.out"))
    assert list((shared / ".cache" / "mimo_l2o" / "networks").glob("*.pt"))
    # a quiet console: one line per state change, no sacct warning
    console = done.stdout + done.stderr
    assert "sacct" not in console
    states = re.findall(r"job #(\d) \(slurm \d+_\d\): (\w+)", console)
    assert ("0", "RUNNING") in states and ("1", "RUNNING") in states
    assert len(states) == len(set(states))  # a state is said once
    assert "2 of 2 runs finished" in console


CELLULAR = [
    "experiment=debug",
    "scenario=cellular",
    "precoder=mmmse",  # expensive: its problems are a cached, chunked stage too
    "data.num_train=200",
    "data.num_val=60",
    "data.num_test=60",
    "data.chunk_size=20",
    "num_threads=1",
]


def computed_chunks(text: str) -> list[tuple[str, str]]:
    """(entry key, chunk number) of every ``chunk i/n computed`` line of a log."""
    return re.findall(r"\[([0-9a-f]{8})\]: chunk (\d+)/\d+ computed", text)


def entries(cache: Path) -> dict[str, bytes]:
    return {str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.rglob("*.pt"))}


def test_sharded_labelling_as_four_slurm_jobs_equals_one_run_byte_for_byte(slurm_cluster, tmp_path):
    env = {**slurm_cluster, **isolated_env(tmp_path)}
    sharded = tmp_path / "sharded"
    done = run_app(
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1",
        *CELLULAR,
        f"cache_dir={sharded}",
        "data.shards=4",
        "data.shard=range(4)",
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    logs = "".join(p.read_text() for p in tmp_path.glob("multirun/*/*/*/*.log"))
    assert len(list(tmp_path.glob("multirun/*/*/*/*.log"))) == 4
    computed = computed_chunks(logs)
    repeated = [chunk for chunk, n in Counter(computed).items() if n > 1]
    assert computed and not repeated  # no chunk computed twice
    for shard in range(1, 5):
        assert f"shard {shard} of 4 took chunks" in logs

    one = tmp_path / "one"
    alone = run_app(*CELLULAR, f"cache_dir={one}", "data.shard=0", "data.shards=1", cwd=tmp_path, env=env)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert sorted(computed) == sorted(computed_chunks(_log_of(tmp_path)))  # the same chunks, once each
    sharded_entries, one_entries = entries(sharded), entries(one)
    assert set(sharded_entries) == set(one_entries) and len(one_entries) >= 9  # 3 networks, problems, labels
    assert sharded_entries == one_entries  # byte for byte
    assert not list(sharded.rglob("*.chunks/*.pt"))  # every entry assembled


def _log_of(work: Path) -> str:
    """The log of the single run under ``work/outputs``."""
    return "".join(p.read_text() for p in work.glob("outputs/*/*/*.log"))


# the Sun 2018 DNN on a small interference channel, long enough (about a second per epoch) to be
# requeued mid-training
TRAINING = [
    "data.num_train=6000",
    "data.num_val=300",
    "data.num_test=300",
    "data.chunk_size=6000",
    "learner.train.max_epochs=16",
    "learner.train.batch_size=50",
    "eval.timing_samples=50",
    "eval.timing_repeats=1",
    "num_threads=1",
    "tracking.log_model=false",
]


def test_a_requeued_job_continues_its_run_and_ends_where_an_uninterrupted_one_ends(slurm_cluster, tmp_path):
    import time

    import torch

    env = {**slurm_cluster, **isolated_env(tmp_path)}
    full = app_env(env)
    command = [
        sys.executable,
        "-m",
        "mimo_l2o",
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1",
    ]
    sweep = subprocess.Popen(
        [*command, *TRAINING],
        cwd=tmp_path,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        epoch, deadline = -1, time.monotonic() + 300
        while epoch < 2 and time.monotonic() < deadline:  # three epochs done: requeue it, as preemption does
            time.sleep(0.2)
            for last in tmp_path.glob("multirun/*/*/0/checkpoints/last.pt"):
                try:
                    epoch = torch.load(last, weights_only=False)["epoch"]
                except Exception:  # being replaced
                    pass
        assert epoch >= 2, "training did not reach its third epoch"
        (job,) = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        requeued = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        assert requeued.returncode == 0, requeued.stderr
        out, _ = sweep.communicate(timeout=400)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, out[-3000:]
    client, parent, children = sweep_runs(env["MLFLOW_TRACKING_URI"])
    (run,) = children  # one run, not a KILLED one and a new one
    assert run.info.status == "FINISHED" and parent.info.status == "FINISHED"
    assert run.data.tags["mimo_l2o.slurm_restarts"] == "1" and "failure_reason" not in run.data.tags
    log = "".join(p.read_text() for p in tmp_path.glob("multirun/*/*/0/*.log"))
    assert "reopened" in log and "resuming training after epoch" in log
    assert "resuming training after epoch 16 of 16" not in log  # it was requeued mid-training

    alone = tmp_path / "alone"
    alone.mkdir()
    done = run_app(*TRAINING, cwd=alone, env=isolated_env(alone))
    assert done.returncode == 0, done.stderr[-3000:]
    import mlflow

    other = mlflow.MlflowClient(isolated_env(alone)["MLFLOW_TRACKING_URI"])
    (reference,) = other.search_runs([other.get_experiment_by_name("mimo_l2o").experiment_id])
    for key in ("test/objective_ratio", "train/best_epoch", "train/epochs", "train/best_val_loss"):
        assert run.data.metrics[key] == reference.data.metrics[key], key
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")]
    steps = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    expected = {m.step: m.value for m in other.get_metric_history(reference.info.run_id, "train/loss")}
    # every epoch in the record, with the uninterrupted run's values (the one in progress may be there twice)
    assert steps == expected and len(losses) >= len(expected)


def test_a_slurm_sweep_logs_to_the_tracking_server_on_postgresql(slurm_cluster, tracking_server, tmp_path):
    import mlflow

    env = {
        **slurm_cluster,
        "MLFLOW_TRACKING_URI": tracking_server.uri,
        "MIMO_L2O_CACHE_DIR": str(tmp_path / "c"),
    }
    done = run_app(
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1",
        "experiment=debug",
        "scenario.num_users=4,6",
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_server.uri)
    assert client._tracking_client.store.__class__.__name__ == "RestStore"
    (experiment,) = [e for e in client.search_experiments() if e.name == "mimo_l2o"]
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert sorted(c.data.params["scenario.num_users"] for c in children) == ["4", "6"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert 0 < child.data.metrics["test/objective_ratio"] <= 1 + 1e-9
        assert (
            len(client.get_metric_history(child.info.run_id, "train/loss")) == 2
        )  # experiment=debug: 2 epochs
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"run.log", "hydra", "cdf_objective.png", "datasets.json"} <= artifacts
        # proxied: the server wrote them to its artifact folder (the shared disk)
        stored = tracking_server.folder / "artifacts"
        assert list(stored.rglob(f"{child.info.run_id}/artifacts/cdf_objective.png"))
    assert "summary.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}
