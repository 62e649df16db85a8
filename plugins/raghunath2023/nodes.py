"""The GNN's nodes: a power-control problem's variables arranged by budget group and slot, and each
node's matrix of gains read from ``problem_gains`` (:class:`GroupLayout`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mimo_l2o.errors import ConfigError
from mimo_l2o.features import total_gain_db
from mimo_l2o.problems.power_control import PowerControlProblem


@dataclass(frozen=True)
class GroupLayout:
    """A power-control problem's variables arranged by budget group: the GNN's graph.

    Parameters
    ----------
    slots : Tensor ``[G, S]`` (long)
        The variable in slot ``s`` of group ``g``, slots in the order of their users.
    owner : Tensor ``[G, S]`` (long)
        The user each slot's power is for.
    user_slot : Tensor ``[G, U]`` (long)
        The slot of user ``u``'s variable in group ``g``, ``S`` where ``g`` has none.
    """

    slots: Tensor
    owner: Tensor
    user_slot: Tensor

    @classmethod
    def of(cls, problem: PowerControlProblem) -> GroupLayout:
        """The layout of ``problem``'s groups; raises :class:`ConfigError` unless every group has as many
        variables and no group has two for one user."""
        group = problem.group.cpu().long()
        owner = problem.owner.cpu().long() if problem.owner is not None else torch.arange(problem.num_vars)
        sizes = torch.bincount(group, minlength=problem.num_groups)
        if not bool((sizes == sizes[0]).all()):
            raise ConfigError("learner", f"the GNN needs budget groups of equal size, got {sizes.tolist()}")
        key = group * problem.num_users + owner  # group-major, then by user
        if torch.unique(key).numel() != problem.num_vars:
            raise ConfigError("learner", "the GNN needs at most one power variable per group and user")
        slots = torch.argsort(key).view(problem.num_groups, -1)
        size = slots.shape[1]
        user_slot = torch.full((problem.num_groups, problem.num_users), size, dtype=torch.long)
        rows = torch.arange(problem.num_groups)[:, None].expand_as(slots)
        user_slot[rows, owner[slots]] = torch.arange(size).expand_as(slots)
        return cls(slots, owner[slots], user_slot)

    def nodes(self, gains_db: Tensor) -> Tensor:
        """``problem_gains [B, U, V, 2]`` → each node's matrix of its slots' gains at every user, ``[B, G,
        U, S, 3]``: the total gain, the signal and the interference gain, in dB (the learner's input)."""
        total = total_gain_db(gains_db)[..., None]
        both = torch.cat([total, gains_db.to(total.dtype)], dim=-1)  # [B, U, V, 3]
        return both[:, :, self.slots].permute(0, 2, 1, 3, 4)
