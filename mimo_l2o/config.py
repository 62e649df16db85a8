"""Typed configuration: the run schema, the per-part schemas and their validation.

Every part's ``Config`` dataclass is stored in Hydra's ConfigStore under
``schema/<group>/<name>`` and pulled in by that part's YAML (``- /schema/scenario/imac@_here_``),
so schemas never show up as selectable options and Hydra type-checks overrides while composing.
Hydra does not run ``__post_init__``: :func:`validate` converts each group with
``OmegaConf.to_object`` so range and cross-field checks run before any work.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mimo_l2o import registry
from mimo_l2o.errors import ConfigError, require

GROUPS = ("scenario", "precoder", "objective", "solver", "learner")
# run keys that do not change what training computes: a run may resume another that differed in them
NOT_TRAINING = (
    "resume",
    "device",
    "num_threads",
    "progress",
    "log_every",
    "max_memory_gb",
    "cache_dir",
    "cache_check",
)


@dataclass
class DataConfig:
    """Dataset sizes (numbers of sampled networks) and labelling chunks.

    Parameters
    ----------
    num_train, num_val, num_test : int
        Samples in the training, validation and test sets (distinct seeds).
    chunk_size : int
        Samples labelled per chunk; a killed labelling run resumes from the chunks written.
    label_solver : str or None
        The solver whose decisions supervised learners train on, with its default config; ``null``:
        the reference solver (``solver``). A fast labeller for a slow reference: the cell-free scenario
        trains on the batched ``ee_pga`` and compares with SCA.
    shards, shard : int
        Sharded labelling: with ``shard`` set, the job labels only its share (shard ``shard``, from 0,
        of ``shards`` contiguous shares of the chunks) of every dataset the run needs, and ends without
        training; ``-m data.shards=4 'data.shard=range(4)'`` labels as four jobs. ``null``: a normal run,
        which reuses the chunks written and computes only those missing.
    """

    num_train: int = 200_000
    num_val: int = 5_000
    num_test: int = 10_000
    chunk_size: int = 10_000
    label_solver: str | None = None
    shards: int = 1
    shard: int | None = None

    def __post_init__(self) -> None:
        for key in ("num_train", "num_val", "num_test", "chunk_size"):
            value = getattr(self, key)
            require(value >= 1, f"data.{key}", f"must be an integer >= 1, got {value}")
        if self.label_solver is not None:
            _check_solver_names("data.label_solver", [self.label_solver])
        require(self.shards >= 1, "data.shards", f"must be an integer >= 1, got {self.shards}")
        if self.shard is not None:
            require(
                0 <= self.shard < self.shards,
                "data.shard",
                f"must be in 0..{self.shards - 1} (data.shards={self.shards}), got {self.shard}",
            )


def _check_solver_names(key: str, names: list[str]) -> None:
    for name in names:
        if name not in registry.SOLVERS.names():
            raise ConfigError(
                key, f"unknown solver '{name}'; available: {', '.join(registry.SOLVERS.names())}"
            )


@dataclass
class EvalConfig:
    """Evaluation on the held-out test set.

    Parameters
    ----------
    baselines : list[str] or None
        Heuristic solvers reported as ``test/objective_<name>``; ``null``: the problem family's
        defaults (power control: ``max_power``, ``random``).
    timing_samples : int
        Test samples (one batch) on which learner and solver are timed, on the same device.
    timing_repeats : int
        Timed repetitions after one warm-up; the median is reported.
    timing_budget_s : float
        Seconds after which the repetitions of one timing stop early (at least one is run): a solver
        of seconds per sample is timed once or twice, not ``timing_repeats`` times.
    shifts : dict[str, list] or None
        Generalization shifts (:mod:`mimo_l2o.shifts`): scenario keys and the values to test the
        trained policy at without retraining, one key at a time, each against the solver on its own
        shifted test set: ``'{scenario.num_users: [2, 4, 8], scenario.p_max_dbm: [-10, 0, 10]}'``.
    """

    baselines: list[str] | None = None
    timing_samples: int = 10000
    timing_repeats: int = 5
    timing_budget_s: float = 60.0
    shifts: Any = None  # a mapping (typed Any: Hydra cannot add keys to a typed dict of a struct config)

    def __post_init__(self) -> None:
        require(self.timing_samples >= 1, "eval.timing_samples", f"must be >= 1, got {self.timing_samples}")
        require(self.timing_repeats >= 1, "eval.timing_repeats", f"must be >= 1, got {self.timing_repeats}")
        require(self.timing_budget_s > 0, "eval.timing_budget_s", f"must be > 0, got {self.timing_budget_s}")
        _check_solver_names("eval.baselines", self.baselines or [])


@dataclass
class TrackingConfig:
    """MLflow tracking. The store is MLflow's default (``sqlite:///mlflow.db`` in the working
    directory) unless ``MLFLOW_TRACKING_URI`` says otherwise.

    Parameters
    ----------
    experiment : str
        MLflow experiment name.
    log_model : bool
        Log the trained policy with ``mlflow.pytorch`` (named after the run).
    registered_model : str or None
        Also register the logged policy in MLflow's model registry under this name.
    """

    experiment: str = "mimo_l2o"
    log_model: bool = True
    registered_model: str | None = None


@dataclass
class RunConfig:
    """The whole run. ``scenario`` ... ``learner`` are the five config groups.

    Parameters
    ----------
    device : str
        ``auto`` (GPU when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; labelling,
        training and timing all run there.
    seed : int
        Seed of training (initial weights, shuffling). The data's seed ``scenario.seed`` follows it
        unless set (``conf/seeds.yaml``): ``-m seed=0,1,2`` repeats every job of a sweep on three
        seeds, which the report shows as one point with its spread (:mod:`mimo_l2o.points`).
    num_threads : int
        torch threads for this job (0: torch's default). Iterative solvers of many small ops run
        fastest single-threaded on a shared CPU; set 1 for parallel sweeps.
    cache_dir : str
        Where sampled datasets and labels are cached, keyed by the config that determines them
        (``$MIMO_L2O_CACHE_DIR``, else ``.cache/mimo_l2o`` in the working directory).
    cache_check : str
        Recompute a random sample of a cached entry's rows when reading it, and refuse (recompute) the
        entry when they differ: ``auto`` for entries someone else may have written (another user's, or
        writable by the group), ``always``, ``never``
        (:mod:`mimo_l2o.cache`; the SHA-256 beside an entry catches corruption, not a wrong entry).
    paper : str or None
        Paper the run reproduces (a tag), set by ``experiment/`` presets; ``null``: the learner's paper.
    progress : bool or None
        Progress bars; ``null`` shows them only when stderr is a terminal.
    log_every : int
        Without progress bars (a log file, a batch job), training logs an INFO line every this many
        epochs (0: none) and within an epoch at least once a minute; labelling logs every chunk.
    resume : str or None
        Continue a killed training run: its MLflow run id (its checkpoint is found through the run's
        tag ``mimo_l2o.checkpoint``) or the path of a ``last.pt``. The config must be the one that
        run was made with (apart from the keys of :data:`NOT_TRAINING`).
    max_memory_gb : float or None
        A run whose estimated memory (GB, 1e9 bytes: datasets, labelling chunk, training copies; see
        :mod:`mimo_l2o.preflight`) exceeds this is refused before any work; ``null``: the memory this
        machine has available when the run starts.
    """

    scenario: Any = MISSING
    precoder: Any = MISSING
    objective: Any = MISSING
    solver: Any = MISSING
    learner: Any = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    device: str = "auto"
    seed: int = 0
    num_threads: int = 0
    cache_dir: str = "${oc.env:MIMO_L2O_CACHE_DIR,.cache/mimo_l2o}"
    cache_check: str = "auto"
    paper: str | None = None
    progress: bool | None = None
    log_every: int = 1
    max_memory_gb: float | None = None
    resume: str | None = None


def register_configs() -> None:
    """Store the run schema and every registered part's schema in Hydra's ConfigStore, and register
    the ``mimo_l2o.pid`` resolver of the output folders' names (``conf/config.yaml``) and
    ``mimo_l2o.mul``, the product of its arguments (a preset's width that follows the antennas:
    ``${mimo_l2o.mul:2,${scenario.num_antennas},49}``)."""
    # resolved once per run or sweep and copied into every job's config, like Hydra's ${now:}
    OmegaConf.register_new_resolver("mimo_l2o.pid", os.getpid, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("mimo_l2o.mul", lambda *factors: math.prod(factors), replace=True)
    from mimo_l2o import cluster

    registry.load_all()
    cs = ConfigStore.instance()
    cs.store(name="mimo_l2o_schema", node=RunConfig)
    cluster.register()  # hydra/launcher=slurm, with the slurm extra
    for group, reg in registry.all_registries().items():
        for name in reg.names():
            cs.store(group=f"schema/{group}", name=name, node=reg.get(name).Config)


def with_schemas(cfg: DictConfig) -> DictConfig:
    """A composed config read back from YAML (a run's ``hydra/config.yaml``) with each group's schema
    under it again, as Hydra composed it, so that :func:`validate` can check and convert it."""
    registry.load_all()
    out = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k not in GROUPS])
    for group in GROUPS:
        node = cfg[group]
        schema = registry.all_registries()[group].get(node.get("name")).Config
        out[group] = OmegaConf.merge(OmegaConf.structured(schema), node)
    return out


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first GPU when one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    allowed = "allowed: auto, cpu, cuda, cuda:N"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError("device", f"unknown device '{name}'; {allowed}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError("device", f"'{name}' is not supported; {allowed}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError("device", f"'{name}' asked for but no GPU is available; use device=auto or cpu")
        if (device.index or 0) >= count:
            raise ConfigError("device", f"'{name}' asked for but only {count} GPU(s) are present (cuda:0..)")
    return device


def _to_object(node: Any, prefix: str) -> Any:
    try:
        return OmegaConf.to_object(node)
    except ConfigError as err:
        raise err.within(prefix) from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{prefix}.{err.full_key}" if err.full_key else prefix, err.msg) from None


def validate(cfg: DictConfig) -> RunConfig:
    """Typed, range-checked copy of the composed config; raises :class:`ConfigError` (one line)."""
    registry.load_all()
    parts = {}
    for group in GROUPS:
        node = cfg[group]
        name = node.get("name")
        registry.all_registries()[group].get(name)  # unknown name → "unknown learner 'x'; available: ..."
        parts[group] = _to_object(node, group)
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(k for k in cfg.keys() if k not in known and k != "hydra")
    if unknown:
        raise ConfigError(unknown[0], f"unknown key; allowed: {', '.join(sorted(known))}")
    rest = OmegaConf.masked_copy(cfg, [f.name for f in fields(RunConfig) if f.name not in GROUPS])
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), rest, {g: {} for g in GROUPS})
        run = OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as err:
        raise ConfigError(err.full_key or "config", err.msg) from None
    for group, part in parts.items():
        setattr(run, group, part)
    check_finite(run)
    require(run.num_threads >= 0, "num_threads", f"must be >= 0, got {run.num_threads}")
    require(run.log_every >= 0, "log_every", f"must be >= 0 (epochs; 0: no lines), got {run.log_every}")
    if run.max_memory_gb is not None:
        require(run.max_memory_gb > 0, "max_memory_gb", f"must be > 0 (GB) or null, got {run.max_memory_gb}")
    cores = os.cpu_count() or 1
    require(
        run.num_threads <= 4 * cores,
        "num_threads",
        f"must be at most 4 × the {cores} cores of this machine (0: torch's default), got {run.num_threads}",
    )
    resolve_device(run.device)
    choices = ("auto", "always", "never")
    require(
        run.cache_check in choices,
        "cache_check",
        f"must be one of {', '.join(choices)}, got '{run.cache_check}'",
    )
    return run


def check_finite(obj: Any, prefix: str = "") -> None:
    """Refuse NaN and ±inf in every float key of a (nested) config dataclass: no key of a run means
    anything at an infinite or undefined value (a range check alone lets ``inf`` through)."""
    for f in fields(obj):
        value, key = getattr(obj, f.name), f"{prefix}{f.name}"
        if is_dataclass(value):
            check_finite(value, f"{key}.")
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(key, f"must be a finite number, got {item}")


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"scenario.num_users": 10, ...}`` from a (nested) dataclass or config, for MLflow params."""
    if is_dataclass(obj):
        obj = {f.name: getattr(obj, f.name) for f in fields(obj)}
    elif isinstance(obj, DictConfig):
        obj = OmegaConf.to_container(obj, resolve=True)
    out: dict[str, Any] = {}
    for key, value in obj.items():
        full = f"{prefix}{key}"
        if is_dataclass(value) or isinstance(value, dict | DictConfig):
            out.update(flatten(value, f"{full}."))
        else:
            out[full] = value.value if isinstance(value, Enum) else value
    return out
