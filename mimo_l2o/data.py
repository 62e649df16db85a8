"""The data stages of a run: sample → problem → label, each through the on-disk cache.

Every stage is a function of its config and a seed: the training, validation and test sets draw from
seeds derived from ``scenario.seed`` and the split (:func:`derive_seed`), so the same config gives the
same data on any machine, and each output is cached under a key of exactly the config that determines
it (:mod:`mimo_l2o.cache`), so a sweep over learners samples and labels its datasets once.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import Tensor

from mimo_l2o import features
from mimo_l2o.cache import Cache, Shard
from mimo_l2o.components import Network, Solver
from mimo_l2o.config import RunConfig, flatten
from mimo_l2o.learner import Learner, LearnerSpec
from mimo_l2o.parts import Parts
from mimo_l2o.problems import Problem

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


def stored(scenario, net: Network) -> Network:
    """What the cache keeps of sampled networks: the scenario's declared tensors, in float32."""
    kept = {k: v for k, v in net.tensors.items() if k in scenario.tensors}
    return Network(kept, net.params).to(dtype=STORAGE_DTYPE)


def learner_spec(parts: Parts, network: Network, problem: Problem) -> LearnerSpec:
    """What the learner is told, from a (one-sample) network and its problem: its inputs' shapes, the
    problem (float32, CPU), the objective and the scenario's geometry."""
    made = features.compute(parts.learner_cls.inputs, parts.scenario, network, lambda: problem)
    return LearnerSpec(
        input_shapes={k: tuple(v.shape[1:]) for k, v in made.items()},
        problem=problem[:1].to("cpu", torch.float32),
        objective=parts.objective,
        geometry=parts.scenario.geometry(),
    )


class Data:
    """Sampled networks, problems and solver labels of every split, through the cache.

    ``keys`` collects the cache key of every entry the run used (``network.train``, ``labels.val``, ...).
    In a sharded labelling (``data.shard``) the chunked stages compute only the shard's chunks and
    return ``None`` for an entry other shards have yet to complete; ``incomplete`` names those.
    """

    def __init__(self, run: RunConfig, parts: Parts, cache: Cache, device: torch.device, progress: bool):
        self.run, self.parts, self.cache, self.device, self.progress = run, parts, cache, device, progress
        d = run.data
        self.shard = None if d.shard is None else Shard(d.shard, d.shards)
        self.incomplete: list[str] = []
        self.keys: dict[str, str] = {}
        self.sizes = {"train": run.data.num_train, "val": run.data.num_val, "test": run.data.num_test}
        self._networks: dict[str, Network] = {}
        self._problems: dict[str, Problem] = {}
        self._sharded: set[str] = set()  # splits whose problems a shard left incomplete

    # ---- sample ------------------------------------------------------------------------------
    def network_spec(self, split: str) -> dict[str, Any]:
        """What the split's sampled tensors depend on: the scenario's config without its
        ``params_only`` keys, its version, the split and the size."""
        drawn = {
            k: v for k, v in flatten(self.run.scenario).items() if k not in self.parts.scenario.params_only
        }
        return {
            "stage": "network",
            "scenario": drawn,
            "scenario_version": self.parts.scenario.version,
            "split": split,
            "num_samples": self.sizes[split],
        }

    def _derived_spec(self, split: str) -> dict[str, Any]:
        """The networks' spec and the whole scenario config: what a problem or a label depends on."""
        return {"network": self.network_spec(split), "scenario": self.run.scenario}

    def _stored(self, net: Network) -> Network:
        return stored(self.parts.scenario, net)

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

            what = f"network {split} ({n:,} samples, {self.run.scenario.name})"
            state, key = self.cache.get_or_compute("networks", self.network_spec(split), sample, what)
            self.keys[f"network.{split}"] = key
            net = Network.from_state(state)
            for name in self.parts.scenario.params_only:  # the config's values, not the sampler's
                if name in net.params:
                    net.params[name] = float(getattr(self.run.scenario, name))
            self._networks[split] = net
        return self._networks[split]

    # ---- problem -----------------------------------------------------------------------------
    def problem(self, split: str, index: slice | None = None) -> Problem:
        """The precoder's problems for (a slice of) a split, float64 on the run's device.

        Cheap precoders run on the cached networks each time; the problems of ``expensive`` ones
        (Monte-Carlo averages) are computed once, chunk by chunk, and cached.
        """
        if self.parts.precoder.expensive:
            problems = self._cached_problems(split)
            if problems is None:  # a shard before the entry is complete: its own chunk is on disk
                return self._problem_template(split).with_batched_tensors(self._problem_chunk(split, index))
            return (problems if index is None else problems[index]).to(self.device)
        net = self.network(split)
        if index is not None:
            net = net.select(index)
        return self.parts.precoder(net.to(self.device, torch.float64))

    def _problem_spec(self, split: str) -> dict[str, Any]:
        return {
            "stage": "problem",
            **self._derived_spec(split),
            "precoder": self.run.precoder,
            "precoder_version": self.parts.precoder.version,
        }

    def _problem_template(self, split: str) -> Problem:
        net = self.network(split).select(slice(0, 1))
        return self.parts.precoder(net.to(dtype=torch.float64))

    def _problem_rows(self, split: str, start: int, stop: int) -> dict[str, Tensor]:
        """Rows ``[start, stop)`` of a split's problems as tensors (CPU), computed from the networks."""
        net = self.network(split).select(slice(start, stop))
        problem = self.parts.precoder(net.to(self.device, torch.float64))
        return {k: v.cpu() for k, v in problem.batched_tensors().items()}

    def _problem_chunk(self, split: str, index: slice) -> dict[str, Tensor]:
        """Chunk ``index`` of a split's cached problems (a shard's, before the entry is complete), on
        the run's device: read, or computed when no process has written it."""
        stage, spec = f"problems/{self.parts.precoder.name}", self._problem_spec(split)
        rows = lambda a, b: self._problem_rows(split, a, b)  # noqa: E731
        part = self.cache.chunk(stage, spec, index.start, index.stop, rows)
        return {k: v.to(self.device) for k, v in part.items()}

    def _cached_problems(self, split: str) -> Problem | None:
        if split in self._sharded:
            return None
        if split not in self._problems:
            precoder, net = self.parts.precoder, self.network(split)
            spec = self._problem_spec(split)

            def chunk(start: int, stop: int) -> dict[str, Tensor]:
                return self._problem_rows(split, start, stop)

            what = f"problems {split} ({len(net):,} samples, {precoder.name})"
            value, key = self.cache.chunked(
                f"problems/{precoder.name}",
                spec,
                len(net),
                self.run.data.chunk_size,
                chunk,
                self.progress,
                what,
                self.shard,
            )
            self.keys[f"problem.{split}"] = key
            if value is None:
                self.incomplete.append(what)
                self._sharded.add(split)
                return None
            self._problems[split] = self._problem_template(split).with_batched_tensors(value)
        return self._problems[split]

    # ---- label -------------------------------------------------------------------------------
    def labels(self, split: str, solver: Solver | None = None) -> Tensor | None:
        """Stage *label*: ``solver``'s decisions for a split (the reference solver's by default), in the
        problem's decision dtype at float64 (CPU), chunked and resumable; ``None`` in a shard before the
        entry is complete."""
        solver = solver or self.parts.solver
        n = self.sizes[split]
        self.network(split)
        spec = {
            "stage": "labels",
            **self._derived_spec(split),
            "precoder": self.run.precoder,
            "precoder_version": self.parts.precoder.version,
            "objective": self.run.objective,
            "solver": solver.config,
            "solver_version": solver.version,
        }
        if solver.stochastic:  # its random draws come per chunk (the chunk's start seeds them)
            spec["chunk_size"] = self.run.data.chunk_size

        def chunk(start: int, stop: int) -> dict[str, Tensor]:
            problem = self.problem(split, slice(start, stop))
            gen = generator(self.run.scenario.seed, "labels", split, start)
            decision = solver.solve(problem, self.parts.objective, gen)
            return {"decision": decision.to(problem.decision_dtype).cpu()}

        what = f"labels {split} ({n:,} samples, {solver.name})"
        value, key = self.cache.chunked(
            f"labels/{solver.name}",
            spec,
            n,
            self.run.data.chunk_size,
            chunk,
            self.progress,
            what,
            self.shard,
            row_wise=not solver.stochastic,  # random starts drawn per chunk: a check recomputes a chunk
        )
        tag = "labels" if solver is self.parts.solver else f"labels.{solver.name}"
        self.keys[f"{tag}.{split}"] = key
        if value is None:
            self.incomplete.append(what)
            return None
        return value["decision"]

    def training_labels(self, split: str) -> Tensor | None:
        """The labeller's decisions (``data.label_solver``, else the reference's) for a split."""
        return self.labels(split, self.parts.labeller)

    def label_all(self) -> tuple[dict[str, Tensor | None], dict[str, Tensor | None]]:
        """Stages *sample* and *label* for every split: the reference's decisions on the validation and
        test sets, and the labeller's on the training and validation sets for supervised learners."""
        for split in SPLITS:
            self.network(split)
            if self.parts.precoder.expensive:  # every split's problems (a learner may train on them)
                self._cached_problems(split)
        reference = {split: self.labels(split) for split in ("val", "test")}
        supervised = self.parts.learner_cls.requires_labels
        targets = {split: self.training_labels(split) for split in ("train", "val")} if supervised else {}
        return reference, targets

    # ---- learner inputs ----------------------------------------------------------------------
    def learner_inputs(self, learner: Learner, network: Network, problem) -> Tensor:
        """``learner.prepare`` of the features it reads, for ``network`` and ``problem()`` (called only
        when a feature reads the problem)."""
        return learner.prepare(features.compute(learner.inputs, self.parts.scenario, network, problem))

    def inputs(self, split: str, learner: Learner) -> Tensor:
        """The learner's model input for a split (CPU), computed chunk by chunk (``data.chunk_size``), so
        that only the prepared input of the whole split is ever held."""
        net = self.network(split)
        chunks = []
        for start in range(0, len(net), self.run.data.chunk_size):
            index = slice(start, min(start + self.run.data.chunk_size, len(net)))
            x = self.learner_inputs(
                learner, net.select(index).to(self.device), lambda index=index: self.problem(split, index)
            )
            chunks.append(x.cpu())
        return torch.cat(chunks)

    def spec(self) -> LearnerSpec:
        """What the learner is told: its inputs' shapes, a one-sample problem of the training set
        (float32, CPU), the objective and the scenario's geometry."""
        first = self.network("train").select(slice(0, 1))
        return learner_spec(self.parts, first, self.problem("train", slice(0, 1)))
