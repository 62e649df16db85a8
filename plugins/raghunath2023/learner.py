"""The unsupervised GNN learner of Raghunath, Peng & Jorswieck (2023), Section III (``gnn``).

The problem is read as a graph over its budget groups (:class:`GroupLayout`): each group (an AP in
cell-free, a BS in cellular, a transmitter in the interference channel and the IMAC, whose users each
have their own budget) is a node, each of its power variables a slot, and the node's features live on
the ``U × S`` matrix of its slots' total gains at every user (the ``problem_gains`` feature: gain times
the slot's even share of the budget over the noise, in dB); in cell-free this is each AP's matrix of MRT
gains ``G_l[k, j]``, the paper's input. Two GNNs over the nodes
(:class:`~mimo_l2o_plugins.raghunath2023.gnn.GroupGraphNet`) map it to the lower bound ``a = α(H)`` and
the width ``ℓ = β(H) ≥ 0`` of a uniform power distribution over the variables. Training maximizes eq.
(7) without labels, ``E_{u~U(0,1)} J(Π(a + ℓ ⊙ u)) − κ · Σ ℓ``, by the reparametrization trick, where
``J`` is the run's objective (its smooth form: max-min's soft minimum) on the training problems and
``Π`` clips negatives and scales each group onto its budget. ``κ`` follows eq. (8): 0 for the first ``h``
steps, then ``+Δκ`` when the support did not shrink below its mean over the last ``h`` steps, ``−Δκ/2``
(not below 0) otherwise.

Each entry ``(u, s)`` enters with its normalized log gain and, by default (``features=structured``, not
the paper's), the transposed entry's (the gain of the receiver's own slot at the slot's owner), the
receiver's and the owner's own gains at this node and a flag for the slot's own entry: the SINRnet's
weights are the same for every entry, so these tell it which entries are signals. A gain this node does
not have (a receiver it has no slot for, a beam that does not exist) enters as :data:`MISSING`.

The lower bound is a softplus of the network's read-out (powers > 0, so no gradient is cut off at 0)
in units of ``power_scale`` times each variable's even share of its budget; slots without a beam (no
gain at their own user) get 0.

Decisions: the lower bound ``Π(a)`` (the paper) or the support's midpoint ``Π(a + ℓ/2)``, whichever
scores better on the validation set at each validation (a buffer of the model, so the kept weights
keep their choice); both are reported. With ``refine_steps > 0`` (not the paper's method) the deployed
policy then takes that many projected gradient steps of the objective from it, on the problem it
rebuilds from its input; ``test/objective_ratio_raw`` reports the network alone.

Dense batched tensors, not torch_geometric: the graph is complete by default, and with ``graph:
shared_users`` a ``[B, G, G]`` mask of the nodes that serve a user in common (user-centric cell-free),
applied with one batched matrix product, which for a few tens of nodes costs less than scattering over an
edge list and keeps the policy one exportable graph.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from mimo_l2o_plugins.raghunath2023.gnn import GroupGraphNet
from torch import Tensor, nn

from mimo_l2o.components import Objective
from mimo_l2o.errors import ConfigError, require
from mimo_l2o.features import NO_GAIN_DB, total_gain_db
from mimo_l2o.learner import Learner, LearnerConfig, LearnerSpec, OptimizerName, Schedule, TrainConfig
from mimo_l2o.problems.power_control import PowerControlProblem, even_split
from mimo_l2o.solvers.energy_efficiency import projected_ascent

FEATURE = "problem_gains"
# a normalized gain the node does not have (a receiver it has no slot for, a beam that does not exist):
# three standard deviations below the mean of the gains it has
MISSING = -3.0


class Features(str, Enum):
    gains = "gains"  # the paper's: each entry's own (normalized) log gain
    structured = "structured"  # also the transposed entry, both users' own gains and an own-entry flag

    @property
    def width(self) -> int:
        """Input features per entry (:meth:`GNNPolicy.node_features`)."""
        return 5 if self is Features.structured else 1


class Graph(str, Enum):
    complete = "complete"  # every node hears every other (the paper)
    shared_users = "shared_users"  # nodes hear each other when they serve a user in common


@dataclass
class GNNConfig(LearnerConfig):
    """Parameters
    ----------
    rounds : int
        Message-passing rounds (eq. 10).
    features : Features
        What each entry ``(u, s)`` of a node's gain matrix starts with. ``gains`` (the paper): its
        normalized log gain. ``structured``: also the transposed entry (the gain of ``u``'s own slot at
        the owner of ``s``), the own gains of ``u`` and of the owner at this node and a flag for the
        slot's own entry. A SINRnet layer's four categories are the same for every entry, so without
        them the network tells a signal entry from an interference entry only by its size, and never
        sees the reverse link; all five stay equivariant to relabelling the users and the nodes.
    graph : Graph
        ``complete`` (the paper): every node hears every other. ``shared_users``: nodes hear each
        other when they serve a user in common (user-centric cell-free: the APs that share a UE; in the
        interference channel no two links do, so no node hears another).
    hidden : int
        Features per entry between rounds.
    widths : list[int]
        Features per category of each SINRnet layer inside ``φ`` and ``γ`` (eq. 11).
    norm_shift_mean, norm_shift_std : float
        Eq. (13)'s shifted normalization ``(x − (μ − ε)) / (σ − ε')`` with ``ε = norm_shift_mean · σ``
        and ``ε' = norm_shift_std · σ`` (0, 0: plain standardization).
    kappa_step : float
        ``Δκ`` of eq. (8) (Table I: 0.001).
    kappa_window : int
        ``h`` of eq. (8): steps without regularization, and the window of the support's mean.
    samples : int
        Draws of ``u`` per training sample and step.
    separate : bool
        Two GNNs with their own weights for ``a`` and ``ℓ`` (eq. 12); off: one GNN with two read-outs,
        half the cost.
    power_scale : float
        Unit of the networks' outputs, as a fraction of each variable's even share of its budget: the
        energy-efficiency optimum spends a few per cent of the budget, so outputs of order 1 start near
        it.
    temperature : float
        Sharpness of the smooth objective trained on (``Objective.smooth``: max-min's soft minimum;
        the energy efficiency and the sum rate are their own smooth forms).
    refine_steps : int
        Projected gradient steps of the objective (:func:`~mimo_l2o.solvers.energy_efficiency.
        projected_ascent`) from the network's decision, part of the deployed policy; 0: the network's
        decision itself (the paper's method). Reported beside it as ``test/objective_ratio_raw``.
    refine_lr, refine_final_lr : float
        First and last step of the refinement, as fractions of each variable's even share.
    train : TrainConfig
        The shared loop's settings: Adam from 1e-2 decaying exponentially to 1e-4 over 9,600 steps of
        batch 32 (Table I: 1e-3 to 1e-7 over 120,000 steps of 64, the presets).
    """

    rounds: int = 2
    features: Features = Features.structured
    graph: Graph = Graph.complete
    hidden: int = 16
    widths: list[int] = field(default_factory=lambda: [8, 8])
    norm_shift_mean: float = 0.0
    norm_shift_std: float = 0.0
    kappa_step: float = 1e-3
    kappa_window: int = 50
    samples: int = 1
    separate: bool = False
    power_scale: float = 0.1
    temperature: float = 20.0
    refine_steps: int = 0
    refine_lr: float = 0.1
    refine_final_lr: float = 0.01
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            optimizer=OptimizerName.adam,
            lr=1e-2,
            min_lr=1e-4,
            schedule=Schedule.exponential,
            batch_size=32,
            max_epochs=30,
            max_steps=9600,
            early_stopping_patience=0,
        )
    )

    def __post_init__(self) -> None:
        require(self.rounds >= 1, "rounds", f"must be >= 1, got {self.rounds}")
        require(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")
        require(all(w >= 1 for w in self.widths), "widths", f"must be >= 1, got {list(self.widths)}")
        require(
            0 <= self.norm_shift_std < 1, "norm_shift_std", f"must be in [0, 1), got {self.norm_shift_std}"
        )
        require(self.kappa_step >= 0, "kappa_step", f"must be >= 0, got {self.kappa_step}")
        require(self.kappa_window >= 1, "kappa_window", f"must be >= 1, got {self.kappa_window}")
        require(self.samples >= 1, "samples", f"must be >= 1, got {self.samples}")
        require(self.power_scale > 0, "power_scale", f"must be > 0, got {self.power_scale}")
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        require(self.refine_steps >= 0, "refine_steps", f"must be >= 0, got {self.refine_steps}")
        require(0 < self.refine_lr, "refine_lr", f"must be > 0, got {self.refine_lr}")
        require(
            0 < self.refine_final_lr <= self.refine_lr,
            "refine_final_lr",
            f"must be in (0, refine_lr], got {self.refine_final_lr}",
        )


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


class GNNPolicy(nn.Module):
    """Each node's gains ``[B, G, U, S, 3]`` (:meth:`GroupLayout.nodes` of ``problem_gains``) → powers
    ``[B, V]`` in W.

    :meth:`bounds` gives ``(a, ℓ)``; ``forward`` the lower bound or, when the buffer ``midpoint`` is
    set, the midpoint ``a + ℓ/2`` (not yet feasible: the learner's ``finalize`` projects it).

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
        self.prelog = float(template.prelog)
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
        for name in ("slots", "owner", "user_slot"):
            self.register_buffer(name, getattr(layout, name).clone())
        budget = template.budget[0].float().clone()
        share = even_split(budget, template.group.cpu())  # [V]: each variable's even share
        self.register_buffer("budget", budget)
        self.register_buffer("group", template.group.cpu().long().clone())
        self.register_buffer(
            "var_owner",
            torch.zeros(0, dtype=torch.long)
            if template.owner is None
            else template.owner.cpu().long().clone(),
        )
        self.register_buffer("weights", template.weights[0].float().clone())
        self.register_buffer("var_share", share)
        self.register_buffer("unit", config.power_scale * share[layout.slots])  # [G, S]

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
    def bounds(self, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, ℓ)``, each ``[B, V]`` in W; 0 for the slots without a beam."""
        node_db = nodes[..., 0]
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

    def forward(self, nodes: Tensor, refine: bool = True) -> Tensor:
        """The decision: the lower bound or the midpoint, then (``refine_steps > 0`` and ``refine``)
        that many projected gradient steps of the objective from it, made feasible."""
        a, width = self.bounds(nodes)
        p = torch.where(self.midpoint, a + width / 2, a)
        if not (self.refine_steps and refine):
            return p
        problem = self.problem(nodes)
        start = problem.project(p)
        return projected_ascent(
            problem, self.objective, start, self.refine_steps, self.refine_lr, self.refine_final_lr
        )[0]

    def problem(self, nodes: Tensor) -> PowerControlProblem:
        """The power-control problem the input describes: the gains over the noise (so noise 1: the
        SINRs are those of the gains and noise in W), gains at the floor removed, the template's
        budgets, weights and pre-log."""
        b, g, u, s, _ = nodes.shape
        flat = nodes[..., 1:].permute(0, 2, 1, 3, 4).reshape(b, u, g * s, 2)
        gains_db = torch.empty_like(flat).index_copy_(2, self.slots.flatten(), flat)  # [B, U, V, 2]
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


# Raghunath et al. (2023), Table II: SCA and GNN energy efficiency [Mbit/J] on 1,024 test samples, by
# (APs, UEs), 5 antennas per AP
TABLE_II = {(5, 10): (4.79, 5.67), (10, 10): (5.33, 5.93), (15, 15): (6.29, 7.89)}


class GNNLearner(Learner):
    """Raghunath et al. (2023): an unsupervised GNN with a support-regularized stochastic policy."""

    display_name = "GNN"

    Config = GNNConfig
    resumable = ("kappa", "steps", "last_width", "val_lower", "val_midpoint", "generator")
    requires_labels = False
    inputs = (FEATURE,)
    paper = "raghunath2023"

    @classmethod
    def published(cls, params: dict[str, str]) -> str | None:
        """Table II: the GNN's energy efficiency ÷ SCA's in cell-free networks of 5 antennas per AP."""
        if params.get("scenario.name") != "cellfree" or params.get("objective.name") != "energy_efficiency":
            return None
        key = (int(params.get("scenario.num_aps", 0)), int(params.get("scenario.num_users", 0)))
        if key not in TABLE_II or int(params.get("scenario.num_antennas", 0)) != 5:
            return None
        sca, gnn = TABLE_II[key]
        return f"{gnn / sca:.3f}x SCA ({gnn} vs {sca} Mbit/J, Table II)"

    def __init__(self, config: Any, spec: LearnerSpec):
        super().__init__(config, spec)
        require(spec.objective is not None, "learner", "the runner gave no objective")
        self.layout = GroupLayout.of(spec.problem)
        self.kappa = 0.0
        self.steps = 0
        self.history: deque[float] = deque(maxlen=config.kappa_window)
        self.last_width = math.nan
        self.val_lower = self.val_midpoint = math.nan
        self.generator = torch.Generator().manual_seed(0)

    def prepare(self, features: dict[str, Tensor]) -> Tensor:
        """``problem_gains`` arranged by node (:meth:`GroupLayout.nodes`), float32."""
        return self.layout.nodes(features[FEATURE]).float()

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        self.generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        gains = train_inputs[..., 0].double()
        gains = gains[gains > NO_GAIN_DB]  # the gains the nodes have
        with torch.random.fork_rng(devices=[]):  # nn.Linear's initial weights, from the run's seed only
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            return GNNPolicy(
                self.config,
                self.layout,
                self.spec.problem,
                float(gains.mean()),
                float(gains.std()),
                objective=self.spec.objective,
            )

    @property
    def reports_raw(self) -> bool:
        return self.config.refine_steps > 0

    @property
    def exportable(self) -> bool:
        return self.config.refine_steps == 0  # the refinement's gradient steps are no static graph

    def raw_output(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """The network's decision before the refinement."""
        return model(inputs, refine=False)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        problem = self.batch_problem(batch)
        objective = self.spec.objective
        a, width = model.bounds(batch["inputs"])
        if not model.training:
            lower = objective(problem, problem.project(a)).mean()
            middle = objective(problem, problem.project(a + width / 2)).mean()
            self.val_lower, self.val_midpoint = float(lower), float(middle)
            model.midpoint.fill_(bool(middle > lower))
            return -torch.maximum(lower, middle)
        draws = []
        for _ in range(self.config.samples):
            u = torch.rand(a.shape, generator=self.generator).to(a)
            decision = problem.project(a + width * u)
            draws.append(objective.smooth(problem, decision, self.config.temperature))
        support = width.sum(-1).mean()
        loss = -torch.stack(draws).mean() + self.kappa * support
        self._update_kappa(float(support.detach()))
        return loss

    def _update_kappa(self, support: float) -> None:
        """Eq. (8), one training step: ``κ`` stays 0 for ``h`` steps, then rises by ``Δκ`` while the
        support is not below its mean over the last ``h`` steps, and falls by ``Δκ/2`` (to ≥ 0) otherwise."""
        cfg = self.config
        if self.steps >= cfg.kappa_window:
            window = sum(self.history) / len(self.history)
            self.kappa = (
                self.kappa + cfg.kappa_step
                if window <= support
                else max(0.0, self.kappa - cfg.kappa_step / 2)
            )
        self.history.append(support)
        self.steps += 1
        self.last_width = support / self.spec.problem.num_vars

    def summary(self) -> dict[str, float]:
        return {
            "kappa": self.kappa,
            "support_width_w": self.last_width,
            "last_val_objective_lower": self.val_lower,
            "last_val_objective_midpoint": self.val_midpoint,
        }
