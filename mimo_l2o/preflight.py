"""Checks before any work, after the config itself is valid: the solvers can solve the scenario's
problems, the machine can hold the run, the cache folder can be written, and the tracking store
answers. Each failure is one :class:`ConfigError` line
naming the key (or ``MLFLOW_TRACKING_URI``) and what to change; nothing is written before they pass.

The memory estimate counts the tensors a run holds at once, measured on one sampled network (its
problem, decision and learner features), times the sizes of the config:

* *datasets*: every split's stored networks (float32), the cached problems of an ``expensive``
  precoder (float64, all splits), and the solvers' decisions (float64: the reference's on val and
  test, the labeller's on train and val for a supervised learner);
* *labelling*: one chunk's problems and :data:`SOLVER_WORKSPACE` times as much for the solver's own
  tensors (the iterates of WMMSE or SCA);
* *training*: the learner's features of train and val (float32) and their float32 copies of the
  labels, and of the problems for a learner that trains on the objective.

It is a lower bound of the run's peak (the Python process, torch and the precoder's Monte-Carlo
workspace come on top), checked against ``max_memory_gb`` (``null``: the memory this machine has
available now).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mimo_l2o import features
from mimo_l2o.components import Network
from mimo_l2o.config import RunConfig
from mimo_l2o.errors import ConfigError, Incompatible, require
from mimo_l2o.parts import Parts
from mimo_l2o.problems import Problem
from mimo_l2o.tracking import check_tracking

SOLVER_WORKSPACE = 8  # a solver's tensors per chunk, in multiples of the chunk's problems
GB = 1e9


def _bytes(tensors) -> int:
    values = tensors.values() if isinstance(tensors, dict) else tensors
    return sum(t.numel() * t.element_size() for t in values)


def available_memory_gb() -> float:
    """Memory available to a new process now (``MemAvailable`` of ``/proc/meminfo``; elsewhere the
    physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB


@dataclass
class Probe:
    """One sampled network of the run's scenario (CPU), its problem and the learner's features."""

    network: Network
    problem: Problem
    features: dict[str, Tensor]


def probe(run: RunConfig, parts: Parts) -> Probe:
    """:class:`Probe` of the run; raises :class:`ConfigError` when one network and its problem cannot
    be allocated."""
    try:
        with torch.no_grad():
            net = parts.scenario.sample(1, torch.Generator().manual_seed(0))
            problem = parts.precoder(net.to(dtype=torch.float64))
            made = features.compute(parts.learner_cls.inputs, parts.scenario, net, lambda: problem)
    except (MemoryError, RuntimeError) as err:
        if "alloc" not in str(err).lower() and not isinstance(err, MemoryError):
            raise
        raise ConfigError(
            "scenario",
            f"one network of scenario={run.scenario.name} and its problem (precoder={run.precoder.name}) "
            "do not fit in this machine's memory",
        ) from None
    return Probe(net, problem, made)


def check_solvers(parts: Parts, sample: Probe) -> None:
    """Every solver of the run (the reference, the labeller, the baselines) can solve the structure of
    the scenario's problems; :class:`Incompatible` (a sweep skips the job) naming the key if not."""
    named = [("solver", parts.solver), ("data.label_solver", parts.labeller)]
    named += [("eval.baselines", b) for b in parts.baselines.values()]
    for key, solver in named:
        why = solver.refuses(sample.problem)
        if why:
            raise Incompatible(
                key,
                f"solver {solver.name} cannot solve the problems of scenario={parts.scenario.name} with "
                f"precoder={parts.precoder.name}: {why}",
            )


def memory_estimate(run: RunConfig, parts: Parts, sample: Probe | None = None) -> dict[str, float]:
    """Bytes the run holds at once, by stage (``datasets``, ``labelling``, ``training``), from one
    sampled network on the CPU (module docstring, :func:`probe`)."""
    sample = sample or probe(run, parts)
    net, problem, made = sample.network, sample.problem, sample.features
    stored = {k: v for k, v in net.tensors.items() if k in parts.scenario.tensors}
    network_b = sum(t.numel() * min(t.element_size(), 4 * (1 + t.is_complex())) for t in stored.values())
    problem_b = _bytes(problem.batched_tensors())
    decision_b = (
        math.prod(problem.decision_shape) * torch.empty((), dtype=problem.decision_dtype).element_size()
    )
    feature_b = _bytes(made) // 2  # float32 copies of float64 features, or float32 features held once
    d = run.data
    everything = d.num_train + d.num_val + d.num_test
    supervised = parts.learner_cls.requires_labels
    labelled = d.num_val + d.num_test + (d.num_train + d.num_val if supervised else 0)
    datasets = everything * network_b + labelled * decision_b
    if parts.precoder.expensive:
        datasets += everything * problem_b
    labelling = (
        min(d.chunk_size, max(d.num_train, d.num_val, d.num_test)) * problem_b * (1 + SOLVER_WORKSPACE)
    )
    trained = d.num_train + d.num_val
    training = trained * (feature_b + (decision_b // 2 if supervised else problem_b // 2))
    return {"datasets": datasets, "labelling": labelling, "training": training}


def check_memory(run: RunConfig, parts: Parts, sample: Probe | None = None) -> None:
    """Refuse a run whose :func:`memory_estimate` exceeds ``max_memory_gb`` (or the available memory),
    naming the size key of its largest stage, the estimate and the limit."""
    estimate = memory_estimate(run, parts, sample)
    total = sum(estimate.values()) / GB
    limit = run.max_memory_gb if run.max_memory_gb is not None else available_memory_gb()
    if total <= limit:
        return
    largest = max(estimate, key=estimate.get)
    key = "data.chunk_size" if largest == "labelling" else "data.num_train"
    stages = ", ".join(f"{k} {v / GB:.3g}" for k, v in estimate.items())
    where = "set" if run.max_memory_gb is not None else "available on this machine"
    raise ConfigError(
        key,
        f"the run needs about {total:.3g} GB ({stages}), more than the {limit:.3g} GB {where}; "
        "use smaller sizes, or max_memory_gb=<GB> to run anyway",
    )


def check_cache_dir(path: str) -> None:
    """The cache folder exists as a writable folder, or can be created (its nearest existing parent is
    a writable folder); nothing is created here."""
    target = Path(path).expanduser().absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    require(existing.is_dir(), "cache_dir", f"{existing} is a file, not a folder")
    require(
        os.access(existing, os.W_OK | os.X_OK),
        "cache_dir",
        f"{existing} is not writable by this user; choose another cache_dir (or MIMO_L2O_CACHE_DIR)",
    )


def preflight(run: RunConfig, parts: Parts, tracking: bool = True) -> None:
    """Every check of this module, cheapest first (``tracking=False``: not the store, which a sweep
    checks once)."""
    check_cache_dir(run.cache_dir)
    sample = probe(run, parts)
    check_solvers(parts, sample)
    check_memory(run, parts, sample)
    if tracking:
        check_tracking(run.tracking.experiment)
