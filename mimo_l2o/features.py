"""Learner inputs: named features computed from a sampled network and its problem.

A learner names the features it reads (``Learner.inputs``); the runner computes them for every split,
chunk by chunk, and the learner's ``prepare`` turns them into its model input. A feature describes
the *problem* or the scenario's *geometry*, not one scenario's internals, so a learner reads every
scenario that has it:

* ``problem_gains`` ``[batch, U, V, 2]``: the power-control problem's signal and interference gain of
  every variable at every user, times the variable's even share of its budget, over the noise, in dB
  (:meth:`~mimo_l2o.problems.power_control.PowerControlProblem.gains_db`). Every power-control scenario
  has it; computing it at deployment costs the precoder's work (the Monte-Carlo gains of cellular
  massive MIMO), which ``test/time_learner_ms`` includes.
* ``user_positions`` ``[batch, U, 2]``: every user's (x, y) in metres, with the scenario's
  :class:`~mimo_l2o.components.Geometry` in the learner's spec; scenarios with positions have it.
* ``uplink_channel`` ``[batch, C, U, N]`` (complex): the uplink channels the BSs observe, in scenarios
  that sample them (the beamforming family's ``h_ul``, or its LS estimate from pilots, ``h_ul_ls``);
  ``downlink_channel``: a beamforming problem's own channels (perfect downlink CSI).

A plugin registers a feature of its own with :func:`feature`; features only one plugin uses live in
that plugin.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mimo_l2o.components import Network, Precoder, Scenario
from mimo_l2o.problems import BEAMFORMING, POWER_CONTROL, Problem
from mimo_l2o.problems.power_control import GAIN_FLOOR_DB

# a gain of problem_gains within this of the floor counts as none (a beam that does not exist): 10 dB
# above the floor, still 90 dB below the noise at full share
NO_GAIN_DB = GAIN_FLOOR_DB + 10.0


@dataclass(frozen=True)
class Feature:
    """A named learner input.

    Parameters
    ----------
    name : str
        What learners call it (``Learner.inputs``).
    compute : callable
        ``(scenario, network, problem) → Tensor [batch, ...]``; ``problem`` is ``None`` unless
        ``reads_problem``.
    reads_problem : bool
        Computing it needs the precoder's problem (its cost counts in the learner's time).
    unavailable : callable
        ``(scenario, precoder) → None`` when the feature can be computed, else why not (a few words).
    """

    name: str
    compute: Callable[[Scenario, Network, Problem | None], Tensor]
    reads_problem: bool
    unavailable: Callable[[Scenario, Precoder], str | None]


FEATURES: dict[str, Feature] = {}


def feature(name: str, *, reads_problem: bool, unavailable: Callable[[Scenario, Precoder], str | None]):
    """Register ``compute`` as the feature ``name`` (a decorator)."""

    def register(compute):
        FEATURES[name] = Feature(name, compute, reads_problem, unavailable)
        return compute

    return register


def _family_only(family: str, what: str) -> Callable[[Scenario, Precoder], str | None]:
    """A feature's ``unavailable`` for one problem family: why another family's problems lack it."""

    def unavailable(scenario: Scenario, precoder: Precoder) -> str | None:
        if precoder.family == family:
            return None
        return f"precoder={precoder.name} makes {precoder.family} problems, which have no {what}"

    return unavailable


_power_control_only = _family_only(POWER_CONTROL, "power gains")


@feature("problem_gains", reads_problem=True, unavailable=_power_control_only)
def problem_gains(scenario: Scenario, network: Network, problem) -> Tensor:
    return problem.gains_db()


@feature(
    "user_positions",
    reads_problem=False,
    unavailable=lambda scenario, precoder: None if scenario.geometry() is not None else "it has no positions",
)
def user_positions(scenario: Scenario, network: Network, problem) -> Tensor:
    return scenario.user_positions(network)


def _scenario_samples(tensor: str):
    def unavailable(scenario: Scenario, precoder: Precoder) -> str | None:
        return None if tensor in scenario.tensors else f"it samples no {tensor}"

    return unavailable


@feature("uplink_channel", reads_problem=False, unavailable=_scenario_samples("h_ul"))
def uplink_channel(scenario: Scenario, network: Network, problem) -> Tensor:
    """``[batch, cells, users, antennas]`` complex: the uplink channel information each BS has (BS ``c``
    to user ``u``), what the beamforming papers learn the downlink from (Zhang et al. 2022): the
    channels ``h_{U}`` themselves, or with ``scenario.pilot_length`` set their estimate from the
    received pilots: LS (``h_ul_ls``, eqs. 12 and 34) or, with ``scenario.pilot_estimator=lmmse``, LMMSE
    (``h_ul_lmmse``, eq. 17)."""
    for name in ("h_ul_lmmse", "h_ul_ls"):
        if name in network.tensors:
            return network[name]
    return network["h_ul"]


@feature("downlink_channel", reads_problem=True, unavailable=_family_only(BEAMFORMING, "channel vectors"))
def downlink_channel(scenario: Scenario, network: Network, problem) -> Tensor:
    """``[batch, cells, users, antennas]`` complex: the beamforming problem's own (downlink) channels,
    perfect downlink CSI."""
    return problem.channel


def total_gain_db(gains_db: Tensor) -> Tensor:
    """``problem_gains [..., 2]`` → the total gain ``signal + interference`` of each entry in dB
    ``[...]`` (the floor where both are none)."""
    present = gains_db > NO_GAIN_DB
    total = torch.logsumexp(torch.where(present, gains_db, -math.inf) * (math.log(10) / 10), dim=-1)
    return torch.where(present.any(-1), total * (10 / math.log(10)), torch.full_like(total, GAIN_FLOOR_DB))


def compute(
    names: tuple[str, ...], scenario: Scenario, network: Network, problem: Callable[[], Problem]
) -> dict[str, Tensor]:
    """The named features of ``network``; ``problem()`` (built only when a feature reads it) gives its
    problem."""
    made = problem() if any(FEATURES[n].reads_problem for n in names) else None
    return {n: FEATURES[n].compute(scenario, network, made) for n in names}


def reads_problem(names: tuple[str, ...]) -> bool:
    """Whether any of the features needs the precoder's problem."""
    return any(FEATURES[n].reads_problem for n in names)


def learner_refusal(learner_cls, scenario: Scenario, precoder: Precoder) -> str | None:
    """Why ``learner_cls`` cannot read the problems of ``scenario`` and ``precoder`` (one line), or ``None``:
    a feature it reads that is unknown or unavailable, or the learner's own ``refuses``."""
    lname, sname = learner_cls.name, scenario.name
    for name in learner_cls.inputs:
        if name not in FEATURES:
            known = ", ".join(sorted(FEATURES))
            why = f"no module registers a feature of that name; registered: {known}"
        else:
            why = FEATURES[name].unavailable(scenario, precoder)
        if why:
            return f"learner={lname} needs input {name}, which scenario={sname} cannot provide ({why})"
    return learner_cls.refuses(scenario, precoder)
