"""Solvers: reference optimizers that label data, and heuristic baselines."""

from mimo_l2o.solvers import baselines, ee_sca, energy_efficiency, fairness, wmmse  # noqa: F401  (registers)
