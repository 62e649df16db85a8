"""The interfaces of the swappable parts, in data-flow order::

    scenario.sample(n, generator) ──► Network     geometry + channels, batched tensors
    precoder(network)             ──► Problem     what the optimizer sees
    solver.solve(problem, objective) ──► decision labels for supervised learners, and the reference
    learner (plugin)              ──► decision    the paper's method
    objective(problem, decision)  ──► utility per sample (batched, differentiable)

Each part has a typed ``Config`` dataclass (its Hydra schema, registered under
``schema/<group>/<name>``) whose ``__post_init__`` checks ranges, and is built from it. Each part
says the problem family it works on (:data:`mimo_l2o.problems.FAMILIES`): a scenario the family its
networks feed, a precoder the family it makes, objectives, solvers and learners the families they take
(``families``); the runner refuses parts of different families before any work. A problem speaks the
protocol of :mod:`mimo_l2o.problems.base`; what a decision is (real powers, complex beamformers)
only its family knows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from omegaconf import MISSING
from torch import Tensor

from mimo_l2o.errors import require
from mimo_l2o.problems import POWER_CONTROL, Problem


# ---------------------------------------------------------------------------------------------
# Network: what a scenario samples
# ---------------------------------------------------------------------------------------------
@dataclass
class Network:
    """A batch of sampled networks.

    Parameters
    ----------
    tensors : dict[str, Tensor]
        Named tensors, each with the sample dimension first (e.g. ``gains [batch, K, K]``).
    params : dict[str, float]
        Scalars shared by the batch (``noise_power``, ``p_max``, ...), as the scenario's
        config gives them, for the precoder.
    """

    tensors: dict[str, Tensor]
    params: dict[str, Any]

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[name]

    def select(self, index) -> Network:
        """A sub-batch (slice, index tensor or mask over samples)."""
        return Network({k: v[index] for k, v in self.tensors.items()}, dict(self.params))

    def to(self, device=None, dtype: torch.dtype | None = None) -> Network:
        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return Network({k: move(v) for k, v in self.tensors.items()}, dict(self.params))

    def state(self) -> dict[str, Any]:
        return {"tensors": self.tensors, "params": self.params}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Network:
        return cls(dict(state["tensors"]), dict(state["params"]))

    @classmethod
    def cat(cls, networks: list[Network]) -> Network:
        keys = networks[0].tensors.keys()
        return cls({k: torch.cat([n.tensors[k] for n in networks]) for k in keys}, dict(networks[0].params))


# ---------------------------------------------------------------------------------------------
# Scenario
# ---------------------------------------------------------------------------------------------
@dataclass
class ScenarioConfig:
    """Keys shared by every scenario (the same key means the same thing everywhere).

    Parameters
    ----------
    name : str
        Registry key of the scenario.
    num_users : int
        Number of users K (in total, unless the scenario says per cell).
    p_max : float
        Power budget of each budget group (the scenario says which: a link, a UE, a BS, an AP), in W,
        or linear (relative to the noise) where ``power_unit`` is ``linear`` (gaussian_ic, imac).
    noise_power : float
        Receiver noise power (same unit as ``p_max`` times the gains).
    seed : int
        Seed of the data: training, validation and test sets draw from distinct seeds derived
        from it.
    p_max_dbm : float or None
        ``p_max`` in dBm (``p_max = 10^(p_max_dbm/10)`` mW), where powers are in W; set, it replaces
        ``p_max``. Papers sweep power in dBm: ``-m scenario.p_max_dbm=0,10,20``.
    snr_db : float or None
        ``p_max / noise_power`` in dB (the SNR of a link of unit gain at full power); set, it replaces
        ``p_max``. The form of the papers whose powers are relative to the noise (Sun 2018).
    """

    name: str = MISSING
    num_users: int = 10
    p_max: float = 1.0
    noise_power: float = 1.0
    seed: int = 0
    p_max_dbm: float | None = None
    snr_db: float | None = None
    power_unit: ClassVar[str] = "W"  # of p_max and noise_power: "W" or "linear" (relative to the noise)

    def __post_init__(self) -> None:
        require(self.num_users >= 1, "num_users", f"must be an integer >= 1, got {self.num_users}")
        require(
            self.p_max_dbm is None or self.snr_db is None,
            "p_max_dbm",
            "give at most one of p_max_dbm and snr_db (each sets p_max)",
        )
        require(
            self.p_max_dbm is None or self.power_unit == "W",
            "p_max_dbm",
            f"this scenario's powers are relative to the noise, not in W; use snr_db (got {self.p_max_dbm})",
        )
        for key in ("p_max_dbm", "snr_db"):
            value = getattr(self, key)
            require(value is None or math.isfinite(value), key, f"must be a finite number (dB), got {value}")
        require(
            0 < self.noise_power < math.inf, "noise_power", f"must be > 0 and finite, got {self.noise_power}"
        )
        if self.p_max_dbm is not None:
            self.p_max = 10 ** (self.p_max_dbm / 10) * 1e-3
        elif self.snr_db is not None:
            self.p_max = self.noise_power * 10 ** (self.snr_db / 10)
        require(0 < self.p_max < math.inf, "p_max", f"must be > 0 and finite, got {self.p_max}")


@dataclass(frozen=True)
class Geometry:
    """Where a scenario's sites (BSs, APs) and users are: what position-based learners read beside the
    users' positions (``Scenario.user_positions``).

    Parameters
    ----------
    sites : Tensor ``[S, 2]``
        (x, y) of every BS or AP in metres (float64).
    user_site : Tensor ``[U]`` (long) or None
        The site (cell) each user belongs to; ``None`` when users belong to no cell (cell-free: every
        AP serves every UE).
    scale : float
        A length of the layout in metres that positions are divided by to be of order 1 (cellular: the
        side of the wrapped area; the scenario's docstring says which).
    wrap : bool
        Distances wrap around: the area is a torus of side ``scale`` (cellular).
    """

    sites: Tensor
    user_site: Tensor | None
    scale: float
    wrap: bool = False


class Scenario:
    """Samples batches of networks.

    Subclasses set ``tensors`` (what their networks carry, for the precoders' ``requires``) and implement
    :meth:`sample` on the CPU generator they are given, so the same seed gives the same data on any
    machine (to rounding: draw fixed per-sample blocks of ``torch.rand``, so the first ``n`` of ``2n``
    samples are the ``n`` samples). A scenario with positions also gives its :meth:`geometry` and
    :meth:`user_positions`; learner inputs that describe the problem come from the problem itself
    (:mod:`mimo_l2o.features`).
    """

    name: ClassVar[str]
    Config: ClassVar[type] = ScenarioConfig
    family: ClassVar[str] = POWER_CONTROL  # the problem family its networks feed
    version: ClassVar[int] = 1  # bump when the same config would sample different networks
    tensors: ClassVar[tuple[str, ...]] = ()  # tensors its networks carry (and the cache stores)
    # config keys that enter only the networks' params, not the sampled tensors: the networks' cache
    # key leaves them out (a p_max sweep samples once) and a cached network gets them from the config
    params_only: ClassVar[tuple[str, ...]] = ("p_max", "noise_power", "p_max_dbm", "snr_db")

    def __init__(self, config: Any):
        self.config = config

    def sample(self, num_samples: int, generator: torch.Generator) -> Network:
        raise NotImplementedError

    def geometry(self) -> Geometry | None:
        """The layout of sites and cells (from the config alone); ``None``: the scenario has no positions."""
        return None

    def user_positions(self, network: Network) -> Tensor:
        """``[batch, U, 2]``: each user's (x, y) in metres, users in the problem's order."""
        raise NotImplementedError(f"scenario {self.name} has no positions")


# ---------------------------------------------------------------------------------------------
# Precoder
# ---------------------------------------------------------------------------------------------
@dataclass
class PrecoderConfig:
    """Parameters
    ----------
    name : str
        Registry key of the precoder.
    """

    name: str = MISSING


class Precoder:
    """Turns sampled networks into the problem the optimizer sees.

    ``expensive`` precoders (Monte-Carlo averages) have their problems cached on disk, chunked; cheap
    ones are recomputed from the cached networks.
    """

    name: ClassVar[str]
    Config: ClassVar[type] = PrecoderConfig
    family: ClassVar[str] = POWER_CONTROL  # the problem family it makes
    version: ClassVar[int] = 1  # bump when the same config would give different problems
    expensive: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()  # network tensors it reads

    def __init__(self, config: Any):
        self.config = config

    @classmethod
    def accepts(cls, tensors: tuple[str, ...]) -> bool:
        """Whether networks carrying ``tensors`` (a scenario's ``tensors``) are enough."""
        return all(t in tensors for t in cls.requires)

    def __call__(self, network: Network) -> Problem:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Objective
# ---------------------------------------------------------------------------------------------
@dataclass
class ObjectiveConfig:
    """Parameters
    ----------
    name : str
        Registry key of the objective.
    """

    name: str = MISSING


class Objective:
    """Utility of a decision, per sample: positive, larger is better, batched and differentiable."""

    name: ClassVar[str]
    Config: ClassVar[type] = ObjectiveConfig
    families: ClassVar[tuple[str, ...]] = (POWER_CONTROL,)
    label: ClassVar[str] = "objective"  # axis label for figures, with unit

    def __init__(self, config: Any):
        self.config = config

    def __call__(self, problem: Problem, decision: Tensor) -> Tensor:
        raise NotImplementedError

    def smooth(self, problem: Problem, decision: Tensor, temperature: float) -> Tensor:
        """A smooth stand-in for the objective ``[batch]`` that learners may train on (positive,
        larger is better); by default the objective itself. ``temperature`` sets how closely a
        non-smooth objective (a minimum) is followed: larger is closer."""
        return self(problem, decision)

    def per_user(self, problem: Problem, decision: Tensor) -> Tensor | None:
        """Each user's spectral efficiency ``[batch, num_users]`` in bit/s/Hz, for the per-user
        metrics (``test/mse_se``, ``test/se_mean_*``, ``test/se_p5_*``) and the per-user CDF figure:
        the problem's own rates (``problem.rates``), whatever the objective makes of them; ``None``
        (no per-user metrics) for an objective whose users' rates mean nothing by themselves."""
        return problem.rates(decision)


# ---------------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------------
@dataclass
class SolverConfig:
    """Parameters
    ----------
    name : str
        Registry key of the solver.
    """

    name: str = MISSING


class Solver:
    """Computes decisions for a batch of problems.

    ``gives_labels`` is false for heuristics (max power, random) that serve as baselines but
    not as training targets; ``objectives`` lists what the solver optimizes (``None``: it
    ignores the objective, as heuristics do).
    """

    name: ClassVar[str]
    Config: ClassVar[type] = SolverConfig
    families: ClassVar[tuple[str, ...]] = (POWER_CONTROL,)
    version: ClassVar[int] = 1  # bump when the same config would give different decisions
    gives_labels: ClassVar[bool] = True
    objectives: ClassVar[tuple[str, ...] | None] = None
    display_name: ClassVar[str] = ""  # as the papers' legends name it (WMMSE, SCA); "": the registry key
    # draws random numbers (random starts): its decisions depend on how the samples are chunked, so
    # the labels' cache key includes data.chunk_size
    stochastic: ClassVar[bool] = False

    def __init__(self, config: Any):
        self.config = config

    def solve(
        self, problem: Problem, objective: Objective, generator: torch.Generator | None = None
    ) -> Tensor:
        raise NotImplementedError

    def refuses(self, problem: Problem) -> str | None:
        """Why this solver cannot solve problems of ``problem``'s structure (a few words), or ``None``;
        checked on one sampled problem before any work (:mod:`mimo_l2o.preflight`)."""
        return None
