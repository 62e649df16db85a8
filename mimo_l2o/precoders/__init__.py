"""Precoders: from sampled channels to the problem the optimizer sees."""

from mimo_l2o.precoders import downlink, massive_mimo, mrt, none  # noqa: F401  (registers)
