"""Single-cell FDD massive MIMO downlink in a room (Ma et al. 2022, Sec. II-A and V-A): ``massive_fdd``.

An ``M``-antenna half-wavelength ULA serves ``K`` single-antenna users; uplink and downlink are at
different carriers (2.4 and 2.5 GHz) and share the propagation paths (eq. 1):

    h_{i,k} = Σ_l α_{l,k} e^{−j2π f_i τ_{l,k}} a_i(θ_{l,k}),   i ∈ {UL, DL},

angles ``θ``, delays ``τ = d/c`` and gains ``α`` the same on both links, the phases and the array
responses (eq. 2, the elements half a downlink wavelength apart) at each link's own carrier. The paper
draws its channels from DeepMIMO's ray-traced indoor scenario "I1", which cannot be fetched at run
time; this scenario traces its own rays instead, in the simplest room that gives the paper's five
paths: a rectangular room ``room_width_m × room_depth_m`` (x across, y deep) seen from above, the BS
``bs_offset_m`` in front of the middle of the wall ``y = 0`` with its array along that wall (broadside
+y), the users uniform in the room beyond ``min_distance_m`` of the BS's row (``y >= bs_offset_m +
min_distance_m``, ``margin_m`` from the walls). A user's paths are the line of sight and the
first-order reflections off the four walls (the image method: the user mirrored across each wall),
the ``num_paths − 1`` shortest of them; a path of length ``d`` has the free-space amplitude
``λ_DL / (4π d)`` (Friis; at the downlink wavelength for both links, as the gains are shared) times
``−10^(−reflection_loss_db/20)`` per bounce (a phase flip and the wall's loss). The channel is thus a
deterministic function of the user's position, as a ray-traced data set is (DeepMIMO's users sit on a
grid in a fixed room), which is what lets the implicit-CSI network learn the uplink→downlink map.

The link budget. The paper states the powers and the −85 dBm noise of both links but not I1's path
losses, and two of its figures pin two regimes that one reciprocal loss cannot give this room:

* Fig. 6: ZF is clearly below WMMSE with perfect CSI at ``P_DL = 5`` dBm, ``M = 64``, ``K = 8``. In this
  room (users uniform, five resolvable paths, well-conditioned channels) ZF is WMMSE to 0.1 % at the
  traced losses alone; ``downlink_loss_db`` (30 dB) lowers the downlink's per-antenna SNR to near 5 dB
  at 5 m, where ZF's noise enhancement shows. In I1 the gap more likely comes from its users' correlated
  channels (a fine grid of positions in a real room) at a higher SNR, which this room does not have.
* Fig. 10: the implicit-CSI curves are nearly flat from ``P_UL`` = −20 to 0 dBm, so the pilots there are
  well above the noise. With the downlink's 30 dB on the uplink too, the LS estimate of ``L = K = 8``
  pilots at −10 dBm is about as large as its error (NMSE near 0 dB); ``uplink_loss_db`` (0 dB: the
  traced losses alone) puts its NMSE 30 dB lower, below −20 dB down to −20 dBm (``test/nmse_uplink_ls``
  logs it for every run with pilots; ``tests/test_massive_fdd.py`` checks the regime).

Each link's extra loss thus stands for what the room does not trace and the paper's figures imply
(heights, antenna patterns, furniture, I1's conditioning), stated per link; set them equal for a
reciprocal budget.

Powers are in W (``p_max_dbm``, the paper's ``P_DL``; ``pilot_power_dbm``, its ``P_UL`` per pilot
symbol), the noise ``noise_dbm`` (−85 dBm) on both links.

With ``pilot_length: L`` (the paper: ``L = K``) the BS also observes the uplink through pilots (eq. 7):
the network carries the noise ``N [n, 1, M, L]`` of the received pilots (``pilot_noise``, CN(0, σ²)),
so a learner that designs its own pilots ``P̃`` forms ``Y_p = H_UL P̃ + N`` (the implicit-CSI method of
Sec. IV-B), and the LS estimate ``h_ul_ls`` of ``Y_p = H_UL X + N`` for ``√P_UL`` DFT pilots ``X``
(eq. 15 with ``g_LS``; the block-by-block baseline's input, what the ``uplink_channel`` feature gives).

Sampling draws one fixed block of uniforms per sample, so the first ``n`` of ``2n`` samples are the
``n`` samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mimo_l2o.components import Network, Scenario, ScenarioConfig
from mimo_l2o.errors import require
from mimo_l2o.problems import BEAMFORMING
from mimo_l2o.registry import SCENARIOS
from mimo_l2o.scenarios.miso import complex_normal, dft_pilots, ls_from_received, ula_response

SPEED_OF_LIGHT = 299_792_458.0  # m/s
MAX_PATHS = 5  # the line of sight and one reflection off each of the four walls


def dbm_to_w(dbm: float) -> float:
    return 10 ** (dbm / 10) * 1e-3


def room_paths(users: Tensor, bs: Tensor, width: float, depth: float) -> tuple[Tensor, Tensor, Tensor]:
    """The line of sight and the four first-order wall reflections from the BS at ``bs [2]`` to the users
    at ``users [..., 2]`` in the room ``[0, width] × [0, depth]``: each path's length ``[..., 5]`` (m),
    the sine of its angle from the array's broadside (+y; the array along x) and its number of bounces
    (0 for the line of sight, then the walls x = 0, x = width, y = 0, y = depth)."""
    x, y = users[..., 0], users[..., 1]
    images = torch.stack(
        (
            users,
            torch.stack((-x, y), -1),
            torch.stack((2 * width - x, y), -1),
            torch.stack((x, -y), -1),
            torch.stack((x, 2 * depth - y), -1),
        ),
        -2,
    )  # [..., 5, 2]
    offset = images - bs.to(images)
    length = offset.norm(dim=-1)
    bounces = torch.tensor([0, 1, 1, 1, 1], dtype=torch.float64).expand_as(length)
    return length, offset[..., 0] / length, bounces


@dataclass
class LinkConfig(ScenarioConfig):
    """The keys of an FDD link pair in W and dBm that ``massive_fdd`` and ``deepmimo`` share, and their
    checks: the antennas, the downlink power and the noise in dBm (``noise_power`` derived), the two
    carriers, the pilots and their power (each subclass documents its keys)."""

    num_antennas: int = 64
    num_users: int = 8
    p_max: float = 0.0  # derived from p_max_dbm
    p_max_dbm: float | None = 5.0
    noise_power: float = 1.0  # derived from noise_dbm
    noise_dbm: float = -85.0
    uplink_ghz: float = 2.4
    downlink_ghz: float = 2.5
    num_paths: int = 5
    pilot_length: int | None = None
    pilot_power_dbm: float = -10.0
    seed: int = 0

    def __post_init__(self) -> None:
        require(
            math.isfinite(self.noise_dbm), "noise_dbm", f"must be a finite number [dBm], got {self.noise_dbm}"
        )
        self.noise_power = dbm_to_w(self.noise_dbm)
        super().__post_init__()
        require(self.num_antennas >= 1, "num_antennas", f"must be an integer >= 1, got {self.num_antennas}")
        for key in ("uplink_ghz", "downlink_ghz"):
            value = getattr(self, key)
            require(0 < value < math.inf, key, f"must be > 0 and finite [GHz], got {value}")
        require(
            self.pilot_length is None or self.pilot_length >= 1,
            "pilot_length",
            f"must be an integer >= 1, or null for perfect CSI, got {self.pilot_length}",
        )
        require(
            math.isfinite(self.pilot_power_dbm),
            "pilot_power_dbm",
            f"must be a finite number [dBm], got {self.pilot_power_dbm}",
        )

    @property
    def pilot_power(self) -> float:
        """``P_UL`` in W."""
        return dbm_to_w(self.pilot_power_dbm)


@SCENARIOS.register("massive_fdd")
class MassiveFDD(Scenario):
    """FDD massive MIMO downlink with a ray-traced room (Ma et al. 2022; module docstring).

    Network tensors (``n`` samples, complex128 unless said, CPU), one cell:

    - ``h_ul [n, 1, K, M]``: the uplink channels (row ``k``: user ``k``'s ``h_{UL,k}``);
    - ``h_dl [n, 1, K, M]``: the downlink channels, which the sum rate is measured on;
    - ``user_positions [n, K, 2]`` (float64, m);
    - with ``pilot_length: L``: ``pilot_noise [n, 1, M, L]``, the received pilots' noise, and
      ``h_ul_ls [n, 1, K, M]``, the LS estimate of ``h_ul`` from ``√P_UL`` DFT pilots under that noise.

    Params: ``noise_power`` (W), ``p_max`` (W, the BS's total power ``P_DL``).
    """

    family = BEAMFORMING

    @dataclass
    class Config(LinkConfig):
        """FDD massive MIMO downlink in a room (Ma et al. 2022, Sec. V-A).

        Parameters
        ----------
        name : str
            Registry key, ``massive_fdd``.
        num_antennas : int
            BS antennas ``M`` (the paper: 16 to 128; its Fig. 7: 64).
        num_users : int
            Single-antenna users ``K`` (its Fig. 7: 8).
        p_max_dbm : float
            The BS's total downlink power ``P_DL`` [dBm] (its Fig. 7: 5).
        noise_dbm : float
            Noise power at every receiver, both links [dBm] (the paper: −85).
        uplink_ghz, downlink_ghz : float
            Carriers (the paper: uplink 2.4 GHz, downlink 2.5 GHz).
        num_paths : int
            Paths per user, 1 to 5: the line of sight and the ``num_paths − 1`` shortest first-order
            wall reflections (the paper: 5).
        room_width_m, room_depth_m : float
            The room [m] (x across, y deep; 10 × 10).
        bs_offset_m : float
            The BS's distance in front of the middle of the wall ``y = 0`` [m].
        min_distance_m : float
            Users are at least this far in front of the BS's row [m].
        margin_m : float
            Users' least distance to the side and back walls [m].
        reflection_loss_db : float
            Loss of one wall bounce [dB] (each bounce also flips the phase).
        downlink_loss_db, uplink_loss_db : float
            Each link's loss of every path beyond free space and the bounces [dB] (the module
            docstring's link budget: 30 and 0).
        pilot_length : int or None
            ``None``: perfect CSI only; ``L >= 1``: the uplink pilots' length (the paper: ``L = K``).
        pilot_power_dbm : float
            Each user's uplink power per pilot symbol ``P_UL`` [dBm] (the paper's Fig. 10 trains at −10).
        seed : int
            Seed of the data.
        """

        name: str = "massive_fdd"
        room_width_m: float = 10.0
        room_depth_m: float = 10.0
        bs_offset_m: float = 0.5
        min_distance_m: float = 1.0
        margin_m: float = 0.5
        reflection_loss_db: float = 6.0
        downlink_loss_db: float = 30.0
        uplink_loss_db: float = 0.0

        def __post_init__(self) -> None:
            require(
                self.p_max_dbm is not None or self.snr_db is not None or self.p_max > 0,
                "p_max_dbm",
                "must be set (the BS's power [dBm]), or snr_db or p_max [W]",
            )
            super().__post_init__()
            require(
                1 <= self.num_paths <= MAX_PATHS,
                "num_paths",
                f"must be 1 to {MAX_PATHS} (the line of sight and up to four wall reflections), "
                f"got {self.num_paths}",
            )
            for key in ("room_width_m", "room_depth_m"):
                value = getattr(self, key)
                require(0 < value < math.inf, key, f"must be > 0 and finite, got {value}")
            require(
                0 <= self.margin_m < self.room_width_m / 2,
                "margin_m",
                f"must be in [0, room_width_m / 2 = {self.room_width_m / 2:g}) m, got {self.margin_m}",
            )
            require(
                0 < self.bs_offset_m < self.room_depth_m,
                "bs_offset_m",
                f"must be in (0, room_depth_m = {self.room_depth_m:g}) m, got {self.bs_offset_m}",
            )
            room_left = self.room_depth_m - self.margin_m - self.bs_offset_m
            require(
                0 < self.min_distance_m < room_left,
                "min_distance_m",
                f"must be in (0, {room_left:g}) m (the room in front of the BS, less the margin), got "
                f"{self.min_distance_m}",
            )
            require(
                0 <= self.reflection_loss_db < math.inf,
                "reflection_loss_db",
                f"must be >= 0 and finite [dB], got {self.reflection_loss_db}",
            )
            for key in ("downlink_loss_db", "uplink_loss_db"):
                value = getattr(self, key)
                require(math.isfinite(value), key, f"must be a finite number [dB], got {value}")

    version = 2  # 2: each link its own extra loss (downlink_loss_db, uplink_loss_db)
    tensors = ("h_ul", "h_dl", "user_positions", "pilot_noise", "h_ul_ls")
    # the pilots' power and the noise enter the pilots' noise and LS estimate: only the downlink power
    # is a param alone
    params_only = ("p_max", "p_max_dbm", "snr_db")

    def bs_position(self) -> Tensor:
        cfg = self.config
        return torch.tensor([cfg.room_width_m / 2, cfg.bs_offset_m], dtype=torch.float64)

    def user_uniforms(self) -> int:
        """Uniforms per sample that place the users."""
        return 2 * self.config.num_users

    def users(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The users of each sample from the uniforms ``u [n, user_uniforms()]``: their positions
        ``[n, K, 2]`` and their uplink and downlink channels ``[n, K, M]``."""
        cfg = self.config
        k = cfg.num_users
        lo_x, hi_x = cfg.margin_m, cfg.room_width_m - cfg.margin_m
        lo_y, hi_y = cfg.bs_offset_m + cfg.min_distance_m, cfg.room_depth_m - cfg.margin_m
        positions = torch.stack((lo_x + (hi_x - lo_x) * u[:, :k], lo_y + (hi_y - lo_y) * u[:, k : 2 * k]), -1)
        return (positions, *self.channels(positions))

    def sample(self, num_samples: int, generator: torch.Generator) -> Network:
        """Draw ``num_samples`` networks (the class docstring's tensors)."""
        cfg = self.config
        m, k = cfg.num_antennas, cfg.num_users
        length = cfg.pilot_length or 0
        place = self.user_uniforms()
        u = torch.rand(num_samples, place + 2 * m * length, generator=generator, dtype=torch.float64)
        positions, h_ul, h_dl = self.users(u[:, :place])
        network = Network(
            tensors={"h_ul": h_ul.unsqueeze(1), "h_dl": h_dl.unsqueeze(1), "user_positions": positions},
            params={"noise_power": float(cfg.noise_power), "p_max": float(cfg.p_max)},
        )
        if length:
            noise = complex_normal(u[:, place:]).reshape(num_samples, 1, m, length)
            noise = noise * math.sqrt(cfg.noise_power)
            X = dft_pilots(k, length, cfg.pilot_power)
            network.tensors["pilot_noise"] = noise
            network.tensors["h_ul_ls"] = ls_from_received(network["h_ul"].transpose(-1, -2) @ X + noise, X)
        return network

    def channels(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """The uplink and downlink channels ``[..., K, M]`` of users at ``positions [..., K, 2]`` (m)."""
        cfg = self.config
        length, sine, bounces = room_paths(positions, self.bs_position(), cfg.room_width_m, cfg.room_depth_m)
        if cfg.num_paths < MAX_PATHS:  # the line of sight and the shortest reflections
            order = torch.cat(
                (torch.zeros_like(length[..., :1], dtype=torch.long), 1 + length[..., 1:].argsort(-1)), -1
            )[..., : cfg.num_paths]
            length, sine, bounces = (t.gather(-1, order) for t in (length, sine, bounces))
        f_u, f_d = cfg.uplink_ghz * 1e9, cfg.downlink_ghz * 1e9
        wavelength = SPEED_OF_LIGHT / f_d
        free_space = wavelength / (4 * math.pi * length)
        gain = free_space * (-(10 ** (-cfg.reflection_loss_db / 20))) ** bounces
        angle = torch.asin(sine.clamp(-1, 1))

        def link(f: float, loss_db: float) -> Tensor:
            turn = torch.remainder(f * length / SPEED_OF_LIGHT, 1.0)  # the delay's phase, mod 2π first
            phase = torch.polar(gain.abs(), -2 * math.pi * turn + math.pi * (gain < 0).to(gain.dtype))
            paths = phase.unsqueeze(-1) * ula_response(angle, cfg.num_antennas, f / f_d)
            return paths.sum(-2) * 10 ** (-loss_db / 20)

        return link(f_u, cfg.uplink_loss_db), link(f_d, cfg.downlink_loss_db)
