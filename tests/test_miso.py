"""The single-cell TDD MISO scenario (Zhang et al. 2022, eq. 38), the downlink precoder, and Sun's DNN
on the beamforming family."""

from __future__ import annotations

import math

import pytest
import torch

from mimo_l2o.errors import ConfigError
from mimo_l2o.precoders.downlink import Downlink
from mimo_l2o.problems.beamforming import bs_power
from mimo_l2o.scenarios.miso import MISOFDD, MISOTDD, complex_normal, haar_unitary


def scenario(**kw) -> MISOTDD:
    return MISOTDD(MISOTDD.Config(**{"num_antennas": 4, "num_users": 3, **kw}))


def test_downlink_is_the_fixed_mismatch_of_the_uplink_in_every_split():
    """h_D,k = c_k Φ h_U,k with one unitary Φ and one c for the whole seed: the same in two draws from
    different generators (the training and test sets), and different for another scenario seed."""
    s = scenario()
    phi, c = s.mismatch()
    torch.testing.assert_close(phi.mH @ phi, torch.eye(4, dtype=phi.dtype), rtol=0, atol=1e-12)
    for seed in (1, 2):
        net = s.sample(50, torch.Generator().manual_seed(seed))
        h_ul, h_dl = net["h_ul"][:, 0], net["h_dl"][:, 0]
        assert h_ul.shape == (50, 3, 4) and h_ul.dtype == torch.complex128
        expected = c[None, :, None] * torch.einsum("ij,bkj->bki", phi, h_ul)
        torch.testing.assert_close(h_dl, expected, rtol=1e-12, atol=1e-12)
    other, _ = scenario(seed=1).mismatch()
    assert (other - phi).abs().max() > 0.1


def test_the_fixed_mismatch_nests_over_users_and_antennas():
    """User k keeps its c_k whatever K and N_t (a K sweep compares the same users plus more), Φ is the
    same for any K and a Haar unitary for each N_t, and the c_k are CN(0, 1) across users."""
    phi6, c6 = scenario(num_antennas=8, num_users=6).mismatch()
    phi8, c8 = scenario(num_antennas=8, num_users=8).mismatch()
    torch.testing.assert_close(c8[:6], c6, rtol=0, atol=0)
    torch.testing.assert_close(phi8, phi6, rtol=0, atol=0)
    _, c_small = scenario(num_antennas=2, num_users=2).mismatch()
    torch.testing.assert_close(c_small, c6[:2], rtol=0, atol=0)
    phi16, _ = scenario(num_antennas=16, num_users=6).mismatch()
    torch.testing.assert_close(phi16.mH @ phi16, torch.eye(16, dtype=phi16.dtype), rtol=0, atol=1e-12)
    # the same nesting for the FDD pair (its own streams) and another draw for another seed
    _, f6 = MISOFDD(MISOFDD.Config(num_antennas=8, num_users=6)).mismatch()
    _, f8 = MISOFDD(MISOFDD.Config(num_antennas=8, num_users=8)).mismatch()
    torch.testing.assert_close(f8[:6], f6, rtol=0, atol=0)
    assert (f6 - c6).abs().min() > 0
    _, other = scenario(num_antennas=8, num_users=6, seed=1).mismatch()
    assert (other - c6).abs().min() > 0
    # CN(0, 1): E|c|² = 1, E c = 0, E c² = 0 over many users (4000: standard errors ~0.016)
    _, many = scenario(num_antennas=2, num_users=4000).mismatch()
    assert abs(many.abs().square().mean() - 1) < 0.08
    assert many.mean().abs() < 0.06 and many.square().mean().abs() < 0.08


def test_per_sample_mismatch_differs_between_samples_and_first_n_of_2n():
    s = scenario(mismatch="per_sample")
    net = s.sample(20, torch.Generator().manual_seed(0))
    head = s.sample(10, torch.Generator().manual_seed(0))
    torch.testing.assert_close(head["h_dl"], net["h_dl"][:10], rtol=0, atol=0)
    # the ratio h_dl / (Φ h_ul) is not one fixed map: two samples' least-squares maps differ
    h_ul, h_dl = net["h_ul"][:, 0], net["h_dl"][:, 0]
    maps = torch.linalg.lstsq(h_ul[:, :, :], h_dl[:, :, :]).solution  # per sample, 3 equations x 4
    assert (maps[0] - maps[1]).abs().max() > 0.1


def test_complex_normal_and_haar_statistics():
    g = torch.Generator().manual_seed(0)
    z = complex_normal(torch.rand(200_000, 2, generator=g, dtype=torch.float64)).squeeze(-1)
    assert abs(float(z.abs().square().mean()) - 1) < 0.01
    assert abs(float(z.real.var()) - 0.5) < 0.01 and abs(float((z.real * z.imag).mean())) < 0.01
    # a Haar unitary's entries have E|U_ij|² = 1/N
    u = haar_unitary(complex_normal(torch.rand(4000, 3, 6, generator=g, dtype=torch.float64)))
    torch.testing.assert_close(
        u.abs().square().mean(0), torch.full((3, 3), 1 / 3, dtype=torch.float64), atol=0.02, rtol=0
    )


def test_downlink_problem_sinr_against_a_loop():
    net = scenario(p_max=10.0).sample(4, torch.Generator().manual_seed(3))
    problem = Downlink(None)(net)
    assert problem.decision_shape == (1, 4, 3) and problem.budget.tolist() == [[10.0]] * 4
    W = torch.randn((4, 1, 4, 3), generator=torch.Generator().manual_seed(1), dtype=torch.complex128)
    sinr = problem.sinr(W)
    h = net["h_dl"][:, 0]
    for b in range(4):
        for k in range(3):
            g = [abs(torch.vdot(h[b, k], W[b, 0, :, j])) ** 2 for j in range(3)]
            assert math.isclose(float(sinr[b, k]), float(g[k] / (sum(g) - g[k] + 1.0)), rel_tol=1e-12)


@pytest.mark.parametrize(
    "kw,key", [({"num_antennas": 0}, "num_antennas"), ({"mismatch": "random"}, "mismatch")]
)
def test_bad_config_names_the_key(kw, key):
    with pytest.raises(ConfigError) as err:
        scenario(**kw)
    assert err.value.key == key


def test_beamforming_dnn_loss_ignores_each_beams_phase_and_outputs_are_on_budget():
    from mimo_l2o_plugins.sun2018.dnn import ToBeamformers, canonical_phase

    g = torch.Generator().manual_seed(0)
    W = torch.randn((5, 2, 4, 3), generator=g, dtype=torch.complex64)
    phases = torch.exp(1j * torch.rand((5, 2, 1, 3), generator=g) * 6.28).to(torch.complex64)
    torch.testing.assert_close(canonical_phase(W * phases), canonical_phase(W), rtol=1e-5, atol=1e-6)
    assert (canonical_phase(W)[..., 0, :].imag.abs() < 1e-6).all() and (
        canonical_phase(W)[..., 0, :].real >= 0
    ).all()
    to_w = ToBeamformers((2, 4, 3), torch.tensor([3.0, 7.0]))
    out = to_w(torch.randn(5, 2 * 2 * 4 * 3, generator=g))
    torch.testing.assert_close(bs_power(out), torch.tensor([[3.0, 7.0]]).expand(5, 2), rtol=1e-5, atol=0)


def test_fdd_links_share_each_paths_angle_delay_and_phase():
    """One path (L_p = 1): the uplink is α e^{−j2π f_U τ + jφ} a_U(θ), the downlink before the mismatch
    √(1/2) α² e^{−j2π f_D τ + jφ} a_D(θ) (eq. 40). So the antenna-to-antenna phase steps are π r sin θ and
    π sin θ (r = f_U / f_D), the same θ; |h_D| = √(1/2) |h_U|² on every antenna; with one f in both links
    (eq. 40) the downlink is |u| u / √2 of the uplink, with each band's own carrier its phase is not."""
    from mimo_l2o.scenarios.miso import MISOFDD

    s = MISOFDD(MISOFDD.Config(num_antennas=8, num_users=3, num_paths=1, mean_angle_deg=30.0))
    net = s.sample(20, torch.Generator().manual_seed(4))
    phi, c = s.mismatch()
    h_ul = net["h_ul"][:, 0]
    h_d = torch.einsum("ij,bkj->bki", phi.mH, net["h_dl"][:, 0]) / c[None, :, None]  # before the mismatch
    step_ul = (h_ul[..., 1:] / h_ul[..., :-1]).angle()
    step_dl = (h_d[..., 1:] / h_d[..., :-1]).angle()
    torch.testing.assert_close(step_ul, step_ul[..., :1].expand_as(step_ul), rtol=0, atol=1e-9)
    torch.testing.assert_close(step_ul, step_dl * (2.5 / 2.4), rtol=0, atol=1e-9)
    torch.testing.assert_close(h_d.abs(), h_ul.abs().square() / math.sqrt(2), rtol=1e-9, atol=0)
    # one f in both links and a real attenuation: the downlink is a function of the uplink, |u| u / √2
    torch.testing.assert_close(
        h_d[..., 0], h_ul[..., 0].abs() * h_ul[..., 0] / math.sqrt(2), rtol=1e-9, atol=1e-12
    )
    # each band at its own carrier: the same amplitudes, unrelated phases
    per_band = MISOFDD(
        MISOFDD.Config(num_antennas=8, num_users=3, num_paths=1, mean_angle_deg=30.0, delay_phase="per_band")
    )
    net = per_band.sample(20, torch.Generator().manual_seed(4))
    h_ul = net["h_ul"][:, 0]
    h_d = torch.einsum("ij,bkj->bki", phi.mH, net["h_dl"][:, 0]) / c[None, :, None]
    torch.testing.assert_close(h_d.abs(), h_ul.abs().square() / math.sqrt(2), rtol=1e-9, atol=0)
    assert (
        (h_d[..., 0] - h_ul[..., 0].abs() * h_ul[..., 0] / math.sqrt(2)).abs() > 1e-3
    ).float().mean() > 0.9


def test_fdd_links_have_unit_mean_gain_and_bad_keys_are_named():
    from mimo_l2o.scenarios.miso import MISOFDD

    s = MISOFDD(MISOFDD.Config(num_antennas=16, num_users=4, mismatch="per_sample"))
    net = s.sample(3000, torch.Generator().manual_seed(0))
    assert abs(float(net["h_ul"].abs().square().mean()) - 1) < 0.05
    assert abs(float(net["h_dl"].abs().square().mean()) - 1) < 0.1
    for kw, key in (({"angle_spread_deg": 40}, "angle_spread_deg"), ({"num_paths": 0}, "num_paths")):
        with pytest.raises(ConfigError) as err:
            MISOFDD(MISOFDD.Config(**kw))
        assert err.value.key == key


def test_learned_channel_and_beamforming_keeps_the_rate_out_of_the_csi_net():
    """``variant: channel_bf`` (Sec. VII's "learned channel and beamforming"): the CSI-Net learns from
    ``L_H`` alone, the data-driven beamforming net from the rate alone, and its beamformers use the
    budget."""
    from mimo_l2o_plugins.zhang2022.config import ModelDrivenConfig
    from mimo_l2o_plugins.zhang2022.model_driven import ModelDrivenLearner

    from mimo_l2o.learner import LearnerSpec
    from mimo_l2o.objectives.sum_rate import SumRate
    from mimo_l2o.solvers import beamformers as bf

    net = scenario().sample(16, torch.Generator().manual_seed(0))
    problem = Downlink(None)(net)
    spec = LearnerSpec(input_shapes={}, problem=problem[:1].to("cpu", torch.float32), objective=SumRate(None))
    learner = ModelDrivenLearner(ModelDrivenConfig(name="model_driven", variant="channel_bf"), spec)
    x = learner.prepare({"uplink_channel": net["h_ul"]})
    model = learner.build_model(x, torch.Generator().manual_seed(0))
    batch = {"inputs": x, "labels": None, **learner.problem_tensors(problem.to("cpu", torch.float32))}
    model.train()
    learner.loss(model, batch).backward()
    csi = [p.grad.clone() for p in model.csi.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.power.parameters())
    model.zero_grad()
    H_true = bf.own_channels(learner.batch_problem(batch))[:, 0]
    torch.view_as_real(model.channel(x) - H_true).square().mean().backward()  # L_H alone
    for with_rate, alone in zip(csi, (p.grad for p in model.csi.parameters()), strict=True):
        torch.testing.assert_close(with_rate, alone, rtol=1e-5, atol=1e-8)
    W = model.eval()(x)
    assert W.shape == (16, 1, 4, 3)
    torch.testing.assert_close(bs_power(W), torch.full((16, 1), 100.0), rtol=1e-4, atol=0)


def test_the_cnn_power_net_convolves_along_the_antennas_and_its_powers_fill_the_budget():
    """Sec. VII-B's 1-D CNN Power-Net: each user's real and imaginary parts are input channels along the
    antennas, so two 3-tap convolutions at antenna ``i`` read antennas ``i - 2 .. i + 2`` only."""
    from mimo_l2o_plugins.zhang2022.config import ModelDrivenConfig
    from mimo_l2o_plugins.zhang2022.model_driven import ModelDrivenLearner
    from mimo_l2o_plugins.zhang2022.networks import ConvPowerNet

    from mimo_l2o.learner import LearnerSpec
    from mimo_l2o.objectives.sum_rate import SumRate

    net = scenario(num_antennas=8).sample(16, torch.Generator().manual_seed(0))
    problem = Downlink(None)(net)
    spec = LearnerSpec(input_shapes={}, problem=problem[:1].to("cpu", torch.float32), objective=SumRate(None))
    learner = ModelDrivenLearner(ModelDrivenConfig(name="model_driven", power_net="cnn"), spec)
    x = learner.prepare({"uplink_channel": net["h_ul"]})
    model = learner.build_model(x, torch.Generator().manual_seed(0)).eval()
    cnn = model.power
    assert isinstance(cnn, ConvPowerNet)
    # the input channels are the users' real and imaginary parts, in that order, along the antennas
    columns = net["h_ul"][:, 0]  # [B, K, N]
    z = cnn.antenna_channels(x)
    torch.testing.assert_close(z[:, 0::2].double(), columns.real, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(z[:, 1::2].double(), columns.imag, rtol=1e-6, atol=1e-6)
    # changing antenna 0 of every user moves the convolutions' output at antennas 0..2 only
    moved = torch.view_as_real(columns.clone())
    moved[:, :, 0] += 1.0
    y = learner.prepare({"uplink_channel": torch.view_as_complex(moved).unsqueeze(1)})
    with torch.no_grad():
        a, b = cnn.conv(cnn.antenna_channels(x)), cnn.conv(cnn.antenna_channels(y))
    assert (a[..., :3] - b[..., :3]).abs().amax() > 1e-3
    torch.testing.assert_close(a[..., 3:], b[..., 3:], rtol=0, atol=0)
    _, p, q = model.parts(x)
    torch.testing.assert_close(p.sum(-1), torch.full((16,), 100.0), rtol=1e-5, atol=0)
    torch.testing.assert_close(q.sum(-1), torch.full((16,), 100.0), rtol=1e-5, atol=0)
