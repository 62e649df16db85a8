"""Single-cell MISO downlink with uplink channel information: Zhang et al. (2022), Section VII-A.

A BS with ``N_t`` antennas serves ``K`` single-antenna users. The uplink channels are i.i.d. Rayleigh,
``h_{U,k} ~ CN(0, I)``, and the downlink channels differ from them by the radio front-ends' mismatch
(eq. 38): ``h_{D,k} = c_k Φ h_{U,k}``, ``Φ`` a unitary ``N_t × N_t`` matrix (the BS side) and
``c_k ~ CN(0, 1)`` (user ``k``'s side). The paper's premise is a deterministic uplink→downlink map
(eq. 6: the hardware is what it is), so ``Φ`` and the ``c_k`` are drawn once per scenario seed (the same
for the training, validation and test sets); ``mismatch: per_sample`` redraws them for every sample, a
stress case with no fixed map to learn.

Powers are relative to the noise: ``p_max`` is the BS's total power over unit noise (the paper's
``P = 20 dB``: ``snr_db=20``).

Sampling draws one fixed block of uniforms per sample (Box–Muller), so the first ``n`` of ``2n``
samples are the ``n`` samples.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mimo_l2o.components import Network, Scenario, ScenarioConfig
from mimo_l2o.errors import require
from mimo_l2o.problems import BEAMFORMING
from mimo_l2o.registry import SCENARIOS
from mimo_l2o.scenarios.draws import exponential_from_uniform

MISMATCH = ("fixed", "per_sample")


def complex_normal(u: Tensor) -> Tensor:
    """CN(0, 1) variates from uniforms ``u [..., 2 m]``: ``[..., m]`` complex128, Box–Muller in polar
    form (``|z|² = −ln(1 − u₁) ~ Exp(1)``, the phase ``2π u₂`` uniform)."""
    m = u.shape[-1] // 2
    radius = exponential_from_uniform(u[..., :m]).sqrt()
    angle = 2 * math.pi * u[..., m:]
    return torch.complex(radius * torch.cos(angle), radius * torch.sin(angle))


def haar_unitary(z: Tensor) -> Tensor:
    """A Haar-distributed unitary matrix from a complex Gaussian ``z [..., N, N]``: the Q of its QR
    decomposition with the phases of R's diagonal taken out (Mezzadri 2007)."""
    q, r = torch.linalg.qr(z)
    d = r.diagonal(dim1=-2, dim2=-1)
    return q * (d / d.abs()).unsqueeze(-2)


def seed_of(*parts: object) -> int:
    """A 63-bit seed from the given parts (stable across processes and machines)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


@SCENARIOS.register("miso_tdd")
class MISOTDD(Scenario):
    """Single-cell TDD MISO downlink with front-end mismatch (Zhang et al. 2022, eq. 38).

    Network tensors (``n`` samples, complex128, CPU), one cell:

    - ``h_ul [n, 1, K, N_t]``: the uplink channels ``h_{U,k}`` (row ``k``), what the BS estimates;
    - ``h_dl [n, 1, K, N_t]``: the downlink channels ``h_{D,k} = c_k Φ h_{U,k}``, which the sum rate is
      measured on (the precoder ``downlink`` makes them the problem).

    Params: ``noise_power``, ``p_max`` (linear, the BS's total power over the noise).
    """

    family = BEAMFORMING

    @dataclass
    class Config(ScenarioConfig):
        """Single-cell TDD MISO downlink (Zhang et al. 2022, Sec. VII-A).

        Parameters
        ----------
        name : str
            Registry key, ``miso_tdd``.
        num_antennas : int
            BS antennas ``N_t`` (the paper: ``N_t = K``, 2 to 8).
        num_users : int
            Single-antenna users ``K`` served by the BS.
        p_max : float
            The BS's total transmit power, relative to the noise (linear; 100 is the paper's 20 dB).
        noise_power : float
            Noise power at each user (linear, same unit as ``p_max``; the channels have unit-variance
            entries).
        mismatch : str
            ``fixed``: ``Φ`` and the ``c_k`` drawn once from the seed, shared by all samples and splits
            (the paper's deterministic map); ``per_sample``: redrawn for each sample (a stress case).
        seed : int
            Seed of the data (and of the fixed mismatch).
        """

        power_unit = "linear"

        name: str = "miso_tdd"
        num_antennas: int = 4
        num_users: int = 4
        p_max: float = 100.0
        noise_power: float = 1.0
        mismatch: str = "fixed"
        seed: int = 0

        def __post_init__(self) -> None:
            super().__post_init__()
            require(
                self.num_antennas >= 1, "num_antennas", f"must be an integer >= 1, got {self.num_antennas}"
            )
            require(
                self.mismatch in MISMATCH,
                "mismatch",
                f"must be one of {', '.join(MISMATCH)}, got {self.mismatch!r}",
            )

    tensors = ("h_ul", "h_dl")

    def mismatch(self) -> tuple[Tensor, Tensor]:
        """The fixed mismatch of this seed: ``Φ [N_t, N_t]`` (unitary) and ``c [K]`` (CN(0, 1))."""
        n, k = self.config.num_antennas, self.config.num_users
        g = torch.Generator().manual_seed(seed_of("miso_tdd mismatch", self.config.seed, n, k))
        u = torch.rand(2 * n * n + 2 * k, generator=g, dtype=torch.float64)
        return haar_unitary(complex_normal(u[: 2 * n * n]).reshape(n, n)), complex_normal(u[2 * n * n :])

    def sample(self, num_samples: int, generator: torch.Generator) -> Network:
        """Draw ``num_samples`` networks from ``generator`` (a CPU generator): ``h_ul`` and ``h_dl``
        ``[num_samples, 1, K, N_t]`` complex128, params ``noise_power``, ``p_max``."""
        n, k = self.config.num_antennas, self.config.num_users
        per_sample = self.config.mismatch == "per_sample"
        block = 2 * k * n + (2 * n * n + 2 * k if per_sample else 0)
        u = torch.rand(num_samples, block, generator=generator, dtype=torch.float64)
        h_ul = complex_normal(u[:, : 2 * k * n]).reshape(num_samples, k, n)
        if per_sample:
            rest = u[:, 2 * k * n :]
            phi = haar_unitary(complex_normal(rest[:, : 2 * n * n]).reshape(num_samples, n, n))
            c = complex_normal(rest[:, 2 * n * n :])
        else:
            phi, c = self.mismatch()
        # h_D,k = c_k Φ h_U,k, rows: h_dl[k] = c_k (Φ h_ul[k])
        h_dl = c.unsqueeze(-1) * (h_ul @ phi.transpose(-1, -2))
        return Network(
            tensors={"h_ul": h_ul.unsqueeze(1), "h_dl": h_dl.unsqueeze(1)},
            params={"noise_power": float(self.config.noise_power), "p_max": float(self.config.p_max)},
        )
