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

This file holds the learner (:class:`GNNLearner`: eq. 7's loss and eq. 8's ``κ``); its settings are in
``config.py``, the nodes in ``nodes.py``, the policy in ``policy.py`` and the GNN in ``gnn.py``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import torch
from mimo_l2o_plugins.raghunath2023.config import GNNConfig
from mimo_l2o_plugins.raghunath2023.nodes import GroupLayout
from mimo_l2o_plugins.raghunath2023.policy import GNNPolicy
from torch import Tensor, nn

from mimo_l2o.errors import require
from mimo_l2o.features import NO_GAIN_DB, total_gain_db
from mimo_l2o.learner import Learner, LearnerSpec

FEATURE = "problem_gains"


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
    size_free = True  # no weight depends on the numbers of nodes, slots or users (GNNPolicy.for_problem)

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
        """``problem_gains [B, U, V, 2]``, float32: the policy arranges it by node in its own layout, so
        that the input's size is the problem's, whatever it is (``size_free``)."""
        return features[FEATURE].float()

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        self.generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        gains = total_gain_db(train_inputs.double())
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

    def adapt(self, model: nn.Module, finalize: nn.Module, problem) -> tuple[nn.Module, nn.Module]:
        """The trained GNN on a problem of another size (``eval.shifts`` over the numbers of APs or users):
        its layout, budgets and units rebuilt from ``problem``, its projection onto ``problem``'s budgets."""
        return model.for_problem(problem), problem.feasibility()

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
