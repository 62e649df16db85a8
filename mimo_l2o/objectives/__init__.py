"""Objectives: utility per sample, written once against the problem family."""

from mimo_l2o.objectives import energy_efficiency, fairness, sum_rate  # noqa: F401  (registers)
