"""Solvers: reference optimizers that label data, and heuristic baselines."""

from mimo_l2o.solvers import baselines, energy_efficiency, fairness, wmmse  # noqa: F401  (registers)
