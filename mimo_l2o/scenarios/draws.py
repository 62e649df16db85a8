"""Variates made from per-sample blocks of ``torch.rand``, shared by the scenarios.

Scenarios draw one fixed block of uniforms per sample, so the first ``n`` of ``2n`` samples are the
``n`` samples; these turn uniforms into the distributions they need, elementwise and with
operations whose result for a value does not depend on the batch size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def exponential_from_uniform(u: Tensor) -> Tensor:
    """``|h|²`` of ``h ~ CN(0, 1)``, i.e. an Exp(1) variate, by inversion of uniforms ``u ∈ [0, 1)``.

    ``-ln(1 - u)`` is finite for every ``u`` that ``torch.rand`` can return, and ``1 - u`` is exact
    for them. ``log`` rather than ``log1p``: torch's vectorized ``log1p`` (like ``pow`` with a
    non-integer exponent) differs from its scalar tail loop in the last bit, so its result for a
    given sample would depend on the batch size.
    """
    return -torch.log(1 - u)


def standard_normal_from_uniform(u1: Tensor, u2: Tensor) -> Tensor:
    """Standard normal variates from pairs of uniforms ``u ∈ [0, 1)`` (Box–Muller, cosine branch)."""
    return torch.sqrt(-2 * torch.log(1 - u1)) * torch.cos(2 * math.pi * u2)
