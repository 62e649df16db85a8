"""The ``massive_fdd`` scenario (Ma et al. 2022, Sec. II-A and V-A): the room's rays (line of sight and
first-order wall reflections by the image method), the channels of eq. (1)-(2) written out path by path,
the shared gains and delays between the bands, the users' placement, the pilots' noise and LS estimate."""

from __future__ import annotations

import math

import pytest
import torch

from mimo_l2o.errors import ConfigError
from mimo_l2o.scenarios.massive_fdd import SPEED_OF_LIGHT, MassiveFDD, room_paths
from mimo_l2o.scenarios.miso import dft_pilots


def scenario(**config) -> MassiveFDD:
    return MassiveFDD(MassiveFDD.Config(**config))


def reference_channel(cfg, position: tuple[float, float], f: float) -> torch.Tensor:
    """Eq. (1)-(2) for one user, written out: each ray from the user's mirror images, summed."""
    bx, by = cfg.room_width_m / 2, cfg.bs_offset_m
    x, y = position
    W, D = cfg.room_width_m, cfg.room_depth_m
    rays = [((x, y), 0), ((-x, y), 1), ((2 * W - x, y), 1), ((x, -y), 1), ((x, 2 * D - y), 1)]
    lam_d = SPEED_OF_LIGHT / (cfg.downlink_ghz * 1e9)
    h = torch.zeros(cfg.num_antennas, dtype=torch.complex128)
    for (px, py), bounces in rays[: cfg.num_paths] if cfg.num_paths == 5 else rays[:1]:
        d = math.hypot(px - bx, py - by)
        sin = (px - bx) / d
        loss_db = cfg.downlink_loss_db if f == cfg.downlink_ghz * 1e9 else cfg.uplink_loss_db
        amplitude = lam_d / (4 * math.pi * d) * 10 ** (-loss_db / 20)
        amplitude *= (-(10 ** (-cfg.reflection_loss_db / 20))) ** bounces
        for m in range(cfg.num_antennas):
            # half a downlink wavelength apart: the phase step of element m at carrier f
            phase = -2 * math.pi * f * d / SPEED_OF_LIGHT - math.pi * (f / (cfg.downlink_ghz * 1e9)) * m * sin
            h[m] += amplitude * complex(math.cos(phase), math.sin(phase))
    return h


@pytest.mark.parametrize("paths", [1, 5])
def test_channels_are_the_rays_of_eq_1_written_out(paths):
    s = scenario(num_antennas=8, num_users=3, num_paths=paths)
    net = s.sample(4, torch.Generator().manual_seed(1))
    cfg = s.config
    for b in range(4):
        for k in range(3):
            pos = tuple(net["user_positions"][b, k].tolist())
            for name, ghz in (("h_ul", cfg.uplink_ghz), ("h_dl", cfg.downlink_ghz)):
                ref = reference_channel(cfg, pos, ghz * 1e9)
                assert torch.allclose(net[name][b, 0, k], ref, rtol=1e-9, atol=1e-12 * ref.abs().max())


def test_image_paths_have_the_mirrored_lengths_and_the_los_is_shortest():
    users = torch.tensor([[[3.0, 4.0], [9.0, 9.0]]], dtype=torch.float64)
    bs = torch.tensor([5.0, 0.5], dtype=torch.float64)
    length, sine, bounces = room_paths(users, bs, 10.0, 10.0)
    # user (3, 4) mirrored across x = 0: (-3, 4); x = 10: (17, 4); y = 0: (3, -4); y = 10: (3, 16)
    expected = [
        math.hypot(-2, 3.5),
        math.hypot(-8, 3.5),
        math.hypot(12, 3.5),
        math.hypot(-2, -4.5),
        math.hypot(-2, 15.5),
    ]
    assert torch.allclose(length[0, 0], torch.tensor(expected, dtype=torch.float64))
    assert torch.allclose(sine[0, 0, 0], torch.tensor(-2 / math.hypot(-2, 3.5), dtype=torch.float64))
    assert bounces[0, 0].tolist() == [0, 1, 1, 1, 1]
    assert (length[..., :1] <= length[..., 1:]).all()  # a reflection is never shorter than the direct ray


def test_fewer_paths_keep_the_line_of_sight_and_the_shortest_reflections():
    five = scenario(num_antennas=4, num_users=6)
    three = scenario(num_antennas=4, num_users=6, num_paths=3)
    pos = five.sample(50, torch.Generator().manual_seed(2))["user_positions"]
    length, _, _ = room_paths(pos, five.bs_position(), 10.0, 10.0)
    kept = torch.cat((length[..., :1], length[..., 1:].sort(-1).values[..., :2]), -1)
    # through a one-antenna array each kept ray contributes its complex gain alone
    one = scenario(num_antennas=1, num_users=6, num_paths=3)
    h = one.channels(pos)[1][..., 0]  # downlink
    cfg = one.config
    lam = SPEED_OF_LIGHT / (cfg.downlink_ghz * 1e9)
    refl = -(10 ** (-cfg.reflection_loss_db / 20))
    bounces = torch.tensor([0, 1, 1], dtype=torch.float64)
    amp = lam / (4 * math.pi * kept) * 10 ** (-cfg.downlink_loss_db / 20) * refl**bounces
    turn = torch.remainder(cfg.downlink_ghz * 1e9 * kept / SPEED_OF_LIGHT, 1.0)
    ref = (amp * torch.exp(-2j * math.pi * turn)).sum(-1)
    assert torch.allclose(h, ref, rtol=1e-9)
    assert three.sample(3, torch.Generator().manual_seed(0))["h_dl"].shape == (3, 1, 6, 4)


def test_bands_share_gains_and_angles_so_one_path_has_equal_magnitudes():
    """One path's magnitudes are equal on both links up to the links' own extra losses (the link
    budget: 30 dB on the downlink, none on the uplink by default)."""
    s = scenario(num_antennas=16, num_users=4, num_paths=1)
    net = s.sample(20, torch.Generator().manual_seed(3))
    step = 10 ** ((s.config.uplink_loss_db - s.config.downlink_loss_db) / 20)
    assert torch.allclose(net["h_ul"].abs() * step, net["h_dl"].abs(), rtol=1e-12)
    # the phase step across the array scales with the carrier (half a downlink wavelength apart)
    step_u = (net["h_ul"][..., 1:] / net["h_ul"][..., :-1]).angle()
    step_d = (net["h_dl"][..., 1:] / net["h_dl"][..., :-1]).angle()
    assert torch.allclose(step_u, step_d * 2.4 / 2.5, atol=1e-9)


def test_users_stay_in_the_room_in_front_of_the_bs_and_samples_are_prefixes():
    s = scenario(num_users=5)
    cfg = s.config
    big = s.sample(400, torch.Generator().manual_seed(4))
    pos = big["user_positions"]
    assert (pos[..., 0] >= cfg.margin_m).all() and (pos[..., 0] <= cfg.room_width_m - cfg.margin_m).all()
    assert (pos[..., 1] >= cfg.bs_offset_m + cfg.min_distance_m).all()
    assert (pos[..., 1] <= cfg.room_depth_m - cfg.margin_m).all()
    small = s.sample(100, torch.Generator().manual_seed(4))
    assert torch.equal(small["h_dl"], big["h_dl"][:100])


def test_pilots_noise_and_ls_estimate():
    s = scenario(num_antennas=32, num_users=4, pilot_length=6, pilot_power_dbm=0.0)
    cfg = s.config
    net = s.sample(3000, torch.Generator().manual_seed(5))
    noise, ls, h = net["pilot_noise"], net["h_ul_ls"], net["h_ul"]
    assert noise.shape == (3000, 1, 32, 6)
    X = dft_pilots(4, 6, cfg.pilot_power)
    assert torch.allclose(
        ls, ((h.transpose(-1, -2) @ X + noise) @ X.mH / (6 * cfg.pilot_power)).transpose(-1, -2)
    )
    # orthogonal pilots (L >= K): the LS error is the noise's, of variance σ² / (L P_UL) per entry
    var = (ls - h).abs().square().mean().item()
    assert var == pytest.approx(cfg.noise_power / (6 * cfg.pilot_power), rel=0.03)
    assert noise.abs().square().mean().item() == pytest.approx(cfg.noise_power, rel=0.03)


def test_powers_are_in_dbm():
    cfg = scenario(p_max_dbm=5.0, noise_dbm=-85.0).config
    assert cfg.p_max == pytest.approx(10**0.5 * 1e-3)
    assert cfg.noise_power == pytest.approx(10**-8.5 * 1e-3)


@pytest.mark.parametrize(
    "key, value",
    [
        ("num_paths", 6),
        ("num_paths", 0),
        ("pilot_length", 0),
        ("min_distance_m", 20.0),
        ("room_width_m", 0.0),
        ("noise_dbm", math.inf),
        ("reflection_loss_db", -1.0),
    ],
)
def test_bad_keys_name_themselves(key, value):
    with pytest.raises(ConfigError, match=key):
        scenario(**{key: value})


def test_the_link_budget_puts_the_papers_pilots_well_above_the_noise():
    """At the paper's P_UL = −10 dBm (M = 64, K = L = 8) the LS estimate's NMSE is below −20 dB with each
    link's own loss (Fig. 10's regime), and near 0 dB with the downlink's loss on the uplink too."""
    from mimo_l2o.evaluation import uplink_nmse_db

    def nmse(**kw):
        s = scenario(
            **{"num_antennas": 64, "num_users": 8, "pilot_length": 8, "pilot_power_dbm": -10.0, **kw}
        )
        return uplink_nmse_db(s.sample(400, torch.Generator().manual_seed(0)))

    assert nmse() < -20
    assert nmse(uplink_loss_db=30.0) > -3
    assert nmse(pilot_power_dbm=-20.0) == pytest.approx(nmse() + 10, abs=0.5)  # LS: 10 dB per 10 dB


def test_the_uplink_nmse_and_zf_baselines_are_the_formulas_written_out():
    import numpy as np

    from mimo_l2o.evaluation import uplink_nmse_db
    from mimo_l2o.precoders.downlink import Downlink
    from mimo_l2o.solvers.beamformers import uplink_zf

    s = scenario(num_antennas=8, num_users=3, pilot_length=4, pilot_power_dbm=-30.0)
    net = s.sample(20, torch.Generator().manual_seed(1))
    h, ls = net["h_ul"].numpy(), net["h_ul_ls"].numpy()
    per_sample = [np.linalg.norm(ls[i] - h[i]) ** 2 / np.linalg.norm(h[i]) ** 2 for i in range(20)]
    assert uplink_nmse_db(net) == pytest.approx(10 * np.log10(np.mean(per_sample)), abs=1e-9)
    problem = Downlink(None)(net)
    baselines = uplink_zf(net, problem)
    assert sorted(baselines) == ["zf_ls", "zf_uplink"]
    p_max = net.params["p_max"]
    for name, channel in (("zf_uplink", h), ("zf_ls", ls)):
        for i in range(20):
            G = channel[i, 0]  # [K, M], on the BS's power
            W = np.linalg.pinv(G.conj())  # user k receives h_kᴴ w: conj(G) W = d I
            W *= np.sqrt(p_max) / np.linalg.norm(W)
            np.testing.assert_allclose(baselines[name][i, 0].numpy(), W, rtol=1e-8, atol=1e-12)
    # a network without an uplink gets none
    perfect = scenario(num_antennas=8, num_users=3).sample(5, torch.Generator().manual_seed(1))
    del perfect.tensors["h_ul"]
    assert uplink_zf(perfect, Downlink(None)(perfect)) == {} and uplink_nmse_db(perfect) is None


def test_a_run_with_pilots_logs_their_nmse_and_the_uplink_zf_baselines(tmp_path):
    """Through the app: the pilots' worth (test/nmse_uplink_ls, dB) and the gap-separating baselines
    beside the solver's (ZF of the uplink as if it were the downlink, ZF of the LS estimate), here for
    the neural calibration on the noise-free pilots (csi=uplink)."""
    from tests.conftest import TINY, app_run

    _, _, run = app_run(
        tmp_path,
        [
            "scenario=massive_fdd",
            "scenario.num_antennas=16",
            "scenario.num_users=4",
            "scenario.pilot_length=4",
            "learner=neural_calibration",
            "learner.csi=uplink",
            "eval.baselines=[zf_bf]",
            "tracking.log_model=false",
            *TINY,
        ],
    )
    m = run.data.metrics
    # L = 4 pilots at −10 dBm, no extra uplink loss: 10·log10(8/4) = 3 dB above the −31 dB at L = 8
    assert -32 < m["test/nmse_uplink_ls"] < -24
    # ZF on the uplink channel (2.4 GHz) misses the downlink's phases: well below ZF on the downlink
    assert m["test/objective_zf_uplink"] < 0.8 * m["test/objective_zf_bf"]
    # the LS estimate is the uplink channel up to its small error: the same rate within a few %
    assert m["test/objective_zf_ls"] == pytest.approx(m["test/objective_zf_uplink"], rel=0.1)
