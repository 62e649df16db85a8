"""Scenarios: seeded, batched samplers of networks."""

from mimo_l2o.scenarios import cellular, gaussian_ic, imac  # noqa: F401  (registers)
