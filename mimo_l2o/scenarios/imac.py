"""Interfering multiple-access channel (IMAC): Model 2 of Sun et al. (2018), Section V.A, Fig. 5.

N hexagonal cells, one single-antenna BS at each centre, K/N single-antenna users per cell. The
uplink of user ``j`` to BS ``n`` has power gain

    bs_gains[b, n, j] = (200 / d_nj)³ · 10^(s_nj / 10) · |g_nj|²,   s_nj ~ N(0, 8²) dB,  g_nj ~ CN(0, 1),

with the parameters of the authors' MATLAB generator (``Generate_IMAC_function.m``, ``Layout.m``):
cell radius R = 100 m is half the distance between adjacent BSs, the hexagon's circumradius is
``2R/√3``, users lie at distance ``r <= d <= 2R/√3`` from their own BS, and by default
``r = 0.2 · 2R/√3``. The BS decodes its own users without successive interference cancellation
(the paper's footnote 1), so the IMAC is an interference channel whose receivers are co-located:
``gains[b, k, j] = bs_gains[b, cell(k), j]``.

Users lie uniformly in the area of the annulus ``r <= d <= 2R/√3``, as the paper's text says. The
authors' ``distrnd`` draws ``d = r + (2R/√3 - r)·√U`` instead, which is the same law for r = 0 and
puts more users near the inner circle for r > 0. The paper's sentence on the shadowing is garbled
("variance (300/d)³L"); the 8 dB standard deviation is the one of the authors' code.

Sampling draws only uniforms, one fixed block per sample in sample order, so the first ``n``
samples of a larger batch drawn from the same seed are the same ``n`` samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mimo_l2o.components import Geometry, Network, Scenario, ScenarioConfig
from mimo_l2o.errors import require
from mimo_l2o.registry import SCENARIOS
from mimo_l2o.scenarios.draws import exponential_from_uniform, standard_normal_from_uniform

# Axial coordinates (q, r) of the six neighbours of a hexagonal lattice site, counter-clockwise
# from angle 0; lattice vector of (q, r) is q·(1, 0) + r·(1/2, √3/2) in units of the BS spacing.
_HEX_DIRECTIONS = ((1, 0), (0, 1), (-1, 1), (-1, 0), (0, -1), (1, -1))


def hex_bs_positions(num_cells: int, spacing: float) -> Tensor:
    """BS positions of ``num_cells`` hexagonal cells, in the order of the authors' ``Layout.m``.

    BS 0 is at the origin; then come the rings of the hexagonal lattice, each counter-clockwise.
    Ring ``m`` (``6m`` sites at hop distance ``m``) starts ``m - 1`` sites before its corner at
    angle 0, as ``Layout.m`` orders rings 1-3 (ring 1 at 0°, 60°, ...; ring 2 at -30°, 0°, 30°,
    ...; ring 3 at -40.9°, -19.1°, 0°, ...), so the layouts for N <= 37 are the paper's and any
    N >= 1 continues the same spiral.

    Parameters
    ----------
    num_cells : int
        Number of BSs N (>= 1).
    spacing : float
        Distance between adjacent BSs, ``2R`` (metres).

    Returns
    -------
    Tensor ``[num_cells, 2]``
        (x, y) of each BS in metres, float64.
    """
    if num_cells < 1:
        raise ValueError(f"num_cells must be >= 1, got {num_cells}")
    sites = [(0, 0)]
    ring = 1
    while len(sites) < num_cells:
        walk = []
        for i, (dq, dr) in enumerate(_HEX_DIRECTIONS):
            sq, sr = _HEX_DIRECTIONS[(i + 2) % 6]  # the side from corner i to corner i + 1
            walk += [(ring * dq + s * sq, ring * dr + s * sr) for s in range(ring)]
        shift = ring - 1  # start on the side that ends at the corner at angle 0
        sites += walk[len(walk) - shift :] + walk[: len(walk) - shift]
        ring += 1
    axial = torch.tensor(sites[:num_cells], dtype=torch.float64)
    x = axial[:, 0] + 0.5 * axial[:, 1]
    y = (math.sqrt(3) / 2) * axial[:, 1]
    return spacing * torch.stack([x, y], dim=1)


@SCENARIOS.register("imac")
class IMAC(Scenario):
    """Uplink of N hexagonal cells with K/N users each, path loss, shadowing and Rayleigh fading.

    Network tensors (``n`` samples, float64, CPU); user ``k`` is in cell ``k // (K/N)``:

    - ``gains [n, K, K]``: power gain from user ``j`` to the BS of user ``k`` (dimensionless),
      ``bs_gains[:, cell(k), j]``; what the precoder ``none`` reads.
    - ``bs_gains [n, N, K]``: power gain from user ``j`` to BS ``n`` (dimensionless).
    - ``user_positions [n, K, 2]``: (x, y) of each user (metres).
    - ``distances [n, N, K]``: distance from BS ``n`` to user ``j`` (metres).

    Params: ``noise_power``, ``p_max`` (linear), ``num_cells``, ``cell_radius`` and
    ``min_distance`` (metres), ``bs_positions`` (``N`` lists ``[x, y]`` in metres).
    """

    @dataclass
    class Config(ScenarioConfig):
        """Multi-cell interfering MAC (Sun et al. 2018, Model 2).

        Parameters
        ----------
        name : str
            Registry key, ``imac``.
        num_users : int
            Total number of users K, a multiple of ``num_cells`` (the paper's (N, K) are (3, 12),
            (3, 18), (3, 24), (7, 28), (20, 80)).
        p_max : float
            Power budget of each user (linear; the paper's ``P_max = 1``).
        noise_power : float
            Noise power ``σ²`` at each BS (linear, same unit as ``p_max``; the authors use 1).
        seed : int
            Seed of the data.
        num_cells : int
            Number of cells (BSs) N, >= 1, laid out on a hexagonal grid.
        cell_radius : float
            R in metres: half the distance between adjacent BSs (BS spacing ``2R``); the hexagon's
            circumradius is ``2R/√3``. The paper uses 100 m.
        min_distance : float or None
            r in metres: users lie at distance ``>= r`` from their own BS, ``0 <= r < 2R/√3``;
            ``None`` means the authors' default ``0.2 · 2R/√3`` (23.1 m for R = 100 m).
        shadowing_db : float
            Standard deviation of the log-normal shadowing, dB (8 dB).
        path_loss_exponent : float
            Exponent of the distance-dependent path loss ``(d0/d)^α`` (3).
        reference_distance : float
            ``d0`` in metres, the distance at which the mean path gain is 1 (200 m).
        """

        power_unit = "linear"

        name: str = "imac"
        num_users: int = 12
        p_max: float = 1.0
        noise_power: float = 1.0
        seed: int = 0
        num_cells: int = 3
        cell_radius: float = 100.0
        min_distance: float | None = None
        shadowing_db: float = 8.0
        path_loss_exponent: float = 3.0
        reference_distance: float = 200.0

        def __post_init__(self) -> None:
            super().__post_init__()
            require(self.num_cells >= 1, "num_cells", f"must be an integer >= 1, got {self.num_cells}")
            require(
                self.num_users % self.num_cells == 0,
                "num_users",
                f"must be a multiple of num_cells={self.num_cells}, got {self.num_users}",
            )
            require(self.cell_radius > 0, "cell_radius", f"must be > 0 (metres), got {self.cell_radius}")
            if self.min_distance is not None:
                require(
                    0 <= self.min_distance < self.hex_radius,
                    "min_distance",
                    f"must be null or in [0, 2*cell_radius/sqrt(3) = {self.hex_radius:.6g}) metres, "
                    f"got {self.min_distance}",
                )
            require(self.shadowing_db >= 0, "shadowing_db", f"must be >= 0 (dB), got {self.shadowing_db}")
            require(
                self.path_loss_exponent > 0,
                "path_loss_exponent",
                f"must be > 0, got {self.path_loss_exponent}",
            )
            require(
                self.reference_distance > 0,
                "reference_distance",
                f"must be > 0 (metres), got {self.reference_distance}",
            )

        @property
        def hex_radius(self) -> float:
            """Circumradius of a cell, ``2R/√3`` (metres): users lie within it of their BS."""
            return 2 * self.cell_radius / math.sqrt(3)

        @property
        def inner_radius(self) -> float:
            """``min_distance`` with ``None`` resolved to ``0.2 · 2R/√3`` (metres)."""
            return 0.2 * self.hex_radius if self.min_distance is None else float(self.min_distance)

    # stored in the cache; ``distances`` (as large as ``bs_gains``) is returned for inspection only
    tensors = ("bs_gains", "user_positions")

    def bs_positions(self) -> Tensor:
        """``[N, 2]`` BS positions in metres (float64), spacing ``2R``."""
        return hex_bs_positions(self.config.num_cells, 2 * self.config.cell_radius)

    def user_cells(self) -> Tensor:
        """``[K]`` (long): the cell of each user, ``k // (K/N)``."""
        return torch.arange(self.config.num_users) // (self.config.num_users // self.config.num_cells)

    def sample(self, num_samples: int, generator: torch.Generator) -> Network:
        """Draw ``num_samples`` networks from ``generator`` (a CPU generator).

        Returns
        -------
        Network
            ``bs_gains [n, N, K]`` (``bs_gains[b, n, j]``: gain from user j to BS n),
            ``user_positions [n, K, 2]`` (m) and ``distances [n, N, K]`` (m), all float64;
            params as in the class docstring.
        """
        cfg = self.config
        n, k, c = num_samples, cfg.num_users, cfg.num_cells
        bs = self.bs_positions()  # [N, 2]
        cell = self.user_cells()  # [K]

        # one block of uniforms per sample: radius, angle (K each), shadowing (2NK), fading (NK)
        u = torch.rand(n, 2 * k + 3 * c * k, generator=generator, dtype=torch.float64)
        u_radius, u_angle, u_shadow1, u_shadow2, u_fading = u.split([k, k, c * k, c * k, c * k], dim=1)

        # Sun et al. (2018), Fig. 5: users uniform in the area between the inner circle of radius r
        # and the cell's circumradius 2R/sqrt(3) around their own BS; 1 - u ∈ (0, 1] keeps d > r.
        r_in, r_out = cfg.inner_radius, cfg.hex_radius
        rho = torch.sqrt(r_in**2 + (r_out**2 - r_in**2) * (1 - u_radius))  # [n, K]
        phi = 2 * math.pi * u_angle
        user_positions = bs[cell] + rho.unsqueeze(-1) * torch.stack([phi.cos(), phi.sin()], dim=-1)

        distances = torch.linalg.vector_norm(user_positions.unsqueeze(1) - bs[None, :, None, :], dim=-1)
        distances[:, cell, torch.arange(k)] = rho  # exact distance to the own BS

        # Sun et al. (2018), Model 2 (authors' channelsample): (200/d)^3 · 10^(N(0, 8²)/10) · |CN(0, 1)|²
        shadow_db = cfg.shadowing_db * standard_normal_from_uniform(u_shadow1, u_shadow2).view(n, c, k)
        fading = exponential_from_uniform(u_fading).view(n, c, k)
        # in the log domain: exp and log give the same bits for a sample whatever the batch size,
        # torch.pow does not (its vectorized and scalar loops differ in the last bit)
        log_path_gain = cfg.path_loss_exponent * torch.log(cfg.reference_distance / distances)
        bs_gains = torch.exp(log_path_gain + shadow_db * (math.log(10) / 10)) * fading  # [n, N, K]

        # IMAC as an IC with co-located receivers (Sun et al. 2018, Section II.B and footnote 1): user k
        # is decoded at the BS of its own cell, without SIC, so every other user interferes. The
        # K x K gain matrix bs_gains[:, serving_cell, :] is built by the precoder, not stored: it
        # would be K/N times the size of the data.
        return Network(
            tensors={
                "bs_gains": bs_gains,
                "user_positions": user_positions,
                "distances": distances,
            },
            params={
                "noise_power": float(cfg.noise_power),
                "p_max": float(cfg.p_max),
                "num_cells": int(c),
                "cell_radius": float(cfg.cell_radius),
                "min_distance": float(r_in),
                "bs_positions": bs.tolist(),
                "serving_cell": cell.tolist(),
            },
        )

    def geometry(self) -> Geometry:
        """The hexagonal layout: BS ``n`` at :meth:`bs_positions`, user ``k`` in cell ``k // (K/N)``,
        positions divided by the BS spacing ``2R``; no wrap-around."""
        cfg = self.config
        return Geometry(self.bs_positions(), self.user_cells(), scale=2 * cfg.cell_radius, wrap=False)

    def user_positions(self, network: Network) -> Tensor:
        """``[n, K, 2]``: each user's (x, y) in metres."""
        return network["user_positions"]
