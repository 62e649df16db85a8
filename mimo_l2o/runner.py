"""The one runner: sample → label → train → evaluate → log.

It never branches on the paper: every part is looked up in its registry by the name its config
gives, the learner declares what it needs, and :func:`build_parts` refuses an impossible
combination with one line before any work. Each stage is a function of its config and a seed,
cached on disk under a key of exactly that config (:mod:`mimo_l2o.cache`), so a sweep over
learners samples and labels its datasets once.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

import mimo_l2o
from mimo_l2o import registry
from mimo_l2o.cache import Cache
from mimo_l2o.components import Network, Objective, Precoder, Scenario, Solver
from mimo_l2o.config import RunConfig, flatten, resolve_device, validate
from mimo_l2o.errors import ConfigError
from mimo_l2o.evaluation import cdf_figure, close, time_per_sample_ms
from mimo_l2o.learner import Learner, LearnerSpec, Policy
from mimo_l2o.problem import PowerControlProblem
from mimo_l2o.tracking import Tracker, parent_run_id
from mimo_l2o.training import fit

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
STORAGE_DTYPE = torch.float32  # sampled networks are stored in float32; problems are built in float64


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from the run's seed and the stage (``derive_seed(7, "train")``): SHA-256 of the
    parts as a JSON list, so neither types nor boundaries between parts can collide."""
    digest = hashlib.sha256(json.dumps(list(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(*parts: Any) -> torch.Generator:
    """A CPU generator seeded from ``parts`` (same data on any machine)."""
    return torch.Generator().manual_seed(derive_seed(*parts))


# ---------------------------------------------------------------------------------------------
# Parts and their compatibility
# ---------------------------------------------------------------------------------------------
@dataclass
class Parts:
    scenario: Scenario
    precoder: Precoder
    objective: Objective
    solver: Solver
    learner_cls: type[Learner]
    baselines: dict[str, Solver]


def build_parts(run: RunConfig) -> Parts:
    """Instantiate the five parts and check they fit together; raises :class:`ConfigError`."""
    scenario = registry.SCENARIOS.build(run.scenario)
    precoder = registry.PRECODERS.build(run.precoder)
    objective = registry.OBJECTIVES.build(run.objective)
    solver = registry.SOLVERS.build(run.solver)
    learner_cls = registry.LEARNERS.get(run.learner.name)
    s, p, o, v, lname = scenario.name, precoder.name, objective.name, solver.name, learner_cls.name

    if not precoder.accepts(scenario.tensors):
        raise ConfigError(
            "precoder",
            f"precoder={p} needs {', '.join(precoder.requires)}, which scenario={s} does not sample",
        )
    for part, family in (
        ("objective", objective.family),
        ("solver", solver.family),
        ("learner", learner_cls.family),
    ):
        if family != precoder.family:
            raise ConfigError(
                part, f"{part} works on {family} problems but precoder={p} makes {precoder.family}"
            )
    if solver.objectives is not None and o not in solver.objectives:
        raise ConfigError(
            "solver", f"solver={v} cannot solve objective={o}; it solves: {', '.join(solver.objectives)}"
        )
    if learner_cls.requires_labels and not solver.gives_labels:
        labellers = [
            n
            for n in registry.SOLVERS.names()
            if registry.SOLVERS.get(n).gives_labels and o in (registry.SOLVERS.get(n).objectives or ())
        ]
        raise ConfigError(
            "solver",
            f"learner={lname} trains on labels but solver={v} gives none; use one of: {', '.join(labellers)}",
        )
    lacking = [i for i in learner_cls.inputs if i not in scenario.provides]
    if lacking:
        raise ConfigError(
            "learner",
            f"learner={lname} needs input {', '.join(lacking)}, which scenario={s} cannot provide "
            f"(it provides: {', '.join(scenario.provides) or 'nothing'})",
        )
    batch = run.learner.train.batch_size
    if batch > run.data.num_train:
        raise ConfigError(
            "learner.train.batch_size",
            f"{batch} is larger than the training set (data.num_train={run.data.num_train})",
        )
    clash = [n for n in run.eval.baselines if n == v]
    if clash:
        raise ConfigError(
            "eval.baselines", f"'{v}' is the reference solver (solver={v}); list only other solvers"
        )
    baselines = {
        name: registry.SOLVERS.build(registry.SOLVERS.get(name).Config(name=name))
        for name in run.eval.baselines
    }
    return Parts(scenario, precoder, objective, solver, learner_cls, baselines)


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------
class Data:
    """Sampled networks, problems and solver labels of every split, through the cache."""

    def __init__(self, run: RunConfig, parts: Parts, cache: Cache, device: torch.device, progress: bool):
        self.run, self.parts, self.cache, self.device, self.progress = run, parts, cache, device, progress
        self.keys: dict[str, str] = {}
        self.sizes = {"train": run.data.num_train, "val": run.data.num_val, "test": run.data.num_test}
        self._networks: dict[str, Network] = {}
        self._problems: dict[str, PowerControlProblem] = {}

    def network_spec(self, split: str) -> dict[str, Any]:
        return {
            "stage": "network",
            "scenario": self.run.scenario,
            "scenario_version": self.parts.scenario.version,
            "split": split,
            "num_samples": self.sizes[split],
        }

    def _stored(self, net: Network) -> Network:
        """What the cache keeps of sampled networks: the scenario's declared tensors, in float32."""
        kept = {k: v for k, v in net.tensors.items() if k in self.parts.scenario.tensors}
        return Network(kept, net.params).to(dtype=STORAGE_DTYPE)

    def network(self, split: str) -> Network:
        """Stage *sample*: the split's networks (CPU, stored as float32)."""
        if split not in self._networks:
            n, seed = self.sizes[split], self.run.scenario.seed

            def sample() -> dict[str, Any]:
                # chunk by chunk from one generator: the same samples as one draw (scenarios draw
                # fixed per-sample blocks), with float64 only one chunk at a time
                gen, size = generator(seed, "network", split), self.run.data.chunk_size
                chunks = [
                    self._stored(self.parts.scenario.sample(min(size, n - start), gen))
                    for start in range(0, n, size)
                ]
                return Network.cat(chunks).state()

            state, key = self.cache.get_or_compute("networks", self.network_spec(split), sample)
            self.keys[f"network.{split}"] = key
            self._networks[split] = Network.from_state(state)
        return self._networks[split]

    def problem(self, split: str, index: slice | None = None) -> PowerControlProblem:
        """The precoder's problems for (a slice of) a split, float64 on the run's device.

        Cheap precoders run on the cached networks each time; the problems of ``expensive`` ones
        (Monte-Carlo averages) are computed once, chunk by chunk, and cached.
        """
        if self.parts.precoder.expensive:
            problems = self._cached_problems(split)
            return (problems if index is None else problems[index]).to(self.device)
        net = self.network(split)
        if index is not None:
            net = net.select(index)
        return self.parts.precoder(net.to(self.device, torch.float64))

    def _cached_problems(self, split: str) -> PowerControlProblem:
        if split not in self._problems:
            precoder, net = self.parts.precoder, self.network(split)
            spec = {
                "stage": "problem",
                "network": self.network_spec(split),
                "precoder": self.run.precoder,
                "precoder_version": precoder.version,
            }

            def chunk(start: int, stop: int) -> dict[str, Tensor]:
                problem = precoder(net.select(slice(start, stop)).to(self.device, torch.float64))
                return {k: v.cpu() for k, v in problem.batched_tensors().items()}

            value, key = self.cache.chunked(
                f"problems/{precoder.name}", spec, len(net), self.run.data.chunk_size, chunk, self.progress
            )
            self.keys[f"problem.{split}"] = key
            template = precoder(net.select(slice(0, 1)).to(dtype=torch.float64))
            self._problems[split] = template.with_batched_tensors(value)
        return self._problems[split]

    def labels(self, split: str) -> Tensor:
        """Stage *label*: the solver's decisions for a split (float64, CPU), chunked and resumable."""
        n = self.sizes[split]
        self.network(split)
        spec = {
            "stage": "labels",
            "network": self.network_spec(split),
            "precoder": self.run.precoder,
            "precoder_version": self.parts.precoder.version,
            "objective": self.run.objective,
            "solver": self.run.solver,
            "solver_version": self.parts.solver.version,
        }

        def chunk(start: int, stop: int) -> dict[str, Tensor]:
            problem = self.problem(split, slice(start, stop))
            gen = generator(self.run.scenario.seed, "labels", split, start)
            decision = self.parts.solver.solve(problem, self.parts.objective, gen)
            return {"decision": decision.to(torch.float64).cpu()}

        value, key = self.cache.chunked(
            f"labels/{self.parts.solver.name}", spec, n, self.run.data.chunk_size, chunk, self.progress
        )
        self.keys[f"labels.{split}"] = key
        return value["decision"]

    def inputs(self, split: str, learner: Learner) -> Tensor:
        """The learner's model input for a split: the scenario's features it names, prepared."""
        net = self.network(split)
        return learner.prepare({name: self.parts.scenario.features(net, name) for name in learner.inputs})

    def spec(self) -> LearnerSpec:
        net = self.network("train")
        first = net.select(slice(0, 1))
        features = {n: self.parts.scenario.features(first, n) for n in self.parts.learner_cls.inputs}
        problem = self.parts.precoder(first.to(dtype=torch.float64))
        return LearnerSpec(
            input_shapes={k: tuple(v.shape[1:]) for k, v in features.items()},
            num_vars=problem.num_vars,
            group=problem.group.cpu(),
            budget=problem.budget[0].cpu(),
            problem=problem.to("cpu", torch.float32),
            objective=self.parts.objective,
        )


def _mean_objective(objective: Objective, problem: PowerControlProblem, decision: Tensor) -> Tensor:
    return objective(problem, decision.to(problem.dtype)).mean()


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def run_experiment(cfg: DictConfig) -> float:
    """Run one job from its composed config; returns ``test/objective_ratio``."""
    if threading.current_thread() is threading.main_thread():
        # A terminated job (kill, a cluster's time limit; also in launcher worker processes)
        # unwinds like Ctrl-C, so its MLflow run ends as KILLED instead of staying RUNNING.
        signal.signal(signal.SIGTERM, _terminate)
    run = validate(cfg)
    parts = build_parts(run)
    device = resolve_device(run.device)
    threads = run.num_threads or _parallel_job_threads()
    if threads:
        torch.set_num_threads(threads)
    progress = sys.stderr.isatty() if run.progress is None else bool(run.progress)
    cache = Cache(run.cache_dir)
    parent = parent_run_id()
    tags = {
        "paper": run.paper or "",
        "learner": run.learner.name,
        "scenario": run.scenario.name,
        "precoder": run.precoder.name,
        "objective": run.objective.name,
        "solver": run.solver.name,
        "sweep_id": parent or "",
        "device": str(device),
        "mimo_l2o_version": mimo_l2o.__version__,
    }
    run_name = f"{run.learner.name}-{run.scenario.name}-K{run.scenario.num_users}"
    with Tracker(run.tracking.experiment, run_name, tags, parent) as tracker:
        tracker.log_params(flatten(run))
        metrics = _run(run, parts, cache, device, progress, tracker)
    return metrics["test/objective_ratio"]


def _run(
    run: RunConfig, parts: Parts, cache: Cache, device, progress: bool, tracker: Tracker
) -> dict[str, float]:
    data = Data(run, parts, cache, device, progress)
    objective = parts.objective

    # sample + label
    for split in SPLITS:
        data.network(split)
    labels = {
        split: data.labels(split) for split in SPLITS if split != "train" or parts.learner_cls.requires_labels
    }
    tracker.set_tags({f"cache.{k}": v for k, v in data.keys.items()})
    tracker.log_dict({"cache_dir": str(Path(run.cache_dir).resolve()), "keys": data.keys}, "datasets.json")

    # train
    learner = parts.learner_cls(run.learner, data.spec())
    train_inputs = data.inputs("train", learner)
    model = learner.build_model(train_inputs, generator(run.seed, "init"))
    finalize = learner.finalize().to(device)
    train_data = {"inputs": train_inputs}
    val_data = {"inputs": data.inputs("val", learner)}
    if learner.requires_labels:
        train_data["labels"] = labels["train"].float()
        val_data["labels"] = labels["val"].float()
    if learner.uses_problems:  # float32 copies for training on the objective
        for split, batch in (("train", train_data), ("val", val_data)):
            batch.update(learner.problem_tensors(data.problem(split).to("cpu", torch.float32)))
    val_problem = data.problem("val")
    val_reference = _mean_objective(objective, val_problem, labels["val"].to(device))
    val_inputs = val_data["inputs"].to(device)

    def val_objective_ratio(trained) -> float:
        # the network's own decision (raw_output), made final: a learner's test-time extras (the GNN's
        # refinement steps, the position LSTM's pilot averaging) would multiply the cost of every epoch
        with torch.no_grad():
            raw = learner.raw_output(trained, val_inputs)
            decision = val_problem.project(finalize(raw).to(torch.float64))
        return float(_mean_objective(objective, val_problem, decision) / val_reference)

    summary = fit(
        learner,
        model,
        train_data,
        val_data,
        device,
        generator(run.seed, "shuffle"),
        val_objective_ratio=val_objective_ratio,
        on_epoch=lambda epoch, m: tracker.log_metrics(m, step=epoch),
        checkpoint=_output_dir() / "checkpoints" / "best.pt",
        progress=progress,
    )
    log.info(
        "trained %d epochs (best %d) in %.1f s",
        summary["epochs"],
        summary["best_epoch"],
        summary["train_time_s"],
    )

    # evaluate
    metrics, per_sample, per_user = evaluate(
        run, parts, data, learner, model, finalize, labels["test"], device
    )
    metrics.update({f"train/{k}": float(v) for k, v in {**summary, **learner.summary()}.items()})
    tracker.log_metrics(metrics)
    fig = cdf_figure(
        per_sample,
        objective.label,
        f"{run.scenario.name}, K={run.scenario.num_users}: {run.data.num_test} test samples",
    )
    tracker.log_figure(fig, "cdf_objective.png")
    close(fig)
    if per_user:
        fig = cdf_figure(
            {name: se.flatten() for name, se in per_user.items()},
            "SE per user [bit/s/Hz]",
            f"{run.scenario.name}, {run.objective.name}: {per_user[learner.name].numel()} users",
        )
        tracker.log_figure(fig, "cdf_se_per_user.png")
        close(fig)

    # log the deployable policy
    if run.tracking.log_model:
        example = data.inputs("test", learner)[:5].numpy()
        policy = Policy(copy.deepcopy(model), copy.deepcopy(finalize)).cpu().eval()
        tracker.log_model(policy, example, _pip_requirements(), export=learner.exportable)
    for key in ("test/objective_ratio", "test/objective_learner", "test/objective_solver", "test/speedup"):
        log.info("%s = %.4f", key, metrics[key])
    return metrics


def evaluate(
    run: RunConfig,
    parts: Parts,
    data: Data,
    learner: Learner,
    model: torch.nn.Module,
    finalize: torch.nn.Module,
    solver_decisions: Tensor,
    device: torch.device,
) -> tuple[dict[str, float], dict[str, Tensor], dict[str, Tensor]]:
    """The metric contract on the test set; per-sample objectives and (when the objective has them)
    per-user SEs of every scheme, for the CDF figures."""
    objective, solver = parts.objective, parts.solver
    problem = data.problem("test")
    inputs = data.inputs("test", learner).to(device)
    model.eval()
    with torch.no_grad():
        final = finalize(model(inputs))
        # the learner's own decision against the budgets in its own precision ...
        violation = float(problem.to(dtype=final.dtype).constraint_violation(final).max())
        # ... then evaluated in float64, where float32 budgets may exceed the true ones by a rounding
        # (float32(0.1) > 0.1): the projection only removes that rounding
        decision = problem.project(final.to(torch.float64))
        decisions = {learner.name: decision, solver.name: solver_decisions.to(device)}
        for name, baseline in parts.baselines.items():
            d = baseline.solve(problem, objective, generator(run.scenario.seed, "baseline", name))
            decisions[name] = d.to(torch.float64)
        per_sample = {name: objective(problem, d) for name, d in decisions.items()}
        mean = {k: float(v.mean()) for k, v in per_sample.items()}
        metrics = {
            "test/objective_learner": mean[learner.name],
            "test/objective_solver": mean[solver.name],
            "test/objective_ratio": mean[learner.name] / mean[solver.name],
            "test/constraint_violation": violation,
        }
        for name in parts.baselines:
            metrics[f"test/objective_{name}"] = mean[name]
        per_user = {name: objective.per_user(problem, d) for name, d in decisions.items()}
        if all(v is not None for v in per_user.values()):
            metrics.update(per_user_metrics(per_user, learner.name, solver.name))
        else:
            per_user = {}
        if learner.reports_raw:
            raw_feasible = problem.project(learner.raw_output(model, inputs).to(torch.float64))
            metrics["test/objective_ratio_raw"] = (
                float(objective(problem, raw_feasible).mean()) / mean[solver.name]
            )

        n = min(run.eval.timing_samples, len(inputs))
        timed_problem, timed_inputs = problem[:n], inputs[:n]
        policy = Policy(model, finalize)
        repeats, budget = run.eval.timing_repeats, run.eval.timing_budget_s
        metrics["test/time_learner_ms"] = time_per_sample_ms(
            lambda: policy(timed_inputs), n, device, repeats, budget
        )
        metrics["test/time_solver_ms"] = time_per_sample_ms(
            lambda: solver.solve(timed_problem, objective), n, device, repeats, budget
        )
    metrics["test/speedup"] = metrics["test/time_solver_ms"] / metrics["test/time_learner_ms"]
    return metrics, per_sample, per_user


def per_user_metrics(per_user: dict[str, Tensor], learner: str, solver: str) -> dict[str, float]:
    """From each scheme's per-user SE ``[samples, users]``: ``test/mse_se`` (mean over samples and users
    of the squared difference between the learner's and the solver's SE: the "MSE of SEs" of
    Sanguinetti et al. 2018), and per scheme the mean and the 5th percentile of the per-user SE
    (``test/se_mean_<name>``, ``test/se_p5_<name>``, with ``learner``/``solver`` for the two)."""
    out = {"test/mse_se": float((per_user[learner] - per_user[solver]).square().mean())}
    for name, se in per_user.items():
        tag = "learner" if name == learner else "solver" if name == solver else name
        flat = se.flatten().double()
        out[f"test/se_mean_{tag}"] = float(flat.mean())
        out[f"test/se_p5_{tag}"] = float(torch.quantile(flat.cpu(), 0.05))
    return out


def _parallel_job_threads() -> int:
    """Threads per job when a sweep runs jobs in parallel processes (joblib), so that the jobs
    share the cores instead of oversubscribing them; 0 (torch's default) otherwise."""
    try:
        from hydra.core.hydra_config import HydraConfig

        launcher = HydraConfig.get().launcher
    except ValueError:
        return 0
    if "Joblib" not in str(launcher.get("_target_", "")):
        return 0
    cores = os.cpu_count() or 1
    n_jobs = int(launcher.get("n_jobs") or -1)
    n_jobs = cores + 1 + n_jobs if n_jobs < 0 else n_jobs  # joblib: -1 means all cores
    return max(1, cores // max(1, min(n_jobs, cores)))


def _output_dir() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path.cwd()


def _pip_requirements() -> list[str]:
    import mlflow
    import numpy

    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={numpy.__version__}",
        f"mlflow=={mlflow.__version__}",
        f"mimo_l2o=={mimo_l2o.__version__}",
    ]
