"""The downlink channels as a beamforming problem: what the beamforming family's scenarios measure the
sum rate on (Zhang et al. 2022, eqs. 2 and 26)."""

from __future__ import annotations

import torch

from mimo_l2o.components import Network, Precoder
from mimo_l2o.problems import BEAMFORMING
from mimo_l2o.problems.beamforming import BeamformingProblem
from mimo_l2o.registry import PRECODERS


@PRECODERS.register("downlink")
class Downlink(Precoder):
    """``h_dl [batch, cells, users, antennas]`` (BS ``c`` to user ``u``) becomes the problem's channel;
    every BS has the budget ``p_max``, every user the noise ``noise_power`` and rate weight 1. The
    beamformers are the decision: nothing is precoded here, the name says what the problem is made of."""

    family = BEAMFORMING
    requires = ("h_dl",)

    def __call__(self, network: Network) -> BeamformingProblem:
        h = network["h_dl"]
        batch, cells, users, _ = h.shape
        real = h.real.dtype
        return BeamformingProblem(
            channel=h,
            noise=torch.full(
                (batch, users), float(network.params["noise_power"]), dtype=real, device=h.device
            ),
            budget=torch.full((batch, cells), float(network.params["p_max"]), dtype=real, device=h.device),
            weights=torch.ones(batch, users, dtype=real, device=h.device),
        )
