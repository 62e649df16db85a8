"""The fully data-driven benchmark of Ma et al. (2022) (Sec. V-B/C, the paper's ref. [14]): one MLP from
the channels, or the received uplink pilots, to the beamformers, trained on the sum rate
(``data_driven_bf``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from mimo_l2o_plugins.ma2022.networks import DataDrivenNet
from mimo_l2o_plugins.ma2022.one_cell import FEATURE, OneCellBeamformer, _laptop_training, require_widths, rms
from torch import Tensor, nn

from mimo_l2o.errors import require
from mimo_l2o.learner import LearnerConfig, TrainConfig

DATA_INPUTS = {"perfect": FEATURE, "pilots": "uplink_channel"}


@dataclass
class DataDrivenConfig(LearnerConfig):
    """The fully data-driven beamformer (Ma et al. 2022's benchmark, from their ref. [14]).

    Parameters
    ----------
    name : str
        Registry key, ``data_driven_bf``.
    csi : str
        ``perfect``: ``H_DL → V`` (Sec. V-B); ``pilots``: the received uplink pilots (as their LS
        estimate, an invertible map of ``Y_p`` for ``L >= K`` DFT pilots) ``→ V`` (Sec. V-C's end-to-end
        benchmark; set ``scenario.pilot_length``).
    hidden : list[int]
        Hidden layers (BN + ReLU) of the network from all channels' real and imaginary parts to ``V``'s.
    train : TrainConfig
        The shared training loop's settings.
    """

    name: str = "data_driven_bf"
    csi: str = "perfect"
    hidden: list[int] = field(default_factory=lambda: [512, 512])
    train: TrainConfig = field(default_factory=_laptop_training)

    def __post_init__(self) -> None:
        require(self.csi in DATA_INPUTS, "csi", f"must be one of {', '.join(DATA_INPUTS)}, got {self.csi!r}")
        require_widths("hidden", self.hidden)


class DataDrivenLearner(OneCellBeamformer):
    """The fully data-driven beamformer: an MLP from the channels (or pilots) to ``V``, on the sum rate."""

    display_name = "Data-driven"

    Config = DataDrivenConfig

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.inputs = (DATA_INPUTS[config.csi],)

    @classmethod
    def refuses_setting(cls, config, scenario) -> tuple[str, str] | None:
        if config.csi == "pilots" and getattr(scenario.config, "pilot_length", None) is None:
            return (
                "csi",
                f"pilots needs uplink pilots: set scenario.pilot_length (scenario={scenario.name})",
            )
        return None

    @property
    def exportable(self) -> bool:
        return True

    def build_model(self, train_inputs: Tensor, generator: torch.Generator) -> nn.Module:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            k, m = train_inputs.shape[-3], train_inputs.shape[-2]
            return DataDrivenNet(
                k, m, list(self.config.hidden), self.spec.problem.budget[0], rms(train_inputs)
            )
