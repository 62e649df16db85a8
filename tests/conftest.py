"""Shared fixtures: every test that runs the app gets its own working directory, MLflow store
and dataset cache, and tiny sizes."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Tests started inside a Slurm allocation (srun make test) are not Slurm jobs themselves: without this,
# every run would take the allocation's CPUs, tag itself with its job and look for a run to reopen.
for _name in [n for n in os.environ if n.startswith("SLURM_") and n != "SLURM_CONF"]:
    del os.environ[_name]

# Tiny but complete: every stage runs, in seconds.
TINY = [
    "data.num_train=1000",
    "data.num_val=300",
    "data.num_test=400",
    "data.chunk_size=400",
    "learner.train.max_epochs=3",
    "learner.train.batch_size=200",
    "eval.timing_samples=100",
    "eval.timing_repeats=2",
    "num_threads=1",
]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working directory with its own SQLite MLflow store and cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MIMO_L2O_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def import_unwired(modules: dict):
    """Import modules whose parts have no YAML in ``conf/`` yet, and afterwards remove what they
    registered, so that the registry-equals-YAML test of other files in this process still holds.

    ``modules`` maps a module name to ``(registry, names it registers)``; a generator for a
    module-scoped fixture: yields the imported modules in order.
    """
    fresh = [m for m in modules if m not in sys.modules]
    yield tuple(importlib.import_module(m) for m in modules)
    for module in fresh:  # leave the registries as the file found them
        registry, names = modules[module]
        for name in names:
            registry._classes.pop(name, None)
        sys.modules.pop(module, None)


def app_env(env: dict | None = None) -> dict[str, str]:
    """The environment an app started by a test gets: this one, one OpenMP thread, ``env`` on top, and
    no ``HYDRA_FULL_ERROR`` (the app's own errors are one line)."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full.pop("HYDRA_FULL_ERROR", None)
    return full


def readme_block(marker: str) -> str:
    """The code block after ``<!-- marker ... -->`` in README.md, without its language tag."""
    text = (REPO / "README.md").read_text()
    block = text[text.index(f"<!-- {marker}") :].split("```", 2)[1]
    tag, _, body = block.partition("\n")
    return body.strip("\n") if tag.strip() else block.strip("\n")


def run_app(
    *overrides: str, cwd: Path, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python -m mimo_l2o <overrides>`` in ``cwd``; returns the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "mimo_l2o", *overrides],
        cwd=cwd,
        env=app_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def isolated_env(work: Path) -> dict[str, str]:
    """Environment for an app run with its own SQLite MLflow store and cache under ``work``."""
    return {
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "MIMO_L2O_CACHE_DIR": str(work / "cache"),
    }


def app_run(work: Path, overrides: list[str]):
    """``python -m mimo_l2o <overrides>`` in ``work`` with its own store and cache (it must succeed):
    ``(env, MLflow client, the one run it logged)``."""
    import mlflow

    env = isolated_env(work)
    proc = run_app(*overrides, cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("mimo_l2o").experiment_id])
    return env, client, run


def assert_contract_metrics(client, run, extra=(), baselines=("equal", "random")) -> None:
    """The run logged the metric contract's ratio and speed-up, each baseline's objective and each of
    the ``extra`` keys as finite numbers, a feasible learner (``test/constraint_violation`` 0) and the
    two CDF figures."""
    import math

    metrics = run.data.metrics
    keys = ("test/objective_ratio", "test/speedup", *(f"test/objective_{b}" for b in baselines), *extra)
    for key in keys:
        assert key in metrics and math.isfinite(metrics[key]), key
    assert metrics["test/constraint_violation"] == 0.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"cdf_objective.png", "cdf_se_per_user.png", "cdf_se_error.png"} <= artifacts
    for key in ("test/time_problem_iqr_ms", "test/time_solver_iqr_ms", "test/time_learner_iqr_ms"):
        assert metrics[key] >= 0, key


def rebuild_data(env: dict[str, str], overrides: list[str]):
    """The run's config, parts and cached data (CPU) as an app run with ``env`` and ``overrides`` left
    them: ``(run config, parts, Data)``."""
    from mimo_l2o.__main__ import composed
    from mimo_l2o.cache import Cache
    from mimo_l2o.data import Data
    from mimo_l2o.parts import build_parts

    os.environ["MIMO_L2O_CACHE_DIR"] = env["MIMO_L2O_CACHE_DIR"]
    try:
        run = composed(*overrides)
    finally:
        del os.environ["MIMO_L2O_CACHE_DIR"]
    parts = build_parts(run)
    data = Data(run, parts, Cache(env["MIMO_L2O_CACHE_DIR"]), torch.device("cpu"), progress=False)
    return run, parts, data


def logged_test_decisions(env: dict[str, str], overrides: list[str], run):
    """The logged policy of ``run`` (``mlflow.pytorch.load_model``) on the run's cached test set:
    ``(parts, Data, test problem, feasible float64 decisions)``."""
    import mlflow.pytorch

    policy = mlflow.pytorch.load_model(run.data.tags["mimo_l2o.model_uri"])
    cfg, parts, data = rebuild_data(env, overrides)
    learner = parts.learner_cls(cfg.learner, data.spec())
    problem = data.problem("test")
    with torch.no_grad():
        p = problem.project(policy(data.inputs("test", learner)).double())
    return parts, data, problem, p


def free_port(pair: bool = False) -> int:
    """A free TCP port (and, with ``pair``, the one after it free too)."""
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not pair or port >= 65535:
            return port
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


# ---------------------------------------------------------------------------------------------
# A local Slurm cluster (scripts/local_slurm.sh) for the tests marked ``slurm``
# ---------------------------------------------------------------------------------------------
def slurm_missing() -> str | None:
    """Why the local Slurm cluster cannot start here, or ``None``."""
    import shutil

    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(b) is None]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing; .ci/run installs slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "the local Slurm cluster runs its daemons as root"
    return None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A single-node Slurm cluster for the session: ``{"SLURM_CONF": ...}`` to add to a job's environment
    (skips the test where Slurm is not installed or this is not root)."""
    reason = slurm_missing()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    script = REPO / "scripts" / "local_slurm.sh"
    port = free_port(pair=True)  # its own (each xdist worker may start one)
    env = {**os.environ, "SLURM_LOCAL_PORT": str(port)}
    started = subprocess.run([script, "start", folder], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    conf = str(folder / "slurm.conf")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf  # for squeue/scancel from the tests themselves
    yield {"SLURM_CONF": conf}
    subprocess.run([script, "stop", folder], capture_output=True, timeout=60)
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


# ---------------------------------------------------------------------------------------------
# A PostgreSQL-backed MLflow tracking server (scripts/tracking_server.sh)
# ---------------------------------------------------------------------------------------------
def postgres_missing() -> str | None:
    """Why the tracking server on PostgreSQL cannot start here, or ``None``."""
    import glob
    import importlib.util
    import pwd

    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "PostgreSQL is not installed (.ci/run installs Debian's postgresql)"
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed (the server extra: pip install -e '.[server]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no postgres user to run the database as (root cannot)"
    return None


class TrackingServer:
    """``scripts/tracking_server.sh`` on loopback ports of its own, with its data in ``folder``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port, self.pgport = free_port(), free_port()
        self.uri = f"http://127.0.0.1:{self.port}"

    def _script(self, action: str) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "PYTHON": sys.executable,
            "TRACKING_PORT": str(self.port),
            "PGPORT": str(self.pgport),
        }
        script = REPO / "scripts" / "tracking_server.sh"
        return subprocess.run(
            [script, action, self.folder], env=env, capture_output=True, text=True, timeout=300
        )

    def start(self) -> None:
        started = self._script("start")
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"export MLFLOW_TRACKING_URI={self.uri}"

    def stop(self) -> None:
        self._script("stop")


@pytest.fixture
def tracking_server():
    """A running tracking server on PostgreSQL (skips the test where PostgreSQL is not installed), its
    data in a folder the database's user can reach (pytest's are root's own)."""
    import shutil
    import tempfile

    reason = postgres_missing()
    if reason:
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="mimo-l2o-tracking-"))
    folder.chmod(0o755)
    server = TrackingServer(folder)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


# The outcome of every test that needs a local cluster or server, by name, at the end of the run (CI's
# log shows that they ran and passed, not only that nothing failed).
_SERVICE_TESTS: dict[str, str] = {}


def pytest_runtest_logreport(report):
    if "slurm" in report.keywords or "tracking_server" in report.nodeid:
        if report.when == "call" or report.outcome != "passed":
            reason = (
                f" ({report.longrepr[2]})" if report.skipped and isinstance(report.longrepr, tuple) else ""
            )
            _SERVICE_TESTS[report.nodeid] = f"{report.outcome.upper()}{reason}"


def pytest_terminal_summary(terminalreporter):
    if _SERVICE_TESTS:
        terminalreporter.section("tests against a local Slurm cluster and tracking server")
        for nodeid, outcome in sorted(_SERVICE_TESTS.items()):
            terminalreporter.line(f"{outcome} {nodeid}")
