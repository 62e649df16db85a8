"""The GNN policy (eq. 12): each node's gains to the lower bound and the width of the uniform power
distribution, the decision and its optional refinement (:class:`GNNPolicy`)."""

from __future__ import annotations

import copy

import torch
from mimo_l2o_plugins.raghunath2023.config import Features, GNNConfig, Graph
from mimo_l2o_plugins.raghunath2023.gnn import GroupGraphNet
from mimo_l2o_plugins.raghunath2023.nodes import GroupLayout
from torch import Tensor, nn

from mimo_l2o.components import Objective
from mimo_l2o.errors import require
from mimo_l2o.features import NO_GAIN_DB
from mimo_l2o.problems.power_control import PowerControlProblem, even_split
from mimo_l2o.solvers.energy_efficiency import projected_ascent

# a normalized gain the node does not have (a receiver it has no slot for, a beam that does not exist):
# three standard deviations below the mean of the gains it has
MISSING = -3.0


class GNNPolicy(nn.Module):
    """The problem's gains ``[B, U, V, 2]`` (``problem_gains``, dB) → powers ``[B, V]`` in W, read as each
    node's gains ``[B, G, U, S, 3]`` (:meth:`GroupLayout.nodes`) in the layout of its buffers.

    :meth:`bounds` gives ``(a, ℓ)``; ``forward`` the lower bound or, when the buffer ``midpoint`` is
    set, the midpoint ``a + ℓ/2`` (not yet feasible: the learner's ``finalize`` projects it). No weight
    depends on the numbers of nodes, slots or users: :meth:`for_problem` gives the same network for a
    problem of another size (its layout, budgets, shares and weights).

    Parameters
    ----------
    layout : GroupLayout
        The problem's groups and slots.
    template : PowerControlProblem
        One problem of the scenario (its structure, budgets, weights and pre-log): the variables'
        shares, and the problem that ``refine_steps`` rebuilds from the input.
    mean, std : float
        Statistics of the training inputs' log gains (dB) that the nodes have.
    objective : Objective, optional
        What ``refine_steps`` ascends.
    """

    def __init__(
        self,
        config: GNNConfig,
        layout: GroupLayout,
        template: PowerControlProblem,
        mean: float,
        std: float,
        objective: Objective | None = None,
    ):
        super().__init__()
        self.separate = config.separate
        self.refine_steps = config.refine_steps
        self.refine_lr, self.refine_final_lr = config.refine_lr, config.refine_final_lr
        self.objective = objective
        require(
            not self.refine_steps or objective is not None, "refine_steps", "refining needs the objective"
        )
        self.features = Features(config.features)
        self.graph = Graph(config.graph)

        def make(outputs: int) -> GroupGraphNet:
            return GroupGraphNet(
                self.features.width, config.rounds, config.hidden, list(config.widths), outputs
            )

        if self.separate:
            self.alpha, self.beta = make(1), make(1)
        else:
            self.net = make(2)
        shift_mean, shift_std = config.norm_shift_mean * std, config.norm_shift_std * std
        self.register_buffer("mean", torch.tensor(mean - shift_mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std - shift_std, dtype=torch.float32))
        self.register_buffer("midpoint", torch.tensor(False))
        self.power_scale = config.power_scale
        self._use(layout, template)

    def _use(self, layout: GroupLayout, template: PowerControlProblem) -> None:
        """(Re)sets what depends on the problem's size: its layout, budgets, owners, weights, shares and
        pre-log (in massive MIMO ``(τ_c − K)/τ_c``)."""
        self.prelog = float(template.prelog)
        device = self.mean.device
        for name in ("slots", "owner", "user_slot"):
            self.register_buffer(name, getattr(layout, name).clone().to(device))
        budget = template.budget[0].float().cpu().clone()
        share = even_split(budget, template.group.cpu())  # [V]: each variable's even share
        owner = torch.zeros(0, dtype=torch.long) if template.owner is None else template.owner.cpu().long()
        self.register_buffer("budget", budget.to(device))
        self.register_buffer("group", template.group.cpu().long().clone().to(device))
        self.register_buffer("var_owner", owner.clone().to(device))
        self.register_buffer("weights", template.weights[0].float().cpu().clone().to(device))
        self.register_buffer("var_share", share.to(device))
        self.register_buffer("unit", (self.power_scale * share[layout.slots]).to(device))  # [G, S]

    def for_problem(self, problem: PowerControlProblem) -> GNNPolicy:
        """This policy for ``problem``, of any number of nodes and users of the same family: the trained
        networks and normalization shared, the buffers of ``problem``'s size (:class:`GroupLayout`; raises
        :class:`~mimo_l2o.errors.ConfigError` where its groups are uneven)."""
        policy = copy.copy(self)
        policy._buffers = dict(self._buffers)  # the copy's own buffers; the modules stay shared
        policy._use(GroupLayout.of(problem), problem)
        return policy

    def layout_nodes(self, gains_db: Tensor) -> Tensor:
        """``problem_gains [B, U, V, 2]`` → each node's gains ``[B, G, U, S, 3]`` (GroupLayout.nodes)."""
        return GroupLayout(self.slots, self.owner, self.user_slot).nodes(gains_db)

    # ---- the graph ---------------------------------------------------------------------------
    def normalized(self, node_db: Tensor) -> Tensor:
        """Standardized log gains (eq. 13), :data:`MISSING` where the node has no gain."""
        return torch.where(node_db > NO_GAIN_DB, (node_db - self.mean) / self.std, MISSING)

    def served(self, node_db: Tensor) -> Tensor:
        """``[B, G, S]``: slot ``s`` of node ``g`` has a beam (a gain at its own user)."""
        own = node_db.gather(2, self.owner[None, :, None, :].expand(node_db.shape[0], -1, 1, -1))
        return own.squeeze(2) > NO_GAIN_DB

    def adjacency(self, served: Tensor) -> Tensor | None:
        """``None`` (the complete graph) or, for ``shared_users``, ``[B, G, G]``: nodes ``i ≠ j`` serve a
        user in common. No branch on the data, so the policy exports as one graph."""
        if self.graph is Graph.complete:
            return None
        b, g, s = served.shape
        users = served.new_zeros(b, g, self.user_slot.shape[1], dtype=torch.float32)
        users = users.scatter(2, self.owner.expand(b, g, s), served.float())
        shared = torch.bmm(users, users.transpose(1, 2)) > 0
        return shared & ~torch.eye(g, dtype=torch.bool, device=served.device)

    def node_features(self, x: Tensor) -> Tensor:
        """Normalized log gains ``[B, G, U, S]`` → each node's entry features ``[B, G, U, S, F]``."""
        if self.features is Features.gains:
            return x.unsqueeze(-1)
        b, g, u, s = x.shape
        padded = torch.cat([x, x.new_full((b, g, u, 1), MISSING)], dim=-1)  # slot S: "no slot"
        user_slot = self.user_slot[None, :, :, None].expand(b, g, u, 1)
        receiver = padded.gather(3, user_slot).expand(b, g, u, s)  # (u, s): u's own gain at this node
        beam = x.gather(2, self.owner[None, :, None, :].expand(b, g, 1, s)).expand(b, g, u, s)
        # (u, s): the gain of u's own slot at the owner of s
        owner_rows = padded.gather(2, self.owner[None, :, :, None].expand(b, g, s, s + 1))  # [B, G, S, S+1]
        transposed = owner_rows.gather(3, self.user_slot[None, :, None, :].expand(b, g, s, u)).transpose(2, 3)
        own = (torch.arange(u, device=x.device)[:, None] == self.owner[:, None, :]).to(x.dtype)  # [G, U, S]
        return torch.stack([x, transposed, receiver, beam, own.expand(b, g, u, s)], dim=-1)

    def to_variables(self, per_slot: Tensor) -> Tensor:
        """``[B, G, S]`` per slot → ``[B, V]`` per variable."""
        out = per_slot.new_zeros(per_slot.shape[0], self.var_share.shape[0])
        return out.index_copy(1, self.slots.flatten(), per_slot.flatten(1))

    # ---- the policy --------------------------------------------------------------------------
    def bounds(self, gains_db: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, ℓ)`` of the problem's gains ``[B, U, V, 2]``, each ``[B, V]`` in W; 0 for the slots
        without a beam."""
        node_db = self.layout_nodes(gains_db)[..., 0]
        served = self.served(node_db)
        x = self.node_features(self.normalized(node_db))
        adjacency = self.adjacency(served)
        if self.separate:
            out_a, out_w = self.alpha(x, self.owner, adjacency), self.beta(x, self.owner, adjacency)
        else:
            out_a, out_w = self.net(x, self.owner, adjacency).unbind(-1)
        # softplus keeps every power > 0, so no variable's gradient is cut off at 0: a linear lower bound
        # clipped at 0 fell into all powers <= 0 (EE 0, every gradient 0 for good) in 6,000 steps at
        # lr 2e-2, where softplus reached 0.958 of SCA's EE
        a = self.unit * nn.functional.softplus(out_a) * served
        width = self.unit * nn.functional.softplus(out_w) * served
        return self.to_variables(a), self.to_variables(width)

    def forward(self, gains_db: Tensor, refine: bool = True) -> Tensor:
        """The decision: the lower bound or the midpoint, then (``refine_steps > 0`` and ``refine``)
        that many projected gradient steps of the objective from it, made feasible."""
        a, width = self.bounds(gains_db)
        p = torch.where(self.midpoint, a + width / 2, a)
        if not (self.refine_steps and refine):
            return p
        problem = self.problem(gains_db)
        start = problem.project(p)
        return projected_ascent(
            problem, self.objective, start, self.refine_steps, self.refine_lr, self.refine_final_lr
        )[0]

    def problem(self, gains_db: Tensor) -> PowerControlProblem:
        """The power-control problem the input ``[B, U, V, 2]`` describes: the gains over the noise (so
        noise 1: the SINRs are those of the gains and noise in W), gains at the floor removed, the
        template's budgets, weights and pre-log."""
        linear = torch.where(gains_db > NO_GAIN_DB, 10 ** (gains_db / 10), 0.0) / self.var_share[:, None]
        b, u = gains_db.shape[:2]
        return PowerControlProblem(
            signal_gain=linear[..., 0],
            interference_gain=linear[..., 1],
            noise=gains_db.new_ones(b, u),
            group=self.group,
            budget=self.budget.expand(b, -1),
            weights=self.weights.expand(b, -1),
            prelog=self.prelog,
            owner=self.var_owner if self.var_owner.numel() else None,
        )
