"""Gaussian interference channel: Model 1 of Sun et al. (2018), Section V.A.

K transmitter-receiver pairs; every channel coefficient is Rayleigh, ``h_kj ~ CN(0, 1)`` i.i.d.
The network carries the power gains ``gains[b, k, j] = |h_kj|²`` (transmitter ``j`` → receiver
``k``), which the precoder ``none`` turns into the interference-channel problem of eq. (1).

Sampling draws only uniforms, one fixed block of ``K²`` per sample in sample order, so the first
``n`` samples of a larger batch drawn from the same seed are the same ``n`` samples (torch's
``randn`` does not have that property: it redraws the tail of every call).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mimo_l2o.components import Network, Scenario, ScenarioConfig
from mimo_l2o.registry import SCENARIOS
from mimo_l2o.scenarios.draws import exponential_from_uniform


@SCENARIOS.register("gaussian_ic")
class GaussianIC(Scenario):
    """K single-antenna transmitter-receiver pairs with i.i.d. Rayleigh channels (Model 1).

    Network tensors (``n`` samples, float64, CPU):

    - ``gains [n, K, K]``: ``|h_kj|²``, the power gain from transmitter ``j`` to receiver ``k``
      (dimensionless); each entry is Exp(1), since ``h_kj ~ CN(0, 1)``.

    Params: ``noise_power``, ``p_max`` (linear).
    """

    @dataclass
    class Config(ScenarioConfig):
        """Gaussian interference channel (Sun et al. 2018, Model 1).

        Parameters
        ----------
        name : str
            Registry key, ``gaussian_ic``.
        num_users : int
            Number of transmitter-receiver pairs K (the paper uses 10, 20, 30).
        p_max : float
            Power budget of each transmitter (linear; the paper's ``P_max = 1``).
        noise_power : float
            Noise power ``σ²`` at each receiver (linear, same unit as ``p_max``; the channel gains
            have unit mean, so ``p_max / noise_power`` is the mean SNR of a link).
        seed : int
            Seed of the data.
        """

        power_unit = "linear"

        name: str = "gaussian_ic"
        num_users: int = 10
        p_max: float = 1.0
        noise_power: float = 1.0
        seed: int = 0

    tensors = ("gains",)

    def sample(self, num_samples: int, generator: torch.Generator) -> Network:
        """Draw ``num_samples`` networks from ``generator`` (a CPU generator).

        Returns
        -------
        Network
            ``gains [num_samples, K, K]`` float64, and params ``noise_power``, ``p_max``.
        """
        k = self.config.num_users
        u = torch.rand(num_samples, k * k, generator=generator, dtype=torch.float64)
        # Sun et al. (2018), Model 1: h_kj ~ CN(0, 1), so |h_kj|^2 ~ Exp(1)
        gains = exponential_from_uniform(u).view(num_samples, k, k)
        return Network(
            tensors={"gains": gains},
            params={"noise_power": float(self.config.noise_power), "p_max": float(self.config.p_max)},
        )
