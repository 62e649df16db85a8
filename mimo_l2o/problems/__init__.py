"""Problem families: what an optimizer sees, behind one protocol (:mod:`mimo_l2o.problems.base`).

``FAMILIES`` maps each family's name to its problem class; parts name the family they work on, and the
runner reads a family's defaults (its baselines) here.
"""

from mimo_l2o.problems.base import BatchedProblem, Problem
from mimo_l2o.problems.beamforming import BeamformingProblem
from mimo_l2o.problems.power_control import PowerControlProblem

FAMILIES: dict[str, type] = {cls.family: cls for cls in (PowerControlProblem, BeamformingProblem)}
POWER_CONTROL = PowerControlProblem.family
BEAMFORMING = BeamformingProblem.family

__all__ = [
    "BEAMFORMING",
    "FAMILIES",
    "POWER_CONTROL",
    "BatchedProblem",
    "BeamformingProblem",
    "PowerControlProblem",
    "Problem",
]
