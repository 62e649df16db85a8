"""Multicell massive MIMO downlink with uplink channel information: Zhang et al. (2022), Sections VI and
VII-C (``multicell_miso``).

``N_c`` hexagonal cells of radius ``R`` (centre to corner; neighbouring BSs ``√3 R`` apart, the first ring
around a centre cell: 1, 7 or 19 cells), a BS with ``N_t`` antennas at each centre serving
``num_users`` single-antenna users of its cell, each uniform in its hexagon at least ``d_min`` from its
BS. Every BS reaches every user: the channel of BS ``c`` to user ``u`` is the multipath pair of
:class:`~mimo_l2o.scenarios.miso.MISOFDD` (eq. 40: the paths' angles within ``±Δθ/2`` of the line from
the BS to the user, the same delays, phases and real attenuations in both bands, the downlink behind the
fixed front-end mismatch ``c_u Φ``) times the large-scale gains of eq. (42),

    uplink 127 + 30 log10 d,    downlink 128.1 + 37.6 log10 d    [dB, d in km].

``Φ`` (the BSs' front ends) is one matrix for every BS and ``c_u`` one factor per user, both drawn once
per seed: the homogeneous hardware the paper assumes when one network serves every cell. They nest as
in :mod:`~mimo_l2o.scenarios.miso`: user ``k`` of cell ``b`` keeps its ``c`` whatever ``K`` and ``N_t``.
Powers are in W: ``p_max`` per BS (``p_max_dbm``, the paper's 10 dBm), the noise ``noise_psd_dbm_hz`` over
``bandwidth_mhz`` (−174 dBm/Hz over 20 MHz: −101 dBm). With ``pilot_length`` the BSs observe the
uplink through DFT pilots (eq. 33, LS eq. 34; :mod:`~mimo_l2o.scenarios.miso`): every user of every cell
sends one of ``N_c · K`` pilot rows, at ``pilot_power_dbm`` per symbol (default: ``p_max_dbm``; the
paper does not state the users' power).

User positions within a hexagon: one of its six triangles (centre and two corners) uniformly, then the
point ``s · e`` with ``e`` uniform on the triangle's outer edge and ``s`` of density ``∝ s`` on
``[d_min/|e|, 1]``: uniform in the hexagon outside the disc of radius ``d_min`` up to a weight
``1 − (d_min/|e|)²`` over the edge (within 0.4 % at the defaults).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mimo_l2o.components import Network
from mimo_l2o.errors import require
from mimo_l2o.registry import SCENARIOS
from mimo_l2o.scenarios.miso import MISOFDD, complex_normal, haar_unitary, multipath

CELL_COUNTS = (1, 7, 19)


def hex_centres(cells: int, radius: float) -> Tensor:
    """``[cells, 2]`` (m): the centre cell, then rings of neighbours ``√3 R`` apart (1, 7 or 19)."""
    spacing = math.sqrt(3) * radius
    axial = [(0, 0)]
    directions = [(1, 0), (0, 1), (-1, 1), (-1, 0), (0, -1), (1, -1)]
    for ring in range(1, 3):  # start ``ring`` steps out along direction 4, walk the six sides
        q, r = ring * directions[4][0], ring * directions[4][1]
        for side in range(6):
            for _ in range(ring):
                axial.append((q, r))
                q, r = q + directions[side][0], r + directions[side][1]
    axial = axial[:cells]
    # flat-topped hexagons (corners at 0°, 60°, ...): axial (q, r) → x = 1.5 R q, y = √3 R (r + q/2)
    xy = [(1.5 * radius * q, spacing * (r + q / 2)) for q, r in axial]
    return torch.tensor(xy, dtype=torch.float64)


def in_hexagon(u: Tensor, radius: float, d_min: float) -> Tensor:
    """Points ``[..., 2]`` (m, relative to the centre) from uniforms ``u [..., 3]`` (module docstring)."""
    side = torch.floor(6 * u[..., 0]).clamp(max=5)
    a0, a1 = side * math.pi / 3, (side + 1) * math.pi / 3
    t = u[..., 1:2]
    corner0 = torch.stack((torch.cos(a0), torch.sin(a0)), -1) * radius
    corner1 = torch.stack((torch.cos(a1), torch.sin(a1)), -1) * radius
    edge = corner0 + t * (corner1 - corner0)
    s_min = d_min / edge.norm(dim=-1)
    s = torch.sqrt(s_min.square() + (1 - s_min.square()) * u[..., 2])
    return edge * s.unsqueeze(-1)


@SCENARIOS.register("multicell_miso")
class MulticellMISO(MISOFDD):
    """Multicell massive MIMO downlink (Zhang et al. 2022, Sec. VI and VII-C; module docstring).

    Network tensors (``n`` samples, complex128, CPU; users numbered cell by cell, cell ``c``'s users
    ``c·K … c·K + K − 1``):

    - ``h_ul [n, N_c, N_c·K, N_t]``: the uplink channel of each user to each BS (row ``[c, u]``);
    - ``h_dl [n, N_c, N_c·K, N_t]``: BS ``c``'s downlink channel to user ``u``;
    - ``h_ul_ls`` (with ``pilot_length``): the LS estimates of ``h_ul`` at each BS;
    - ``user_positions [n, N_c·K, 2]`` (m).

    Params: ``noise_power`` (W), ``p_max`` (W, per BS).
    """

    version = 2  # 2: the fixed mismatch nests over K and N_t (MISOTDD.mismatch)

    @dataclass
    class Config(MISOFDD.Config):
        """Multicell massive MIMO downlink (Zhang et al. 2022, Sec. VII-C).

        Parameters
        ----------
        name : str
            Registry key, ``multicell_miso``.
        num_cells : int
            Hexagonal cells ``N_c``: 1, 7 (the paper) or 19.
        num_antennas : int
            Antennas ``N_t`` per BS (the paper's Fig. 6a sweeps 16 to 64; default 32).
        num_users : int
            Users per cell ``K`` (the paper: 1); ``N_c · K`` users in all.
        p_max_dbm : float
            Each BS's power budget [dBm] (the paper: 10).
        cell_radius_m, min_distance_m : float
            Cell radius (centre to corner) and the users' least distance to their BS [m] (200, 10).
        bandwidth_mhz, noise_psd_dbm_hz : float
            The noise ``noise_psd_dbm_hz + 10 log10(bandwidth)`` (20 MHz, −174 dBm/Hz).
        num_paths, angle_spread_deg, uplink_ghz, downlink_ghz, max_delay_s, delay_phase, mismatch
            The multipath pair of each link, as ``miso_fdd``; the mean angle of a link's paths is the
            direction from the BS to the user (``mean_angle_deg`` is not used).
        pilot_length : int or None
            ``L >= 1``: ``L`` DFT pilot symbols (default 7, orthogonal for the paper's 7 users; its Fig. 6b
            sweeps L; ``L >= N_c · K`` makes them orthogonal); ``None``: perfect uplink CSI at every BS.
        pilot_power_dbm : float or None
            The users' pilot power per symbol [dBm] (``None``: ``p_max_dbm``).
        """

        power_unit = "W"

        name: str = "multicell_miso"
        num_cells: int = 7
        num_antennas: int = 32
        num_users: int = 1
        p_max: float = 0.01
        p_max_dbm: float | None = 10.0
        noise_power: float = 0.0  # derived: noise_psd_dbm_hz over bandwidth_mhz
        cell_radius_m: float = 200.0
        min_distance_m: float = 10.0
        bandwidth_mhz: float = 20.0
        noise_psd_dbm_hz: float = -174.0
        pilot_length: int | None = 7
        pilot_power_dbm: float | None = None

        def __post_init__(self) -> None:
            require(
                0 < self.bandwidth_mhz < math.inf,
                "bandwidth_mhz",
                f"must be > 0 and finite [MHz], got {self.bandwidth_mhz}",
            )
            require(
                math.isfinite(self.noise_psd_dbm_hz),
                "noise_psd_dbm_hz",
                f"must be a finite number [dBm/Hz], got {self.noise_psd_dbm_hz}",
            )
            self.noise_power = (
                10 ** ((self.noise_psd_dbm_hz + 10 * math.log10(self.bandwidth_mhz * 1e6)) / 10) * 1e-3
            )
            require(
                self.pilot_power_dbm is None or math.isfinite(self.pilot_power_dbm),
                "pilot_power_dbm",
                f"must be a finite number [dBm], or null (p_max_dbm), got {self.pilot_power_dbm}",
            )
            super().__post_init__()
            if self.pilot_power_dbm is not None:
                self.pilot_power = 10 ** (self.pilot_power_dbm / 10) * 1e-3
            require(
                self.num_cells in CELL_COUNTS,
                "num_cells",
                f"must be one of {', '.join(map(str, CELL_COUNTS))} (a centre cell and full rings), got "
                f"{self.num_cells}",
            )
            require(
                0 < self.cell_radius_m < math.inf,
                "cell_radius_m",
                f"must be > 0 and finite [m], got {self.cell_radius_m}",
            )
            require(
                0 < self.min_distance_m < math.sqrt(3) / 2 * self.cell_radius_m,
                "min_distance_m",
                f"must be > 0 and below the hexagon's inner radius {math.sqrt(3) / 2 * self.cell_radius_m:g} "
                f"m, got {self.min_distance_m}",
            )

    tensors = ("h_ul", "h_dl", "h_ul_ls", "h_ul_lmmse", "user_positions")

    @property
    def cells(self) -> int:  # one front-end factor for each user of every cell (MISOTDD.mismatch)
        return self.config.num_cells

    def sample(self, num_samples: int, generator: torch.Generator) -> Network:
        """Draw ``num_samples`` networks (module docstring)."""
        cfg = self.config
        n, c, paths = cfg.num_antennas, cfg.num_cells, cfg.num_paths
        users = c * cfg.num_users
        per_sample = cfg.mismatch == "per_sample"
        place, links = 3 * users, c * users * 5 * paths
        mismatch = 2 * n * n + 2 * users if per_sample else 0
        block = place + links + mismatch + self.pilot_uniforms()
        u = torch.rand(num_samples, block, generator=generator, dtype=torch.float64)
        centres = hex_centres(c, cfg.cell_radius_m)
        serving = torch.arange(c).repeat_interleave(cfg.num_users)  # [U]
        positions = centres[serving] + in_hexagon(
            u[:, :place].reshape(num_samples, users, 3), cfg.cell_radius_m, cfg.min_distance_m
        )
        offset = positions.unsqueeze(1) - centres[None, :, None, :]  # [s, C, U, 2]
        distance = offset.norm(dim=-1).clamp_min(1.0) / 1e3  # km
        mean = torch.atan2(offset[..., 1], offset[..., 0])  # the ULA's broadside along x
        draws = u[:, place : place + links].reshape(num_samples, c, users, 5 * paths)
        h_ul, h_d = multipath(draws, mean, n, cfg)  # [s, C, U, N]
        gain_ul = 10 ** (-(127 + 30 * torch.log10(distance)) / 20)  # amplitudes
        gain_dl = 10 ** (-(128.1 + 37.6 * torch.log10(distance)) / 20)
        h_ul, h_d = h_ul * gain_ul.unsqueeze(-1), h_d * gain_dl.unsqueeze(-1)
        if per_sample:
            rest = u[:, place + links : place + links + mismatch]
            phi = haar_unitary(complex_normal(rest[:, : 2 * n * n]).reshape(-1, n, n)).unsqueeze(1)
            factor = complex_normal(rest[:, 2 * n * n :]).unsqueeze(1)  # [s, 1, U]
        else:
            phi, factor = self.mismatch()
        h_dl = factor.unsqueeze(-1) * (h_d @ phi.transpose(-1, -2))
        network = Network(
            tensors={"h_ul": h_ul, "h_dl": h_dl, "user_positions": positions},
            params={"noise_power": float(cfg.noise_power), "p_max": float(cfg.p_max)},
        )
        return self.observed(network, u[:, place + links + mismatch :])
