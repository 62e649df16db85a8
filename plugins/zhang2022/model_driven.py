"""The model-driven beamforming learner of Zhang, You, Zheng, Krikidis & Zhao (2022) (``model_driven``).

From the uplink channel information the BS has, two sub-nets learn what the structure of the optimal
downlink beamformer needs (Section IV, Fig. 1):

* **CSI-Net** (fully connected, ``tanh``, a linear output layer): the downlink channels ``Ĥ_D`` from the
  uplink ones, trained on ``L_H`` (eq. 8, the mean squared error per real entry). ``csi_sharing: joint``
  maps all ``K`` users' channels at once (2·N·K values in and out, the paper's Sec. VII-A net);
  ``per_user`` shares one net over the users (2·N values each), which the paper suggests when users'
  channels are alike; it can't learn a per-user factor (the ``c_k`` of ``miso_tdd``'s fixed mismatch).
* **Power-Net** (fully connected, batch normalization and ``ReLU``, a ``softmax`` output times ``P``):
  the downlink powers ``p`` and the virtual uplink powers ``q`` (``Σp = Σq = P``), trained on ``L_P``
  (eq. 9) against the solver's: ``p_k = ‖w_k‖²`` of its beamformers and ``q`` from uplink-downlink
  duality (:func:`~mimo_l2o.solvers.beamformers.dual_uplink_powers`).
* **beamforming recovery** (no parameters): ``w_k = √p_k (I + Σ_j q_j/σ² ĥ_j ĥ_jᴴ)⁻¹ ĥ_k / ‖·‖`` (eq. 7
  with ``q_j`` in the sum, as in ref. [23]; ``recovery: structure``), the same in the K-dimensional basis
  of eq. (23) (``reduced``), or ZF directions ``Ĥ(ĤᴴĤ)⁻¹`` with the learned powers ``p`` (``zf``:
  Sec. V-C; eq. 24 prints one common scale, here each direction gets its ``p_k``, of which a common
  scale is one choice).

The hybrid loss (eq. 10) is ``α_H L_H + α_P L_P + α_R L_R`` with ``L_R = −R_sum``, the sum rate of the
recovered beamformers: ``α_R >= 0`` multiplies ``−R_sum`` (the paper's multicell ``α_R = −1`` would
minimize the rate with that sign; its magnitude is what it means). Defaults ``α_H = α_P = α_R = 1``, not
the paper's ``α_R = 0.001``: with ``L_P`` on the powers over ``P`` (below) and ``L_H`` on unit-variance
channels, ``0.001`` leaves the rate term no effect and training becomes supervised alone, which WMMSE's
labels (users switched off at high SNR, a discontinuous map) make a worse target than the rate itself
(the measured comparison is in README.md). The paper computes ``R_sum`` on the learned channel; the
true downlink channel is available in training (``L_H`` needs it) and is what the rate is measured on,
so ``rate_channel: true`` (default) uses it and ``learned`` follows the paper's wording. ``L_H`` and
``L_P`` are in the problem's own units (channels as sampled), except that ``L_P`` is taken on the powers
over ``P`` by default (``power_unit``): the paper does not say its unit, and in the unit of ``P`` (100
at 20 dB) ``L_P`` is about 10⁴ times larger, which leaves ``α_R = 0.001`` without effect: training is
then supervised alone.

The rate's gradient does not reach the CSI-Net by default (``rate_into_csi: false``, not the paper's
joint training): the CSI-Net learns the channel, the Power-Net learns the powers for it.

In several cells (Sec. VI-C) the learner is :class:`MulticellNet`: one network at every BS, each reading
only its own uplink observations, and the SLNR structure of eq. (35); ``recovery: slnr``,
``csi_features: paths`` and ``csi_skip`` use the same per-link network in one cell, where it recovers
with eq. (7), (23), ZF or eq. (35) as ``recovery`` says.

``variant: channel_zf`` is the paper's "learned channel + ZF" benchmark: the CSI-Net alone, trained on
``L_H``, and ZF of the learned channel on the budget (eq. 24). ``channel_bf`` is its "learned channel and
beamforming" benchmark (Sec. VII): the CSI-Net on ``L_H``, and a data-driven beamforming net (the
Power-Net's layers, ``2·N·K`` values out, scaled onto the budget) that reads the learned channel and is
trained on the sum rate alone (unsupervised), its gradient kept out of the CSI-Net: the two are the
paper's separate stages, trained in one loop (single cell). Supervised-only and unsupervised-only
training are ``alpha_r=0`` and ``alpha_h=0 alpha_p=0``.

This file holds the learner; its settings are in ``config.py``, the CSI features in ``csi_features.py``,
the single-cell networks in ``networks.py`` and the per-link one in ``multicell.py``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from mimo_l2o_plugins.zhang2022.config import (
    CSIFeatures,
    ModelDrivenConfig,
    PowerNetKind,
    PowerUnit,
    RateChannel,
    Recovery,
    Variant,
    per_link,
    per_link_reason,
)
from mimo_l2o_plugins.zhang2022.csi_features import path_features
from mimo_l2o_plugins.zhang2022.multicell import MulticellNet
from mimo_l2o_plugins.zhang2022.networks import ModelDrivenNet
from torch import Tensor, nn

from mimo_l2o.learner import Learner
from mimo_l2o.problems import BEAMFORMING
from mimo_l2o.problems.beamforming import BeamformingProblem
from mimo_l2o.solvers import beamformers as bf

FEATURE = "uplink_channel"


class ModelDrivenLearner(Learner):
    """Zhang et al. (2022): CSI-Net + Power-Net + the optimal beamforming structure, trained on the hybrid
    loss (supervised on the channel and the solver's powers, unsupervised on the sum rate)."""

    display_name = "Model-driven"

    Config = ModelDrivenConfig
    requires_labels = True
    families = (BEAMFORMING,)
    inputs = (FEATURE,)
    paper = "zhang2022"

    @classmethod
    def refuses(cls, scenario, precoder) -> str | None:
        return None

    @classmethod
    def refuses_setting(cls, config, scenario) -> tuple[str, str] | None:
        """``variant: channel_bf`` or ``power_net: cnn`` where the per-link network runs
        (:func:`per_link_reason`), ``csi_paths`` above ``N_t // 2``, and a ZF recovery or benchmark with
        fewer antennas than users per cell."""
        cells = int(getattr(scenario.config, "num_cells", 1))
        n, k = int(scenario.config.num_antennas), int(scenario.config.num_users)
        variant, recovery = Variant(config.variant), Recovery(config.recovery)
        where = per_link_reason(cells, config)
        if where and cells > 1:
            where = f"scenario={scenario.name} has {where}"
        if PowerNetKind(config.power_net) == PowerNetKind.cnn and where:
            return (
                "power_net",
                f"cnn is the single-cell Power-Net of Sec. VII-B, not the per-link network ({where}); use fc",
            )
        if (
            where
            and CSIFeatures(config.csi_features or CSIFeatures.beamspace) == CSIFeatures.paths
            and (config.csi_paths > n // 2)
        ):
            return (
                "csi_paths",
                f"must be at most num_antennas // 2 = {n // 2} for the matrix pencil, got {config.csi_paths}",
            )
        if variant == Variant.channel_bf and where:
            return (
                "variant",
                f"channel_bf is the joint single-cell network's, not the per-link network's ({where}); "
                "use hybrid, channel_zf or channel_slnr",
            )
        if (recovery == Recovery.zf or variant == Variant.channel_zf) and n < k:
            what = "recovery=zf" if recovery == Recovery.zf else "variant=channel_zf"
            key = "recovery" if recovery == Recovery.zf else "variant"
            return (
                key,
                f"{what} needs antennas >= users per cell "
                f"(scenario.num_antennas={n} < scenario.num_users={k})",
            )
        return None

    @property
    def uses_problems(self) -> bool:
        return True  # the true downlink channel for L_H and the sum rate, the duality for q

    @property
    def exportable(self) -> bool:
        return False  # complex linear algebra in the recovery module: logged by pickle

    def prepare(self, features: dict[str, Tensor]) -> Tensor:
        """``uplink_channel [B, C, U, N]`` → real and imaginary parts ``[B, 2·K·N]`` (float32) for one cell;
        ``[B, C, U, N, 2]`` (float64: the gains span many decades) for the per-link network;
        ``[B, C, U, 2N, 2]`` with ``csi_features: paths``: each column, then its :func:`path_features`
        (computed once here, not in every epoch's forward pass)."""
        h = features[FEATURE]
        if not per_link(h.shape[1], self.config):
            return torch.view_as_real(h).flatten(1).float()
        if CSIFeatures(self.config.csi_features or CSIFeatures.beamspace) == CSIFeatures.paths:
            h = h.to(torch.complex128)
            h = torch.cat((h, path_features(h, self.config.csi_paths)), -1)
        return torch.view_as_real(h).double()

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        problem = self.spec.problem
        scale = float(train_inputs.square().mean().sqrt().clamp_min(1e-30)) * 2**0.5
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):  # PyTorch's default initialization, from the run's seed
            torch.manual_seed(seed)
            if per_link(problem.num_cells, self.config):
                return MulticellNet(
                    self.config,
                    problem.num_cells,
                    problem.num_antennas,
                    problem.users_per_cell,
                    float(problem.budget[0, 0]),
                    float(problem.noise[0, 0]),
                    train_inputs,
                )
            return ModelDrivenNet(
                self.config,
                problem.num_antennas,
                problem.users_per_cell,
                float(problem.budget[0, 0]),
                float(problem.noise[0, 0]),
                scale,
            )

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        cfg = self.config
        problem = self.batch_problem(batch)
        if isinstance(model, MulticellNet):
            return model.loss(cfg, problem, batch, self.spec.objective)
        H_true = bf.own_channels(problem)[:, 0]  # [B, N, K]
        H, p, q = model.parts(batch["inputs"])
        loss_h = torch.view_as_real(H - H_true).square().mean()
        if model.variant == Variant.channel_zf:
            return loss_h
        if model.variant == Variant.channel_bf:  # the rate trains the beamforming net alone
            return cfg.alpha_h * loss_h - cfg.alpha_r * self._rate(
                problem, H, model.beamformers(H.detach(), None, None)
            )
        labels = batch["labels"]
        p_label = labels[:, 0].abs().square().sum(-2)
        with torch.no_grad():
            q_label = bf.dual_uplink_powers(
                problem.to(dtype=torch.float64), labels.to(torch.complex128)
            ).float()
        unit = (
            model.budget if PowerUnit(cfg.power_unit) == PowerUnit.budget else torch.ones_like(model.budget)
        )
        loss_p = 0.5 * (((p - p_label) / unit).square().mean() + ((q - q_label) / unit).square().mean())
        W = model.beamformers(H if cfg.rate_into_csi else H.detach(), p, q)  # None: not in one cell
        return cfg.alpha_h * loss_h + cfg.alpha_p * loss_p - cfg.alpha_r * self._rate(problem, H, W)

    def _rate(self, problem: BeamformingProblem, H: Tensor, W: Tensor) -> Tensor:
        """The loss's mean sum rate of ``W``: on the true downlink channel, or on the learned ``H``
        (``rate_channel: learned``)."""
        if RateChannel(self.config.rate_channel) == RateChannel.learned:
            problem = dataclasses.replace(problem, channel=H.transpose(-1, -2).unsqueeze(1))
        return self.spec.objective(problem, W).mean()

    def validation_loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        """``−R_sum`` of the beamformers on the true downlink channel [bit/s/Hz]: the goal, which picks
        the best epoch (the supervised terms fall on while the rate has stopped improving, or the reverse);
        ``L_H`` for ``channel_zf``, whose only goal is the channel."""
        if model.variant in (Variant.channel_zf, Variant.channel_slnr):
            return self.loss(model, batch)
        return -self.spec.objective(self.batch_problem(batch), model(batch["inputs"])).mean()

    def test_metrics(self, model: nn.Module, inputs: Tensor, problem) -> dict[str, float]:
        """``nmse_channel``: the NMSE of the learned downlink channel, eq. (39), ``E[‖Ĥ_D − H_D‖² / ‖H_D‖²]``
        (each BS's channel matrix to every user in several cells), and the same in dB
        (``nmse_channel_db``); ``learned_channel/objective_<name>``: the mean objective, on the true
        channel, of each closed-form beamformer computed on the learned one (Sec. VII's "learned channel +"
        benchmarks): MRT, ZF (where ``N_t >= K``), RZF, and SLNR in several cells; divided by
        ``test/objective_solver`` it is comparable to the learner's ratio."""
        true = problem.to(dtype=torch.float64)
        H = model.channel(inputs).to(torch.complex128)
        if not isinstance(model, MulticellNet):  # [B, N, K] → the problem's layout [B, 1, K, N]
            H = H.transpose(-1, -2).unsqueeze(1)
        H_true = true.channel.to(torch.complex128)
        nmse = float(((H - H_true).abs().square().sum((-2, -1)) / H_true.abs().square().sum((-2, -1))).mean())
        metrics = {"nmse_channel": nmse, "nmse_channel_db": 10 * math.log10(max(nmse, 1e-300))}
        learned = dataclasses.replace(true, channel=H)
        closed_forms = {"mrt_bf": bf.mrt, "rzf_bf": bf.rzf}
        if bf.zf_refusal(true) is None:
            closed_forms["zf_bf"] = bf.zf
        if true.num_cells > 1:
            closed_forms["slnr_bf"] = bf.slnr_alternating
        for name, form in sorted(closed_forms.items()):
            objective = self.spec.objective(true, form(learned))
            metrics[f"learned_channel/objective_{name}"] = float(objective.mean())
        return metrics
