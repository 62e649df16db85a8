"""No precoding: single-antenna links, the scalar interference channel of Sun et al. (2018)."""

from __future__ import annotations

from torch import Tensor

from mimo_l2o.components import Network, Precoder
from mimo_l2o.problems.power_control import PowerControlProblem
from mimo_l2o.registry import PRECODERS


def link_gains(network: Network) -> Tensor:
    """``[batch, K, K]`` power gains from transmitter j to the receiver of user k.

    Either stored as ``gains`` (interference channel), or built from ``bs_gains [batch, N, K]``
    and ``params["serving_cell"]``: in the interfering MAC user k is decoded at its own cell's BS
    (no SIC), so ``gains[b, k, j] = bs_gains[b, serving_cell[k], j]`` (Sun et al. 2018, footnote 1).
    """
    if "gains" in network.tensors:
        return network["gains"]
    return network["bs_gains"][:, network.params["serving_cell"], :]


@PRECODERS.register("none")
class NoPrecoder(Precoder):
    """``gains[b, k, j] = |h_kj|²`` (transmitter j → receiver k) become signal (j = k) and
    interference (j ≠ k) gains; each transmitter has its own budget ``p_max``."""

    requires = ("gains",)

    @classmethod
    def accepts(cls, tensors: tuple[str, ...]) -> bool:
        return "gains" in tensors or "bs_gains" in tensors

    def __call__(self, network: Network) -> PowerControlProblem:
        return PowerControlProblem.interference_channel(
            link_gains(network), network.params["noise_power"], network.params["p_max"]
        )
