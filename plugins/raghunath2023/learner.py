"""The unsupervised GNN learner of Raghunath, Peng & Jorswieck (2023), Section III (``gnn``).

Two GNNs over the APs (:class:`~mimo_l2o_plugins.raghunath2023.gnn.APGraphNet`) map the MRT gains to
the lower bound ``a = α(H)`` and the width ``ℓ = β(H) ≥ 0`` of a uniform power distribution over the
``K·L`` (UE, AP) pairs. Training maximizes eq. (7) without labels,
``E_{u~U(0,1)} J(Π(a + ℓ ⊙ u)) − κ · Σ ℓ``, by the reparametrization trick, where ``J`` is the run's
objective (energy efficiency) on the training problems and ``Π`` clips negatives and scales each AP
onto its budget. ``κ`` follows eq. (8): 0 for the first ``h`` steps, then ``+Δκ`` when the support did
not shrink below its mean over the last ``h`` steps, ``−Δκ/2`` (not below 0) otherwise.

Each entry ``(k, j)`` of an AP's gain matrix enters with its log gain and, by default
(``features=structured``, not the paper's), the transposed entry's, both UEs' own gains and a flag for
the diagonal: the SINRnet's weights are the same for every entry, so these tell it which entries are
signals.

The lower bound is a softplus of the network's read-out (powers > 0, so no gradient is cut off at 0)
in units of ``power_scale`` times each AP's even share; pairs that no beam serves get 0.

Decisions: the lower bound ``Π(a)`` (the paper) or the support's midpoint ``Π(a + ℓ/2)``, whichever
scores better on the validation set at each validation (a buffer of the model, so the kept weights
keep their choice); both are reported. With ``refine_steps > 0`` (not the paper's method) the deployed
policy then takes that many projected gradient steps of the objective from it, on the problem it
rebuilds from its input; ``test/objective_ratio_raw`` reports the network alone.

Dense batched tensors, not torch_geometric: the graph is complete by default (every AP serves every
UE), and under user-centric association it is a ``[B, L, L]`` mask of the APs that share a UE, applied
with one batched matrix product, which for ``L ≤ 15`` nodes costs less than scattering over an edge
list and keeps the policy one exportable graph.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from mimo_l2o_plugins.raghunath2023.gnn import APGraphNet
from torch import Tensor, nn

from mimo_l2o.components import Objective
from mimo_l2o.errors import require
from mimo_l2o.learner import Learner, LearnerConfig, LearnerSpec, OptimizerName, Schedule, TrainConfig
from mimo_l2o.precoders.mrt import cellfree_problem
from mimo_l2o.problems.power_control import PowerControlProblem, project_onto_budgets
from mimo_l2o.scenarios.cellfree import MRT_GAINS_FLOOR_DB
from mimo_l2o.solvers.energy_efficiency import projected_ascent

FEATURE = "mrt_gains"


class Features(str, Enum):
    gains = "gains"  # the paper's: each entry's own (normalized) log gain
    structured = "structured"  # also the transposed entry, both UEs' own gains and a diagonal flag

    @property
    def width(self) -> int:
        """Input features per entry (:meth:`GNNPolicy.node_features`)."""
        return 5 if self is Features.structured else 1


@dataclass
class GNNConfig(LearnerConfig):
    """Parameters
    ----------
    rounds : int
        Message-passing rounds (eq. 10).
    features : Features
        What each entry ``(k, j)`` of an AP's gain matrix starts with. ``gains`` (the paper): its
        normalized log gain. ``structured``: also the transposed entry ``(j, k)``, the own gains of UE
        ``k`` and UE ``j`` and a flag ``k = j``. A SINRnet layer's four categories are the same for every
        entry, so without them the network tells a signal entry from an interference entry only by its
        size, and never sees the reverse link; all five stay equivariant to relabelling the UEs (rows and
        columns alike) and the APs.
    hidden : int
        Features per channel entry between rounds.
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
        Two GNNs with their own weights for ``a`` and ``ℓ`` (eq. 12); off: one GNN with two read-outs
        (the issue's "two heads"), half the cost.
    power_scale : float
        Unit of the networks' outputs, as a fraction of each AP's budget split evenly over its UEs: the
        EE optimum spends a few per cent of the budget, so outputs of order 1 start near it.
    refine_steps : int
        Projected gradient steps of the objective (:func:`~mimo_l2o.solvers.energy_efficiency.
        projected_ascent`) from the network's decision, part of the deployed policy; 0: the network's
        decision itself (the paper's method). Reported beside it as ``test/objective_ratio_raw``.
    refine_lr, refine_final_lr : float
        First and last step of the refinement, as fractions of each AP's budget split evenly.
    """

    rounds: int = 2
    features: Features = Features.structured
    hidden: int = 16
    widths: list[int] = field(default_factory=lambda: [8, 8])
    norm_shift_mean: float = 0.0
    norm_shift_std: float = 0.0
    kappa_step: float = 1e-3
    kappa_window: int = 50
    samples: int = 1
    separate: bool = False
    power_scale: float = 0.1
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
        require(self.refine_steps >= 0, "refine_steps", f"must be >= 0, got {self.refine_steps}")
        require(0 < self.refine_lr, "refine_lr", f"must be > 0, got {self.refine_lr}")
        require(
            0 < self.refine_final_lr <= self.refine_lr,
            "refine_final_lr",
            f"must be in (0, refine_lr], got {self.refine_final_lr}",
        )


# gains above this (dB) are beams that exist; the scenario puts the others exactly at its floor
BEAM_DB = MRT_GAINS_FLOOR_DB + 1.0


def served_pairs(gains_db: Tensor) -> Tensor:
    """``[B, L, K]``: AP ``l`` beams to UE ``k`` (its own MRT gain is above the feature's floor)."""
    return gains_db.diagonal(dim1=-2, dim2=-1) > BEAM_DB


def association_graph(gains_db: Tensor) -> tuple[Tensor, Tensor]:
    """From MRT gains in dB ``[B, L, K, K]``: ``served [B, L, K]`` (AP ``l`` beams to UE ``k``: its own
    gain is above the feature's floor, where the scenario puts the beams that do not exist) and the
    fronthaul graph ``[B, L, L]`` (bool): APs ``i ≠ j`` are linked when they serve a UE in common, which
    is the complete graph when every AP serves every UE. No branch on the data, so the policy exports
    as one graph (``torch.export``, MLflow's default format)."""
    served = served_pairs(gains_db)
    s = served.to(gains_db.dtype)
    shared = torch.bmm(s, s.transpose(1, 2)) > 0
    eye = torch.eye(s.shape[1], dtype=torch.bool, device=s.device)
    return served, shared & ~eye


class GNNPolicy(nn.Module):
    """MRT gains in dB ``[B, L, K, K]`` → powers ``[B, K·L]`` in W (``v = k·L + l``).

    :meth:`bounds` gives ``(a, ℓ)``; ``forward`` the lower bound or, when the buffer ``midpoint`` is
    set, the midpoint ``a + ℓ/2`` (not yet feasible: the learner's ``finalize`` projects it).
    """

    def __init__(
        self,
        config: GNNConfig,
        share: float,
        mean: float,
        std: float,
        budget: Tensor | None = None,
        objective: Objective | None = None,
    ):
        super().__init__()
        self.separate = config.separate
        self.refine_steps = config.refine_steps
        self.refine_lr, self.refine_final_lr = config.refine_lr, config.refine_final_lr
        self.objective = objective
        require(
            not self.refine_steps or (budget is not None and objective is not None),
            "refine_steps",
            "refining needs the budgets and the objective",
        )
        self.features = Features(config.features)

        def make(outputs: int) -> APGraphNet:
            return APGraphNet(self.features.width, config.rounds, config.hidden, list(config.widths), outputs)

        if self.separate:
            self.alpha, self.beta = make(1), make(1)
        else:
            self.net = make(2)
        shift_mean, shift_std = config.norm_shift_mean * std, config.norm_shift_std * std
        self.register_buffer("mean", torch.tensor(mean - shift_mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std - shift_std, dtype=torch.float32))
        self.register_buffer("share", torch.tensor(share * config.power_scale, dtype=torch.float32))
        self.register_buffer("midpoint", torch.tensor(False))
        self.register_buffer("budget", torch.zeros(0) if budget is None else budget.float().clone())

    def bounds(self, gains_db: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, ℓ)``, each ``[B, K·L]`` in W; 0 for the pairs that no beam serves."""
        served, adjacency = association_graph(gains_db)
        x = self.node_features((gains_db - self.mean) / self.std)
        if self.separate:
            out_a, out_w = self.alpha(x, adjacency), self.beta(x, adjacency)  # [B, L, K] each
        else:
            out_a, out_w = self.net(x, adjacency).unbind(-1)
        # softplus keeps every power > 0, so no pair's gradient is cut off at 0: a linear lower bound
        # clipped at 0 fell into all powers <= 0 (EE 0, every gradient 0 for good) in 6,000 steps at
        # lr 2e-2, where softplus reached 0.958 of SCA's EE
        a = self.share * nn.functional.softplus(out_a) * served
        width = self.share * nn.functional.softplus(out_w) * served
        return a.transpose(1, 2).flatten(1), width.transpose(1, 2).flatten(1)

    def node_features(self, x: Tensor) -> Tensor:
        """Normalized log gains ``[B, L, K, K]`` → each AP's entry features ``[B, L, K, K, F]``."""
        if self.features is Features.gains:
            return x.unsqueeze(-1)
        k = x.shape[-1]
        own = x.diagonal(dim1=-2, dim2=-1)  # [B, L, K]: each UE's own gain
        eye = torch.eye(k, dtype=x.dtype, device=x.device).expand_as(x)
        receiver = own.unsqueeze(-1).expand_as(x)  # (k, j): UE k's own gain
        beam = own.unsqueeze(-2).expand_as(x)  # (k, j): UE j's own gain
        return torch.stack([x, x.transpose(-1, -2), receiver, beam, eye], dim=-1)

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
        """The power-control problem the input describes: MRT gains relative to the noise (so noise 1:
        the SINRs are those of the gains and noise in W), beams at the feature's floor removed."""
        gains = torch.where(gains_db > BEAM_DB, 10 ** (gains_db / 10), 0.0)
        problem = cellfree_problem(gains, served_pairs(gains_db), 1.0, 1.0)
        return problem.with_batched_tensors({"budget": self.budget.expand(gains_db.shape[0], -1)})


class GNNLearner(Learner):
    """Raghunath et al. (2023): an unsupervised GNN with a support-regularized stochastic policy."""

    Config = GNNConfig
    requires_labels = False
    inputs = (FEATURE,)

    def __init__(self, config: Any, spec: LearnerSpec):
        super().__init__(config, spec)
        shape = spec.input_shapes.get(FEATURE)
        require(
            shape is not None and len(shape) == 3, "scenario", f"the learner needs the feature '{FEATURE}'"
        )
        num_aps, k, _ = shape
        require(spec.problem.num_vars == num_aps * k, "scenario", "needs one power per (UE, AP) pair")
        require(spec.objective is not None, "learner", "the runner gave no objective")
        self.num_aps, self.num_users = num_aps, k
        self.kappa = 0.0
        self.steps = 0
        self.history: deque[float] = deque(maxlen=config.kappa_window)
        self.last_width = math.nan
        self.val_lower = self.val_midpoint = math.nan
        self.generator = torch.Generator().manual_seed(0)

    def prepare(self, features: dict[str, Tensor]) -> Tensor:
        return features[FEATURE].float()

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        self.generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        share = float(self.spec.problem.budget[0].min()) / self.num_users
        flat = train_inputs.double().flatten()
        with torch.random.fork_rng(devices=[]):  # nn.Linear's initial weights, from the run's seed only
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            return GNNPolicy(
                self.config,
                share,
                float(flat.mean()),
                float(flat.std()),
                budget=self.spec.problem.budget[0],
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

    def _decide(self, problem, raw: Tensor) -> Tensor:
        return project_onto_budgets(raw, problem.group, problem.budget)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        problem = self.batch_problem(batch)
        objective = self.spec.objective
        a, width = model.bounds(batch["inputs"])
        if not model.training:
            lower = objective(problem, self._decide(problem, a)).mean()
            middle = objective(problem, self._decide(problem, a + width / 2)).mean()
            self.val_lower, self.val_midpoint = float(lower), float(middle)
            model.midpoint.fill_(bool(middle > lower))
            return -torch.maximum(lower, middle)
        draws = []
        for _ in range(self.config.samples):
            u = torch.rand(a.shape, generator=self.generator).to(a)
            draws.append(objective(problem, self._decide(problem, a + width * u)))
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
