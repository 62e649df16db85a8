"""A ray-traced scenario a user already has, in DeepMIMO's v4 folder format: ``scenario=deepmimo
scenario.path=<folder>`` (Ma et al. 2022 train on DeepMIMO's indoor "I1"; nothing is downloaded).

The folder is what DeepMIMO (v4) writes for a ray-traced scenario: ``params.json`` (its
``rt_params.frequency`` is the carrier ``f_0`` the rays were traced at; ``txrx_sets`` names the
transmitter and receiver sets) and, per transmitter set ``t``, transmitter ``x`` and receiver set ``r``,
one array per path quantity in ``<key>_t{t:03}_tx{x:03}_r{r:03}.npz`` (the array under ``<key>``;
``.npy`` is read too), each ``[points, max paths]`` with NaN where a point has fewer paths: ``aod_az``,
``aod_el`` (the departure azimuth and zenith angle at the BS, degrees; 90° is the horizon), ``delay``
(s), ``power`` (dBW, the received power of each path for a 1 W transmitter) and ``phase`` (degrees, at
``f_0``), with ``rx_pos`` (``[points, 3]``, m). The format is read here directly, with NumPy: the
``deepmimo`` package can read such a folder offline too, but it asks on the terminal whether to download
a folder it cannot find, and it would bring about 300 MB of dependencies and its own NumPy pin, for
reading a few arrays (see the README).

Each sample places ``num_users`` users on distinct points of the receiver set that have at least one
path (uniformly, without replacement), and builds their channels from their ``num_paths`` strongest paths
at the uplink and downlink carriers (Ma et al. eq. 1-2): the gains ``√(10^(power/10))`` and the angles are
the ray tracer's, the phase at carrier ``f`` is ``phase − 2π (f − f_0) τ`` (the path's delay carried from
``f_0`` to ``f``), and the BS is a ULA along the y axis, half a downlink wavelength apart, whose element
``m`` sees a path at ``e^{+jπ (f / f_D) m sin(el) sin(az)}`` (DeepMIMO's own array response: at ``f = f_0
= f_D`` the downlink channel is DeepMIMO's narrowband channel). Powers, noise and pilots are
:class:`~mimo_l2o.scenarios.massive_fdd.MassiveFDD`'s.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mimo_l2o.errors import ConfigError, require
from mimo_l2o.registry import SCENARIOS
from mimo_l2o.scenarios.massive_fdd import LinkConfig, MassiveFDD

KEYS = ("aod_az", "aod_el", "delay", "power", "phase")  # the per-path arrays a channel needs


def array_file(folder: Path, key: str, tx_set: int, tx_index: int, rx_set: int) -> Path:
    """The file of one per-path array (``.npz``, else ``.npy``) in DeepMIMO's v4 naming."""
    stem = f"{key}_t{tx_set:03}_tx{tx_index:03}_r{rx_set:03}"
    for suffix in (".npz", ".npy"):
        if (folder / (stem + suffix)).exists():
            return folder / (stem + suffix)
    raise ConfigError("path", f"{folder} has no {stem}.npz (DeepMIMO v4 naming)")


def read_array(path: Path, key: str) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as data:
        return data[key] if key in data else data[data.files[0]]


@dataclass
class RayTraced:
    """One transmitter's paths to the receiver points that have any: ``[points, paths]`` float64 arrays
    (NaN-free: missing paths have zero gain), the carrier ``f_0`` and the folder's digest."""

    az: np.ndarray
    el: np.ndarray
    delay: np.ndarray
    gain: np.ndarray  # amplitude, √W
    phase: np.ndarray  # radians at f_0
    positions: np.ndarray  # [points, 3]
    frequency: float
    digest: str


def folder_files(
    folder: Path, tx_set: int, tx_index: int, rx_set: int | None
) -> tuple[dict, dict[str, Path]]:
    """``params.json`` and the files of the arrays a channel needs, or :class:`ConfigError` naming what is
    missing; ``rx_set=None``: the first receiver-only set."""
    try:
        params = json.loads((folder / "params.json").read_text())
        frequency = float(params["rt_params"]["frequency"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            "path", f"{folder}/params.json has no rt_params.frequency ({type(err).__name__})"
        ) from None
    require(
        0 < frequency < math.inf, "path", f"{folder}/params.json: the carrier must be > 0, got {frequency}"
    )
    if rx_set is None:
        sets = params.get("txrx_sets", {})
        receivers = [v["id"] for v in sets.values() if v.get("is_rx") and not v.get("is_tx")]
        if not receivers:
            raise ConfigError("rx_set", f"{folder}/params.json lists no receiver-only set; name one")
        rx_set = int(receivers[0])
    return params, {k: array_file(folder, k, tx_set, tx_index, rx_set) for k in (*KEYS, "rx_pos")}


def read_folder(folder: Path, tx_set: int, tx_index: int, rx_set: int | None, num_paths: int) -> RayTraced:
    """The paths of a DeepMIMO v4 folder (module docstring); ``rx_set=None``: the first receiver-only set.
    Keeps the ``num_paths`` strongest paths of each point and the points with at least one path."""
    params, files = folder_files(folder, tx_set, tx_index, rx_set)
    digest = hashlib.sha256((folder / "params.json").read_bytes())
    for key in sorted(files):
        digest.update(files[key].read_bytes())
    arrays = {k: read_array(files[k], k).astype(np.float64) for k in files}
    power = arrays["power"]
    present = ~np.isnan(power) & ~np.isnan(arrays["delay"])
    strength = np.where(present, power, -np.inf)
    order = np.argsort(-strength, axis=1, kind="stable")[:, :num_paths]  # the strongest first
    take = {k: np.take_along_axis(arrays[k], order, axis=1) for k in KEYS}
    kept = np.take_along_axis(present, order, axis=1)
    points = kept.any(1)
    if not points.any():
        raise ConfigError("path", f"{folder}: no receiver point has a path")
    gain = np.where(kept, np.sqrt(10 ** (np.nan_to_num(take["power"], nan=-np.inf) / 10)), 0.0)

    def clean(a: np.ndarray) -> np.ndarray:
        return np.where(kept, np.nan_to_num(a), 0.0)[points]

    return RayTraced(
        az=np.radians(clean(take["aod_az"])),
        el=np.radians(clean(take["aod_el"])),
        delay=clean(take["delay"]),
        gain=gain[points],
        phase=np.radians(clean(take["phase"])),
        positions=arrays["rx_pos"][points],
        frequency=float(params["rt_params"]["frequency"]),
        digest=digest.hexdigest()[:16],
    )


def check_folder(cfg) -> None:
    """The folder is a DeepMIMO v4 scenario with the arrays a channel needs and at least ``num_users``
    points with a path; else :class:`ConfigError` naming the key (checked when the scenario is built,
    before any work, not in the schema: a schema's defaults must build without a folder)."""
    require(
        bool(cfg.path) and (Path(cfg.path) / "params.json").is_file(),
        "path",
        f"must be a DeepMIMO v4 scenario folder with a params.json, got {cfg.path!r}",
    )
    _, files = folder_files(Path(cfg.path), cfg.tx_set, cfg.tx_index, cfg.rx_set)
    points = int((~np.isnan(read_array(files["power"], "power"))).any(1).sum())
    require(
        cfg.num_users <= points,
        "num_users",
        f"must be at most the {points} points with a path in {cfg.path}, got {cfg.num_users}",
    )


def distinct_indices(u: Tensor, count: int) -> Tensor:
    """``[n, K]`` distinct indices in ``0 … count − 1``, uniform without replacement, from the uniforms
    ``u [n, K]``: the ``k``-th pick is uniform over the ``count − k`` points not yet picked (each earlier
    pick at or below it shifts it up by one, taken in increasing order)."""
    n, k = u.shape
    picks = torch.empty(n, 0, dtype=torch.long)
    for j in range(k):
        index = torch.floor(u[:, j] * (count - j)).long().clamp(max=count - j - 1)
        for earlier in picks.sort(-1).values.unbind(-1):
            index = index + (index >= earlier).long()
        picks = torch.cat((picks, index.unsqueeze(-1)), -1)
    return picks


@SCENARIOS.register("deepmimo")
class DeepMIMO(MassiveFDD):
    """Users on the points of a ray-traced DeepMIMO v4 folder (module docstring). Network tensors and
    params as :class:`MassiveFDD` (``user_positions`` in the ray tracer's x, y)."""

    @dataclass
    class Config(LinkConfig):
        """A ray-traced scenario in DeepMIMO's v4 folder format (Ma et al. 2022's "I1", say).

        Parameters
        ----------
        name : str
            Registry key, ``deepmimo``.
        path : str
            The scenario's folder (its ``params.json`` and per-path arrays).
        tx_set, tx_index : int
            The BS: its transmitter set's id and its index in the set.
        rx_set : int or None
            The users' receiver set's id (``None``: the first receiver-only set in ``params.json``).
        num_antennas : int
            BS antennas ``M`` (a ULA along the y axis).
        num_users : int
            Users ``K`` per sample, on distinct points.
        num_paths : int
            The strongest paths kept per point (the paper: 5).
        p_max_dbm : float
            The BS's power ``P_DL`` [dBm].
        noise_dbm : float
            Noise power at every receiver, both links [dBm].
        uplink_ghz, downlink_ghz : float
            Carriers (the paper: 2.4 and 2.5 GHz); the folder's own carrier is where its phases hold.
        pilot_length : int or None
            ``None``: perfect CSI only; ``L >= 1``: the uplink pilots' length (the paper: ``L = K``).
        pilot_power_dbm : float
            Each user's uplink power per pilot symbol ``P_UL`` [dBm].
        seed : int
            Seed of the users' draws and the pilots' noise.
        """

        name: str = "deepmimo"
        path: str = ""
        tx_set: int = 0
        tx_index: int = 0
        rx_set: int | None = None

        def __post_init__(self) -> None:
            super().__post_init__()
            require(self.num_paths >= 1, "num_paths", f"must be an integer >= 1, got {self.num_paths}")

    def __init__(self, config):
        super().__init__(config)
        self._rays: RayTraced | None = None
        try:
            check_folder(config)
        except ConfigError as err:
            raise err.within("scenario") from None

    def rays(self) -> RayTraced:
        """The folder's paths, read once."""
        if self._rays is None:
            cfg = self.config
            self._rays = read_folder(Path(cfg.path), cfg.tx_set, cfg.tx_index, cfg.rx_set, cfg.num_paths)
        return self._rays

    @property
    def version(self) -> str:  # the cached networks depend on the folder's contents, not only its path
        return f"1-{self.rays().digest}"

    def user_uniforms(self) -> int:
        return self.config.num_users

    def users(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        rays = self.rays()
        index = distinct_indices(u, len(rays.gain))  # [n, K]

        def take(a: np.ndarray) -> Tensor:
            return torch.from_numpy(a)[index]  # [n, K, paths]

        az, el, delay, gain, phase = (take(a) for a in (rays.az, rays.el, rays.delay, rays.gain, rays.phase))
        cfg = self.config
        f_u, f_d = cfg.uplink_ghz * 1e9, cfg.downlink_ghz * 1e9
        m = torch.arange(cfg.num_antennas, dtype=torch.float64)
        sine = torch.sin(el) * torch.sin(az)

        def link(f: float) -> Tensor:
            turn = torch.remainder((f - rays.frequency) * delay, 1.0)
            coefficient = torch.polar(gain, phase - 2 * math.pi * turn)  # [n, K, paths]
            response = torch.polar(
                torch.ones_like(sine).unsqueeze(-1), math.pi * (f / f_d) * sine.unsqueeze(-1) * m
            )
            return (coefficient.unsqueeze(-1) * response).sum(-2)  # [n, K, M]

        positions = torch.from_numpy(rays.positions[:, :2])[index]
        return positions, link(f_u), link(f_d)
