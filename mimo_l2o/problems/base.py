"""The problem protocol: what the runner, the training loop, evaluation and learners may ask of a
batch of problems without knowing its family.

A problem is a batch of optimization instances of one family (power control: real powers;
beamforming: complex beamforming matrices). Everything family-specific (the physics, what a decision
is, what feasible means) lives in the family's module; the rest of mimo_l2o speaks only this
protocol:

* batch plumbing: ``len``, ``problem[index]`` (a sub-batch), ``to(device, dtype)``, ``cat``, and
  :meth:`~BatchedProblem.batched_tensors` / :meth:`~BatchedProblem.with_batched_tensors` (the
  tensors with a sample dimension: what the cache stores and a training batch carries);
* the decision: :attr:`decision_shape` (per sample) and :attr:`decision_dtype` (``float64`` powers or
  ``complex128`` beamformers for a float64 problem);
* feasibility: :meth:`project` (make a decision feasible), :meth:`constraint_violation` (largest
  excess over any budget, per sample), :meth:`feasibility` (the same projection as a module for the
  logged policy);
* :meth:`rates`: each user's spectral efficiency.

:class:`BatchedProblem` implements the plumbing once for problems that are dataclasses of tensors:
fields named in ``SHARED`` describe the structure of the variables (shared by the whole batch), every
other tensor field has the sample dimension first.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class Problem(Protocol):
    """A batch of problems of one family (see the module docstring)."""

    family: ClassVar[str]
    # baselines the metric contract reports for this family unless ``eval.baselines`` names others
    default_baselines: ClassVar[tuple[str, ...]]

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> Self: ...

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> Self: ...

    @classmethod
    def cat(cls, problems: list[Self]) -> Self: ...

    def batched_tensors(self) -> dict[str, Tensor]: ...

    def with_batched_tensors(self, tensors: dict[str, Tensor]) -> Self: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def num_users(self) -> int: ...

    @property
    def decision_shape(self) -> tuple[int, ...]: ...

    @property
    def decision_dtype(self) -> torch.dtype: ...

    def project(self, decision: Tensor) -> Tensor: ...

    def constraint_violation(self, decision: Tensor) -> Tensor: ...

    def feasibility(self) -> nn.Module: ...

    def rates(self, decision: Tensor) -> Tensor: ...


def complex_dtype(real: torch.dtype) -> torch.dtype:
    """The complex dtype of a real precision (``float32`` → ``complex64``, ``float64`` → ``complex128``)."""
    return {torch.float32: torch.complex64, torch.float64: torch.complex128}[real]


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real precision of a (real or complex) floating dtype."""
    return torch.empty((), dtype=dtype).real.dtype


class BatchedProblem:
    """Batch plumbing for problem dataclasses (mixed into each family's problem class).

    ``to(dtype=...)`` takes a *real* precision: real floating tensors take it, complex ones its complex
    counterpart, integer and boolean tensors keep theirs.
    """

    SHARED: ClassVar[tuple[str, ...]] = ()

    def _tensors(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                yield f.name, value

    def _map(self, batched, shared=lambda t: t) -> Self:
        return replace(
            self, **{name: (shared if name in self.SHARED else batched)(t) for name, t in self._tensors()}
        )

    def batched_tensors(self) -> dict[str, Tensor]:
        """The tensors with a sample dimension (not the shared structure, not the scalars)."""
        return {name: t for name, t in self._tensors() if name not in self.SHARED}

    def with_batched_tensors(self, tensors: dict[str, Tensor]) -> Self:
        """The same structure (shared tensors and scalars) with other batched tensors."""
        return replace(self, **tensors)

    def __len__(self) -> int:
        return next(iter(self.batched_tensors().values())).shape[0]

    @property
    def batch_size(self) -> int:
        return len(self)

    def __getitem__(self, index) -> Self:
        """A sub-batch (``index`` a slice, index tensor or boolean mask over the batch)."""
        return self._map(lambda t: t[index])

    def to(self, device=None, dtype: torch.dtype | None = None) -> Self:
        def move(t: Tensor) -> Tensor:
            if dtype is None or not (t.is_floating_point() or t.is_complex()):
                return t.to(device=device)
            return t.to(device=device, dtype=complex_dtype(dtype) if t.is_complex() else dtype)

        return self._map(move, lambda t: t.to(device=device))

    @property
    def device(self) -> torch.device:
        return next(iter(self.batched_tensors().values())).device

    @property
    def dtype(self) -> torch.dtype:
        """The real precision of the problem's floating tensors."""
        floating = (t for t in self.batched_tensors().values() if t.is_floating_point() or t.is_complex())
        return real_dtype(next(floating).dtype)

    @classmethod
    def cat(cls, problems: list[Self]) -> Self:
        first = problems[0]
        joined = {name: torch.cat([getattr(p, name) for p in problems]) for name in first.batched_tensors()}
        return first.with_batched_tensors(joined)
