"""The whole spine on tiny sizes: the app's MLflow run carries every contract metric, the
logged model loads back and reproduces the logged objective, the cache is reused, sweeps nest
under one parent, and a real ``mlflow server`` serves the runs over its REST API."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, isolated_env, readme_block, rebuild_data, run_app

CONTRACT = [
    "test/objective_learner",
    "test/objective_solver",
    "test/objective_ratio",
    "test/objective_max_power",
    "test/objective_random",
    "test/time_learner_ms",
    "test/time_solver_ms",
    "test/speedup",
    "test/constraint_violation",
    "test/objective_ratio_raw",
]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One tiny default run; yields (workdir, env, completed process)."""
    work = tmp_path_factory.mktemp("e2e")
    env = isolated_env(work)
    proc = run_app(*TINY, cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, env, proc


def _client(env):
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    return mlflow.MlflowClient()


def _runs(client, experiment="mimo_l2o"):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_run_has_every_contract_metric(default_run):
    work, env, _ = default_run
    (run,) = _runs(_client(env))
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for key in CONTRACT:
        assert key in metrics and math.isfinite(metrics[key]), key
    assert metrics["test/objective_ratio"] == pytest.approx(
        metrics["test/objective_learner"] / metrics["test/objective_solver"], rel=1e-9
    )
    assert metrics["test/speedup"] == pytest.approx(
        metrics["test/time_solver_ms"] / metrics["test/time_learner_ms"], rel=1e-9
    )
    assert metrics["test/constraint_violation"] == 0.0
    # WMMSE beats the heuristics on average (it is a local optimum started at max power)
    assert metrics["test/objective_solver"] >= metrics["test/objective_max_power"]
    assert metrics["test/objective_solver"] > metrics["test/objective_random"]
    assert run.data.params["scenario.num_users"] == "10"
    assert run.data.params["learner.train.optimizer"] == "rmsprop"
    for tag in ("paper", "learner", "scenario", "sweep_id", "cache.network.train", "cache.labels.test"):
        assert tag in run.data.tags, tag
    assert run.data.tags["learner"] == "dnn" and run.data.tags["scenario"] == "gaussian_ic"


def test_per_epoch_metrics_are_logged(default_run):
    _, env, _ = default_run
    client = _client(env)
    (run,) = _runs(client)
    for key in ("train/loss", "val/loss", "val/objective_ratio"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == list(range(len(history)))
        assert 1 <= len(history) <= 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "cdf_objective.png" in artifacts and "datasets.json" in artifacts


def test_logged_model_reproduces_the_logged_objective(default_run):
    """Load the policy back, rebuild the test set from the cache, and recompute the metric."""
    import mlflow.pytorch

    work, env, _ = default_run
    (run,) = _runs(_client(env))
    model = mlflow.pytorch.load_model(run.data.tags["mimo_l2o.model_uri"])
    cfg_run, parts, data = rebuild_data(env, TINY)
    learner = parts.learner_cls(cfg_run.learner, data.spec())
    with torch.no_grad():
        decision = model(data.inputs("test", learner)).double()
    value = float(parts.objective(data.problem("test"), decision).mean())
    assert value == pytest.approx(run.data.metrics["test/objective_learner"], rel=1e-9)
    # the input example travels with the model
    example = json.loads((Path(model_dir(run)) / "input_example.json").read_text())
    rows = example["inputs"] if isinstance(example, dict) else example
    assert torch.tensor(rows).shape == (5, 100)  # K² = 100 channel magnitudes per sample


def model_dir(run):
    import mlflow

    return mlflow.artifacts.download_artifacts(run.data.tags["mimo_l2o.model_uri"])


def test_second_run_reuses_the_cached_datasets(default_run):
    work, env, first = default_run
    assert "computing" in first.stdout + first.stderr
    proc = run_app(*TINY, "learner.train.lr=0.01", "learner.hidden=[32,32]", cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = proc.stdout + proc.stderr
    assert log.count("reusing the cached entry") >= 5  # 3 networks + val/test labels (+ train labels)
    assert "computing" not in log
    client = _client(env)
    runs = _runs(client)
    assert len(runs) == 2
    keys = [{k: v for k, v in r.data.tags.items() if k.startswith("cache.")} for r in runs]
    assert keys[0] == keys[1]


def test_multirun_nests_children_under_one_parent(workdir):
    proc = run_app("-m", "scenario.num_users=4,6", "scenario.p_max=1.0,2.0", *TINY, cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = _client({"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]})
    runs = _runs(client)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0].info.run_id
    assert parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent}
    assert {r.data.tags["sweep_id"] for r in children} == {parent}
    assert sorted(r.data.params["scenario.num_users"] for r in children) == ["4", "4", "6", "6"]
    assert all(r.info.status == "FINISHED" for r in children)
    # siblings are named apart by the swept values the base name lacks (K is in it), constant
    # overrides (the tiny sizes) are left out
    names = sorted(r.info.run_name for r in children)
    assert names == [f"dnn-gaussian_ic-K{k} scenario.p_max={p}" for k in (4, 6) for p in ("1.0", "2.0")], (
        names
    )


def test_joblib_multirun_loses_no_run(workdir):
    proc = run_app(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "scenario.num_users=4,6,8",
        *TINY,
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = _runs(_client({"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]}))
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(int(r.data.params["scenario.num_users"]) for r in children) == [4, 6, 8]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len(runs) == 4
    for r in children:
        assert "test/objective_ratio" in r.data.metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_server_serves_the_run(default_run):
    work, env, _ = default_run
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            env["MLFLOW_TRACKING_URI"],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        with urllib.request.urlopen(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=mimo_l2o", timeout=10
        ) as r:
            exp_id = json.load(r)["experiment"]["experiment_id"]
        req = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [exp_id]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            runs = json.load(r)["runs"]
        assert runs
        metrics = {m["key"]: m["value"] for m in runs[-1]["data"]["metrics"]}
        for key in CONTRACT:
            assert key in metrics
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_run_that_raises_ends_failed_with_the_reason(workdir):
    """A failure after the run started (training diverges at lr = 1e30) ends its run FAILED with the
    reason, and the command prints that one line (exit code 1), not a traceback."""
    proc = run_app(*TINY, "learner.train.lr=1e30", cwd=workdir)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: training diverged") and "learner.train.lr" in last
    assert "Traceback" not in proc.stderr
    (run,) = _runs(_client({"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]}))
    assert run.info.status == "FAILED"
    assert "diverged" in run.data.tags["failure_reason"]


def test_a_terminated_run_ends_killed(workdir):
    """SIGTERM (a kill, a cluster's time limit) during labelling leaves no run RUNNING."""
    import signal

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    big = ["data.num_train=600000", "data.chunk_size=10000", "num_threads=1", "scenario.num_users=20"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mimo_l2o", *big],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while not list((workdir / "cache").glob("labels/wmmse/*.chunks/*.pt")):
        assert proc.poll() is None and time.time() < deadline, "labelling never started"
        time.sleep(0.2)
    # The client opens the store only now: the app created it (under its file lock) before it
    # started labelling; a client opened earlier would race it to create MLflow's tables.
    client = _client({"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]})
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    (run,) = _runs(client)
    # KILLED as a rule; FAILED if the signal landed inside a library that wrapped the interrupt
    assert run.info.status in ("KILLED", "FAILED")
    assert run.data.tags["failure_reason"]


def test_the_record_reads_well_and_the_policy_is_usable_from_the_readme(default_run):
    """MLflow's context tags, the Dataset column, the config and log as artifacts, a model named after
    its run with installable requirements and its input described, and ``mimo_l2o.inputs`` building
    that input for new networks (here the test set's own seed: the logged objective comes back)."""
    import mlflow

    import mimo_l2o
    from mimo_l2o.data import derive_seed

    work, env, _ = default_run
    client = _client(env)
    run = min(_runs(client), key=lambda r: r.info.start_time)  # the default run (others may follow)
    tags = run.data.tags
    assert tags["mlflow.user"] and tags["mlflow.source.name"].endswith("__main__.py")
    assert len(tags.get("mlflow.source.git.commit", "")) == 40  # run from this repository's clone
    datasets = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert "network.test (400 samples)" in datasets and "labels.train (1,000 samples)" in datasets
    test_set = datasets["network.test (400 samples)"]
    assert tags["cache.network.test"].startswith(test_set.dataset.digest)
    assert [t.value for t in test_set.tags] == ["test"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"hydra", "run.log"} <= artifacts
    hydra = {a.path for a in client.list_artifacts(run.info.run_id, "hydra")}
    assert {"hydra/config.yaml", "hydra/overrides.yaml"} <= hydra
    info = mlflow.models.get_model_info(tags["mimo_l2o.model_uri"])
    assert info.name == "dnn-gaussian_ic-K10"
    assert info.metadata["input_features"] == ["problem_gains"] and info.metadata["input_shape"] == [
        "batch",
        100,
    ]
    requirements = (Path(model_dir(run)) / "requirements.txt").read_text()
    assert "torch==" in requirements and "mimo_l2o" not in requirements

    policy = mlflow.pytorch.load_model(tags["mimo_l2o.model_uri"])
    os.environ["MIMO_L2O_CACHE_DIR"] = env["MIMO_L2O_CACHE_DIR"]  # the config names the cache
    try:
        new = mimo_l2o.inputs(run.info.run_id, num_samples=400, seed=derive_seed(0, "network", "test"))
    finally:
        del os.environ["MIMO_L2O_CACHE_DIR"]
    with torch.no_grad():
        decision = new.problem.project(policy(new.x).double())
    value = float(new.objective(new.problem, decision).mean())
    assert value == pytest.approx(run.data.metrics["test/objective_learner"], rel=1e-6)


def test_the_readmes_policy_snippet_runs_as_written_from_the_runs_folder(default_run):
    work, env, _ = default_run
    client = _client(env)
    run = min(_runs(client), key=lambda r: r.info.start_time)
    code = readme_block("policy-snippet").replace("<run id>", run.info.run_id)
    # the snippet names the store itself (the run's folder's mlflow.db)
    clean = {k: v for k, v in {**os.environ, **env}.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-c", code], cwd=work, env=clean, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout.strip().splitlines()[-1]
    assert printed.startswith("tensor(") and "grad_fn" not in printed
    value = float(printed.removeprefix("tensor(").split(",")[0].rstrip(")"))
    # the mean sum rate of 100 new networks of the same scenario: near the run's own test mean
    assert value == pytest.approx(run.data.metrics["test/objective_learner"], rel=0.25)


def test_a_run_without_a_policy_or_not_in_the_store_is_one_line(default_run, tmp_path):
    import mimo_l2o
    from mimo_l2o.tracking import Tracker

    work, env, _ = default_run
    client = _client(env)
    with Tracker("mimo_l2o", "no model", {}) as tracker:
        pass
    with pytest.raises(mimo_l2o.NoPolicy) as err:
        mimo_l2o.policy(tracker.run_id)
    assert "logged no policy" in str(err.value) and "tracking.log_model=true" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(mimo_l2o.NoPolicy) as err:
        mimo_l2o.inputs("0123456789abcdef0123456789abcdef")
    assert "is not in the tracking store" in str(err.value) and env["MLFLOW_TRACKING_URI"] in str(err.value)
    assert client.get_run(tracker.run_id).info.status == "FINISHED"
