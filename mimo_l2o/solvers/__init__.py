"""Solvers: reference optimizers that label data, and heuristic baselines."""

from mimo_l2o.solvers import (  # noqa: F401  (registers)
    baselines,
    beamformers,
    ee_sca,
    energy_efficiency,
    fairness,
    wmmse,
    wmmse_bf,
)
