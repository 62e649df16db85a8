"""Precoders: from sampled channels to the problem the optimizer sees."""

from mimo_l2o.precoders import none  # noqa: F401  (registers)
