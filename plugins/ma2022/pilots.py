"""Implicit channel estimation (Sec. IV-B, eq. 22): the feature ``uplink_pilot_phase`` (registered on
import), from which a network forms the received uplink pilots itself, and the pilots' power
constraint."""

from __future__ import annotations

import torch
from torch import Tensor

from mimo_l2o.features import feature

PILOT_FEATURE = "uplink_pilot_phase"


def _pilot_phase_unavailable(scenario, precoder) -> str | None:
    if "pilot_noise" not in scenario.tensors:
        return "it samples no uplink pilot noise (pilot_noise)"
    if getattr(scenario.config, "pilot_length", None) is None:
        return "scenario.pilot_length is null (perfect CSI): set the uplink pilots' length L"
    return None


@feature(PILOT_FEATURE, reads_problem=False, unavailable=_pilot_phase_unavailable)
def uplink_pilot_phase(scenario, network, problem) -> Tensor:
    """``[batch, 1, M, K + L]`` complex: the uplink channels ``H_UL`` (``M × K``, column ``k`` user ``k``'s)
    times ``√P_UL``, beside the noise ``N`` (``M × L``) of the received pilots: what a network that designs
    its own pilots needs to form ``Y_p = √P_UL H_UL X̃ + N`` (eq. 7, the pilots ``√P_UL X̃`` with
    ``‖x̃_k‖² <= L``) inside itself, the uplink transmission being part of the learned system. The users'
    power rides on the channel, so a model trained at one ``P_UL`` reads another's."""
    power = float(scenario.config.pilot_power)
    return torch.cat((network["h_ul"].transpose(-1, -2) * power**0.5, network["pilot_noise"]), -1)


def onto_pilot_power(X: Tensor) -> Tensor:
    """Each user's pilot row ``x̃_k`` of ``X [K, L]`` scaled onto ``‖x̃_k‖² <= L`` (eq. 22's constraint in
    units of ``P_UL``; a row inside stays)."""
    length = X.shape[-1]
    norm = torch.linalg.vector_norm(X, dim=-1, keepdim=True)
    return X * torch.clamp(length**0.5 / norm.clamp_min(torch.finfo(norm.dtype).tiny), max=1.0)
