"""Cellular massive MIMO with spatially correlated channels (Sanguinetti et al. 2018, Section II).

``L`` square cells on a ``√L × √L`` grid (side ``cell_side``), one BS with ``M`` antennas (half-wavelength
ULA) at the centre of each, ``K`` single-antenna UEs uniform in each cell at least ``min_distance`` from
their own BS. Distances wrap around (the whole area is a torus), the path loss is the 3GPP-like
``−35.3 − 37.6 log10(d / 1 m)`` dB of Björnson et al. (2017), and the channel of UE ``k`` of cell ``l`` at
BS ``j`` is ``h ~ CN(0, R_{j,lk})`` with ``R`` from the local scattering model with a Gaussian angular
distribution (small-angle closed form).

Sampling draws only uniforms, one fixed block per sample in sample order, so the first ``n`` samples of
a larger batch drawn from the same seed are the same ``n`` samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from mimo_l2o.components import Geometry, Network, Scenario, ScenarioConfig
from mimo_l2o.errors import require
from mimo_l2o.registry import SCENARIOS
from mimo_l2o.scenarios.draws import standard_normal_from_uniform

# candidate shadowing draws per UE (with shadowing, the first that leaves the own BS strongest is kept;
# all miss with probability below 1e-6 for 10 dB, then the one with the best own-BS margin is kept)
SHADOW_CANDIDATES = 16

# candidate points drawn per UE; the first at >= min_distance from the own BS is kept. The valid
# fraction of a cell is at least 1 − π/4, so all 64 miss with probability <= 0.785^64 ≈ 2e-7 (then the
# last candidate is pushed radially out to min_distance).
CANDIDATES = 64


def local_scattering_correlation(beta: Tensor, theta: Tensor, num_antennas: int, asd: float) -> Tensor:
    """Correlation matrices of the local scattering model, Gaussian angles, small-angle closed form.

    ``[R]_{m,n} = β exp(j 2π d sinθ (n − m)) exp(−(σ²/2) (2π d cosθ (n − m))²)`` with ``d = 1/2``: the
    Hermitian Toeplitz matrix whose first row is ``[R]_{1,n}`` (Björnson et al. 2017,
    ``functionRlocalscattering``).

    Parameters
    ----------
    beta, theta : Tensor ``[...]``
        Large-scale gains (linear) and nominal angles (radians), float64.
    num_antennas : int
        M.
    asd : float
        Angular standard deviation σ in radians.

    Returns
    -------
    Tensor ``[..., M, M]`` complex128.
    """
    lag = torch.arange(num_antennas, dtype=torch.float64, device=beta.device)  # n − 1 on the first row
    th = theta[..., None, None]
    phase = 2 * math.pi * 0.5 * torch.sin(th) * lag
    spread = torch.exp(-(asd**2) / 2 * (2 * math.pi * 0.5 * torch.cos(th) * lag) ** 2)
    return _hermitian_toeplitz(beta, row=torch.polar(spread, phase)[..., 0, :])


def local_scattering_integral(
    beta: Tensor, theta: Tensor, num_antennas: int, asd: float, nodes: int = 2001
) -> Tensor:
    """The same correlation matrices by numerical integration over the Gaussian angular spread
    (no small-angle approximation): ``[R]_{1,n} = β ∫ exp(j2π d sin(θ + δ)(n − 1)) N(δ; 0, σ²) dδ``,
    ``d = 1/2``, by the trapezoid rule over ``δ ∈ [−8σ, 8σ]`` (the Gaussian is below 1e-14 beyond);
    ``nodes`` points keep the phase step ``π (M − 1) · 16σ / (nodes − 1)`` well below π.
    """
    m = torch.arange(num_antennas, dtype=torch.float64, device=beta.device)
    delta = torch.linspace(-8 * asd, 8 * asd, nodes, dtype=torch.float64, device=beta.device)
    weight = torch.exp(-0.5 * (delta / asd) ** 2)
    weight = weight / torch.trapezoid(weight, delta)  # the truncated Gaussian integrates to 1
    angle = theta[..., None] + delta  # [..., D]
    phase = torch.pi * torch.sin(angle)[..., None, :] * m[:, None]  # [..., M, D]
    row = torch.trapezoid(torch.polar(weight.expand_as(phase), phase), delta, dim=-1)
    return _hermitian_toeplitz(beta, row)


def _hermitian_toeplitz(beta: Tensor, row: Tensor) -> Tensor:
    """``β ·`` the Hermitian Toeplitz matrices with first row ``row [..., M]`` (``row[0]`` real 1)."""
    num_antennas = row.shape[-1]
    m = torch.arange(num_antennas, device=row.device)
    lag = m[None, :] - m[:, None]  # n − m: row entry for n >= m, conjugate below the diagonal
    full = row[..., lag.abs()]
    full = torch.where(lag >= 0, full, full.conj())
    return beta[..., None, None].to(full.real.dtype) * full


def correlation_matrices(network: Network) -> Tensor:
    """``R [n, L(BS j), L(cell l), K, M, M]`` of a cellular network, from its ``beta`` and ``theta``
    (complex128), by the model its params name (``correlation``: ``closed_form`` or ``integral``)."""
    beta = network["beta"].to(torch.float64)
    theta = network["theta"].to(torch.float64)
    integral = network.params["correlation"] == CorrelationModel.integral.value
    build = local_scattering_integral if integral else local_scattering_correlation
    return build(beta, theta, int(network.params["num_antennas"]), float(network.params["asd"]))


class CorrelationModel(str, Enum):
    closed_form = "closed_form"  # small-angle approximation of the Gaussian local scattering model
    integral = "integral"  # the exact integral over the Gaussian angular distribution


@SCENARIOS.register("cellular")
class Cellular(Scenario):
    """Multi-cell massive MIMO: UE positions, large-scale gains and the angles that, with the ASD,
    give the spatial correlation matrices.

    Network tensors (``n`` samples, CPU); UE ``k`` of cell ``l`` is user ``l·K + k``:

    - ``user_positions [n, L, K, 2]``: (x, y) in metres, in ``[0, √L·cell_side)²`` (float64).
    - ``beta [n, L, L, K]``: ``beta[b, j, l, k]`` large-scale gain from UE ``k`` of cell ``l`` to BS
      ``j`` (linear, float64), with wrap-around.
    - ``theta [n, L, L, K]``: the nominal angle of arrival (radians) of that UE at that BS, from the
      nearest wrapped copy.

    The correlation matrices ``R_{j,lk}`` (``16·L²·K·M²`` bytes a sample: 12.8 MB at the paper's
    M = 100) are not stored: :func:`correlation_matrices` builds them from ``beta`` and ``theta`` when a
    precoder needs them.

    Params: ``pilot_power``, ``noise_power``, ``p_max`` (W, per BS), ``coherence``, ``num_cells``,
    ``num_users`` (per cell), ``num_antennas``, ``cell_side`` (m), ``asd`` (radians), ``correlation``.
    """

    @dataclass
    class Config(ScenarioConfig):
        """Cellular massive MIMO of Sanguinetti et al. (2018), Table I.

        Parameters
        ----------
        name : str
            Registry key, ``cellular``.
        num_users : int
            UEs per cell K (5); also the number of pilots τ_p (reuse 1), so ``<= coherence``.
        p_max : float
            Downlink power budget of each BS in W (K · 100 mW = 0.5 W).
        noise_power : float
            Noise power σ² in W (−94 dBm).
        seed : int
            Seed of the data.
        num_cells : int
            Number of cells L, a perfect square (4).
        num_antennas : int
            BS antennas M (32; the paper uses 100).
        cell_side : float
            Side of each square cell in metres (500: a 1 km × 1 km area for L = 4).
        min_distance : float
            Minimum UE–BS distance in metres, ``0 <= min_distance < cell_side / 2`` (35).
        shadowing_db : float
            Standard deviation of log-normal shadowing in dB (0: the paper uses none; 10 in the book).
            With shadowing, each UE's draws are redrawn until its own BS is its strongest.
        asd_deg : float
            Angular standard deviation of the local scattering model in degrees (10), > 0.
        coherence : int
            Samples per coherence block τ_c (200).
        pilot_power : float
            Uplink pilot (and data) power per UE in W (100 mW).
        correlation : CorrelationModel
            ``closed_form`` (small-angle approximation, the default) or ``integral`` (exact).
        """

        name: str = "cellular"
        num_users: int = 5
        p_max: float = 0.5
        noise_power: float = 10 ** ((-94 - 30) / 10)
        seed: int = 0
        num_cells: int = 4
        num_antennas: int = 32
        cell_side: float = 500.0
        min_distance: float = 35.0
        shadowing_db: float = 0.0
        asd_deg: float = 10.0
        coherence: int = 200
        pilot_power: float = 0.1
        correlation: CorrelationModel = CorrelationModel.closed_form

        def __post_init__(self) -> None:
            super().__post_init__()
            require(self.num_cells >= 1, "num_cells", f"must be an integer >= 1, got {self.num_cells}")
            root = math.isqrt(self.num_cells)
            require(
                root * root == self.num_cells,
                "num_cells",
                f"must be a perfect square (cells on a grid), got {self.num_cells}",
            )
            require(self.num_antennas >= 1, "num_antennas", f"must be >= 1, got {self.num_antennas}")
            require(
                self.coherence >= 1, "coherence", f"must be an integer >= 1 (symbols), got {self.coherence}"
            )
            require(
                self.num_users <= self.coherence,
                "num_users",
                f"must be <= coherence={self.coherence} (one pilot per UE), got {self.num_users}",
            )
            require(self.cell_side > 0, "cell_side", f"must be > 0 (metres), got {self.cell_side}")
            require(
                0 <= self.min_distance < self.cell_side / 2,
                "min_distance",
                f"must be in [0, cell_side/2 = {self.cell_side / 2:g}) metres, got {self.min_distance}",
            )
            require(self.shadowing_db >= 0, "shadowing_db", f"must be >= 0 (dB), got {self.shadowing_db}")
            require(0 < self.asd_deg <= 180, "asd_deg", f"must be in (0, 180] (degrees), got {self.asd_deg}")
            require(
                0 < self.pilot_power < math.inf,
                "pilot_power",
                f"must be > 0 and finite (W), got {self.pilot_power}",
            )

        @property
        def grid(self) -> int:
            """Cells per side of the grid, √L."""
            return math.isqrt(self.num_cells)

        @property
        def area_side(self) -> float:
            """Side of the whole (wrapped) area, √L · cell_side (metres)."""
            return self.grid * self.cell_side

    tensors = ("user_positions", "beta", "theta")
    params_only = ("p_max", "noise_power", "p_max_dbm", "snr_db", "pilot_power")

    def bs_positions(self) -> Tensor:
        """``[L, 2]`` BS positions (cell centres) in metres; cell ``l`` is row ``l // √L``, column
        ``l % √L``."""
        cfg = self.config
        idx = torch.arange(cfg.num_cells)
        col, row = idx % cfg.grid, idx // cfg.grid
        return cfg.cell_side * (torch.stack([col, row], dim=1).to(torch.float64) + 0.5)

    def wrapped_offsets(self, user_positions: Tensor) -> Tensor:
        """``[n, L(BS), L, K, 2]``: UE position minus BS position, the shortest of the 9 wrapped copies."""
        a = self.config.area_side
        diff = user_positions[:, None] - self.bs_positions()[None, :, None, None, :]  # [n, L, L, K, 2]
        shift = torch.tensor([-a, 0.0, a], dtype=torch.float64)
        shifts = torch.cartesian_prod(shift, shift)  # [9, 2]
        copies = diff[..., None, :] + shifts  # [n, L, L, K, 9, 2]
        best = torch.linalg.vector_norm(copies, dim=-1).argmin(dim=-1)  # [n, L, L, K]
        return torch.gather(copies, -2, best[..., None, None].expand(*best.shape, 1, 2)).squeeze(-2)

    def sample(self, num_samples: int, generator: torch.Generator) -> Network:
        """Draw ``num_samples`` networks from ``generator`` (a CPU generator); see the class docstring."""
        cfg = self.config
        n, nc, k, s = num_samples, cfg.num_cells, cfg.num_users, cfg.cell_side
        bs = self.bs_positions()

        # one block of uniforms per sample: candidate points (2·C per UE), then shadowing candidates
        num_pos, num_sh = 2 * CANDIDATES * nc * k, SHADOW_CANDIDATES * nc * nc * k
        u = torch.rand(n, num_pos + 2 * num_sh, generator=generator, dtype=torch.float64)
        u_pos, u_sh1, u_sh2 = u.split([num_pos, num_sh, num_sh], dim=1)
        offsets = s * (u_pos.view(n, nc, k, CANDIDATES, 2) - 0.5)  # relative to the own BS
        radius = torch.linalg.vector_norm(offsets, dim=-1)  # [n, L, K, C]
        valid = radius >= cfg.min_distance
        first = torch.where(valid.any(-1), valid.to(torch.int8).argmax(-1), CANDIDATES - 1)
        chosen = torch.gather(offsets, 3, first[..., None, None].expand(n, nc, k, 1, 2)).squeeze(3)
        r = torch.linalg.vector_norm(chosen, dim=-1, keepdim=True)
        chosen = torch.where(r < cfg.min_distance, chosen * (cfg.min_distance / r.clamp_min(1e-300)), chosen)
        user_positions = bs[None, :, None, :] + chosen  # [n, L, K, 2]

        offset = self.wrapped_offsets(user_positions)  # [n, L(BS), L, K, 2]
        distance = torch.linalg.vector_norm(offset, dim=-1)
        theta = torch.atan2(offset[..., 1], offset[..., 0])
        # in the log domain (exp/log give the same bits whatever the batch size), dB for the test below
        path_db = -35.3 - 37.6 * torch.log(distance) / math.log(10)  # [n, L(BS), L, K]
        shadow = standard_normal_from_uniform(u_sh1, u_sh2).view(n, SHADOW_CANDIDATES, nc, nc, k)
        gain_db = path_db[:, None] + cfg.shadowing_db * shadow  # [n, S, L(BS), L, K]
        own = torch.arange(nc)
        own_db = gain_db[:, :, own, own]  # [n, S, L, K]: at the own BS
        margin = own_db - gain_db.amax(dim=2)  # 0 when the own BS is the strongest
        ok = margin >= 0
        pick = torch.where(ok.any(1), ok.to(torch.int8).argmax(1), margin.argmax(1))  # [n, L, K]
        index = pick[:, None, None, :, :].expand(n, 1, nc, nc, k)
        gain_db = torch.gather(gain_db, 1, index).squeeze(1)
        beta = torch.exp(gain_db * (math.log(10) / 10))

        return Network(
            tensors={"user_positions": user_positions, "beta": beta, "theta": theta},
            params={
                "pilot_power": float(cfg.pilot_power),
                "noise_power": float(cfg.noise_power),
                "p_max": float(cfg.p_max),
                "coherence": int(cfg.coherence),
                "num_cells": int(nc),
                "num_users": int(k),
                "num_antennas": int(cfg.num_antennas),
                "cell_side": float(s),
                "asd": math.radians(cfg.asd_deg),
                "correlation": CorrelationModel(cfg.correlation).value,
            },
        )

    def geometry(self) -> Geometry:
        """BS ``l`` at the centre of cell ``l`` (:meth:`bs_positions`), UE ``l·K + k`` in cell ``l``,
        positions divided by the side of the wrapped area ``√L · cell_side``, distances wrapping
        around it."""
        cfg = self.config
        cells = torch.arange(cfg.num_cells).repeat_interleave(cfg.num_users)
        return Geometry(self.bs_positions(), cells, scale=cfg.area_side, wrap=True)

    def user_positions(self, network: Network) -> Tensor:
        """``[n, L·K, 2]``: the (x, y) of UE ``k`` of cell ``l`` in row ``l·K + k``, in metres, in
        ``[0, √L · cell_side)²``."""
        positions = network["user_positions"]
        return positions.reshape(positions.shape[0], -1, 2)
