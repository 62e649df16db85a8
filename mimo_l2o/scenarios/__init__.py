"""Scenarios: seeded, batched samplers of networks."""

from mimo_l2o.scenarios import (  # noqa: F401  (registers)
    cellfree,
    cellular,
    deepmimo,
    gaussian_ic,
    imac,
    massive_fdd,
    miso,
    multicell_miso,
)
