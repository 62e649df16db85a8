"""Scenarios: seeded, batched samplers of networks."""

from mimo_l2o.scenarios import cellfree, cellular, gaussian_ic, imac, miso, multicell_miso  # noqa: F401  (registers)
