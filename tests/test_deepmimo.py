"""``scenario=deepmimo`` (issue 15): a ray-traced folder in DeepMIMO's v4 format, written here as a small
fixture, read without the network or the ``deepmimo`` package. The channels are DeepMIMO's narrowband
sum written out path by path, carried to each carrier by the path's delay; users sit on distinct points
that have paths; the strongest paths are kept; the cache follows the folder's contents."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from mimo_l2o.errors import ConfigError
from mimo_l2o.scenarios.deepmimo import DeepMIMO, distinct_indices
from tests.conftest import TINY, app_run


def write_fixture(folder, points=6, paths=4, frequency=2.5e9, seed=0):
    """A DeepMIMO v4 scenario folder: a BS (tx set 0) and ``points`` receivers (rx set 1), ``paths`` paths
    each (NaN-padded: point 0 has one fewer path, the last point none)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    params = {
        "version": "4.0.5",
        "rt_params": {"frequency": frequency, "raytracer_name": "synthetic", "raytracer_version": "0"},
        "txrx_sets": {
            "txrx_set_0": {"name": "bs", "id": 0, "is_tx": True, "is_rx": False, "num_points": 1},
            "txrx_set_1": {"name": "ue", "id": 1, "is_tx": False, "is_rx": True, "num_points": points},
        },
        "scene": {"num_scenes": 1},
        "materials": {},
    }
    (folder / "params.json").write_text(json.dumps(params))
    shape = (points, paths)
    arrays = {
        "aod_az": rng.uniform(-90, 90, shape),
        "aod_el": rng.uniform(60, 120, shape),
        "aoa_az": rng.uniform(-180, 180, shape),
        "aoa_el": rng.uniform(60, 120, shape),
        "delay": np.sort(rng.uniform(20e-9, 300e-9, shape), 1),
        "power": rng.uniform(-90, -60, shape),
        "phase": rng.uniform(-180, 180, shape),
    }
    for key in arrays:
        a = arrays[key] = arrays[key].astype(np.float32)
        a[0, -1] = np.nan
        a[-1, :] = np.nan
        np.savez(folder / f"{key}_t000_tx000_r001.npz", **{key: a})
    np.savez(folder / "rx_pos_t000_tx000_r001.npz", rx_pos=rng.uniform(0, 10, (points, 3)).astype(np.float32))
    return {k: v.astype(np.float64) for k, v in arrays.items()}


def reference(arrays, point, f, f0, f_d, antennas, keep=None):
    """DeepMIMO's narrowband channel of one point written out: Σ_p e^{jπ (f/f_D) m sin(el) sin(az)} √P e^{jφ},
    the phase carried from f0 to f by the path's delay; ``keep``: the paths used."""
    h = np.zeros(antennas, dtype=complex)
    for p in range(arrays["power"].shape[1]) if keep is None else keep:
        power = arrays["power"][point, p]
        if np.isnan(power):
            continue
        az, el = np.radians(arrays["aod_az"][point, p]), np.radians(arrays["aod_el"][point, p])
        phase = np.radians(arrays["phase"][point, p]) - 2 * np.pi * (f - f0) * arrays["delay"][point, p]
        m = np.arange(antennas)
        h += (
            np.sqrt(10 ** (power / 10))
            * np.exp(1j * phase)
            * np.exp(1j * np.pi * (f / f_d) * m * np.sin(el) * np.sin(az))
        )
    return h


def scenario(folder, **config):
    return DeepMIMO(DeepMIMO.Config(path=str(folder), **config))


def test_channels_are_deepmimos_narrowband_sum_at_each_carrier(tmp_path):
    arrays = write_fixture(tmp_path / "scen", frequency=2.4e9)
    s = scenario(tmp_path / "scen", num_antennas=8, num_users=3, num_paths=4)
    net = s.sample(20, torch.Generator().manual_seed(0))
    rays = s.rays()
    positions = net["user_positions"].numpy()
    all_positions = np.load(tmp_path / "scen" / "rx_pos_t000_tx000_r001.npz")["rx_pos"][:, :2].astype(
        np.float64
    )
    for b in range(20):
        for k in range(3):
            (point,) = np.flatnonzero(np.all(np.isclose(all_positions, positions[b, k]), 1))
            for name, ghz in (("h_ul", 2.4), ("h_dl", 2.5)):
                ref = reference(arrays, point, ghz * 1e9, 2.4e9, 2.5e9, 8)
                got = net[name][b, 0, k].numpy()
                assert np.allclose(got, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max()), (b, k, name)
    assert rays.frequency == 2.4e9


def test_users_are_distinct_points_with_paths_and_the_strongest_paths_are_kept(tmp_path):
    arrays = write_fixture(tmp_path / "scen")
    s = scenario(tmp_path / "scen", num_antennas=4, num_users=5, num_paths=2)
    net = s.sample(200, torch.Generator().manual_seed(1))
    positions = net["user_positions"]
    all_positions = torch.from_numpy(
        np.load(tmp_path / "scen" / "rx_pos_t000_tx000_r001.npz")["rx_pos"][:, :2].astype(np.float64)
    )
    index = (positions.unsqueeze(-2) - all_positions).abs().sum(-1).argmin(-1)  # [n, K] the points used
    assert (index != 5).all()  # the point without a path is never a user
    assert all(len(set(row.tolist())) == 5 for row in index)  # distinct in every sample
    # two strongest paths of each point, written out
    b, k = 0, 0
    point = int(index[b, k])
    power = np.nan_to_num(arrays["power"][point], nan=-np.inf)
    keep = np.argsort(-power, kind="stable")[:2]
    ref = reference(arrays, point, 2.5e9, 2.5e9, 2.5e9, 4, keep=keep)
    assert np.allclose(net["h_dl"][b, 0, k].numpy(), ref, rtol=1e-9)


def test_distinct_indices_are_uniform_without_replacement():
    u = torch.rand(60_000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    picks = distinct_indices(u, 4)
    assert (picks[:, 0] != picks[:, 1]).all() and picks.min() >= 0 and picks.max() <= 3
    counts = Counter(map(tuple, picks.tolist()))
    assert len(counts) == 12  # every ordered pair of distinct points
    for c in counts.values():
        assert c / 60_000 == pytest.approx(1 / 12, abs=0.006)


def test_the_cache_follows_the_folders_contents(tmp_path):
    write_fixture(tmp_path / "scen", seed=0)
    before = scenario(tmp_path / "scen", num_users=2).version
    write_fixture(tmp_path / "scen", seed=1)
    assert scenario(tmp_path / "scen", num_users=2).version != before


def test_a_folder_that_is_not_a_scenario_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="path") as err:
        scenario(tmp_path / "nothing", num_users=2)
    assert "params.json" in str(err.value)
    write_fixture(tmp_path / "scen")
    (tmp_path / "scen" / "phase_t000_tx000_r001.npz").unlink()
    with pytest.raises(ConfigError, match="path") as err:
        scenario(tmp_path / "scen", num_users=2)
    assert "phase_t000_tx000_r001" in str(err.value)


def test_more_users_than_points_with_paths_is_refused(tmp_path):
    write_fixture(tmp_path / "scen", points=6)
    with pytest.raises(ConfigError, match="num_users") as err:
        scenario(tmp_path / "scen", num_users=6)
    assert "at most the 5 points" in str(err.value)


def test_a_run_on_the_folder(tmp_path):
    write_fixture(tmp_path / "scen", points=40, paths=5)
    _, _, run = app_run(
        tmp_path,
        [
            "scenario=deepmimo",
            f"scenario.path={tmp_path / 'scen'}",
            "scenario.num_antennas=8",
            "scenario.num_users=3",
            "learner=neural_calibration",
            *TINY,
        ],
    )
    m = run.data.metrics
    assert 0 < m["test/objective_ratio"] <= 1 + 1e-6
    assert math.isfinite(m["test/objective_zf_bf"])
