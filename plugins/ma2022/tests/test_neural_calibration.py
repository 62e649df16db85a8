"""Neural calibration of ZF (Ma et al. 2022, Sec. IV-A): an uncalibrated channel gives the ``zf``
baseline exactly, the beamformers are permutation equivariant over the users (eq. 19), training on the
sum rate moves above ZF (Theorem 2), and the learner refuses what it cannot decide."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mimo_l2o_plugins.ma2022.networks import Calibrator
from mimo_l2o_plugins.ma2022.neural_calibration import NeuralCalibrationConfig, NeuralCalibrationLearner

from mimo_l2o.learner import LearnerSpec
from mimo_l2o.objectives.sum_rate import SumRate
from mimo_l2o.precoders.downlink import Downlink
from mimo_l2o.registry import LEARNERS
from mimo_l2o.scenarios.massive_fdd import MassiveFDD
from mimo_l2o.scenarios.multicell_miso import MulticellMISO
from mimo_l2o.solvers import beamformers as bf

M, K = 16, 4


def data(batch=128, seed=0, **config):
    scenario = MassiveFDD(MassiveFDD.Config(num_antennas=M, num_users=K, **config))
    net = scenario.sample(batch, torch.Generator().manual_seed(seed))
    problem = Downlink(None)(net)
    x = torch.view_as_real(problem.channel).float()
    return problem, x


def learner(**kw) -> NeuralCalibrationLearner:
    problem, _ = data(batch=1)
    spec = LearnerSpec(
        input_shapes={"downlink_channel": (1, K, M)},
        problem=problem.to(dtype=torch.float32),
        objective=SumRate(None),
    )
    return NeuralCalibrationLearner(NeuralCalibrationConfig(**kw), spec)


def test_registered_under_its_entry_point():
    assert LEARNERS.get("neural_calibration") is NeuralCalibrationLearner
    assert NeuralCalibrationLearner.inputs == ("downlink_channel",)
    assert not NeuralCalibrationLearner.requires_labels


def test_the_uncalibrated_channel_gives_the_zf_baseline():
    problem, x = data()
    model = learner().build_model(x, torch.Generator().manual_seed(0)).eval()
    W = model(x)
    ref = bf.zf(problem)
    assert (W - ref).abs().max() <= 1e-5 * ref.abs().max()
    # and it sits on the budget, like ZF
    assert torch.allclose(W.abs().square().sum((-2, -1)), problem.budget.float(), rtol=1e-5)


@pytest.mark.parametrize("residual", [True, False])
def test_beamformers_are_permutation_equivariant_over_users(residual):
    _, x = data(batch=16)
    model = learner(residual=residual, hidden=[32, 32]).build_model(x, torch.Generator().manual_seed(1))
    if residual:  # a calibration that is not the identity
        with torch.no_grad():
            torch.nn.init.normal_(model.calibrator.net[-1].weight, std=0.1)
    model.eval()
    perm = torch.randperm(K, generator=torch.Generator().manual_seed(2))
    W = model(x)
    Wp = model(x[:, :, perm])
    assert (Wp - W[..., perm]).abs().max() <= 1e-5 * W.abs().max()
    assert (Wp - W).abs().max() > 1e-3 * W.abs().max()  # the permutation did move the beams


def test_calibrator_is_one_mlp_applied_to_each_user():
    phi = Calibrator(M, [8], batch_norm=False, residual=False, scale=2.0).eval()
    h = torch.randn(5, 1, K, M, dtype=torch.complex64)
    out = phi(h)
    for k in range(K):
        alone = phi(h[:, :, k : k + 1])
        assert torch.allclose(out[:, :, k : k + 1], alone, atol=1e-6)


def test_training_on_the_sum_rate_moves_above_zf():
    problem, x = data(batch=256, seed=3)
    lrn = learner(hidden=[64, 64])
    model = lrn.build_model(x, torch.Generator().manual_seed(0))
    batch = {"inputs": x, **lrn.problem_tensors(problem.to(dtype=torch.float32))}
    with torch.no_grad():
        zf_rate = -float(lrn.loss(model.eval(), batch))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        lrn.loss(model, batch).backward()
        optimizer.step()
    with torch.no_grad():
        rate = -float(lrn.loss(model.eval(), batch))
    assert rate > zf_rate * 1.005


def test_refuses_several_cells_and_fewer_antennas_than_users():
    multicell = MulticellMISO(MulticellMISO.Config())
    assert "one cell" in NeuralCalibrationLearner.refuses(multicell, None)
    few = MassiveFDD(MassiveFDD.Config(num_antennas=4, num_users=8))
    assert "antennas >= users" in NeuralCalibrationLearner.refuses(few, None)
    assert NeuralCalibrationLearner.refuses(MassiveFDD(MassiveFDD.Config()), None) is None


# ---- implicit channel estimation (Sec. IV-B, eq. 22) ----------------------------------------------------
def implicit(csi="implicit", batch=64, seed=0, length=6, **kw):
    from mimo_l2o_plugins.ma2022.pilots import uplink_pilot_phase

    scenario = MassiveFDD(MassiveFDD.Config(num_antennas=M, num_users=K, pilot_length=length))
    net = scenario.sample(batch, torch.Generator().manual_seed(seed))
    problem = Downlink(None)(net)
    x = torch.view_as_real(uplink_pilot_phase(scenario, net, None)).float()
    spec = LearnerSpec(
        {"uplink_pilot_phase": tuple(x.shape[1:-1])}, problem.to(dtype=torch.float32), SumRate(None)
    )
    lrn = NeuralCalibrationLearner(NeuralCalibrationConfig(csi=csi, **kw), spec)
    return scenario, net, problem, x, lrn


def test_pilots_are_projected_onto_their_power_exactly():
    from mimo_l2o_plugins.ma2022.pilots import onto_pilot_power

    X = torch.randn(5, 7, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    X[0] *= 0.1  # inside the ball: unchanged
    X[1] *= 10.0
    P = onto_pilot_power(X)
    power = P.abs().square().sum(-1)
    assert (power <= 7 * (1 + 1e-6)).all()
    assert torch.equal(P[0], X[0])
    outside = X.abs().square().sum(-1) > 7
    assert torch.allclose(power[outside], torch.full_like(power[outside], 7.0), rtol=1e-6)


def test_ls_of_noise_free_pilots_recovers_the_uplink_channel():
    scenario, net, _, x, lrn = implicit()
    x = x.clone()
    x[..., K:, :] = 0  # no noise
    model = lrn.build_model(x, torch.Generator().manual_seed(0)).eval()
    estimate = model.uplink_estimate(x) * model.h_scale  # [B, 1, M, K]
    truth = net["h_ul"].transpose(-1, -2) * scenario.config.pilot_power**0.5
    assert (estimate - truth.to(estimate.dtype)).abs().max() <= 1e-4 * truth.abs().max()


def test_ls_calibrator_is_permutation_equivariant_over_antennas():
    _, _, _, x, lrn = implicit(ls_hidden=[16, 16])
    model = lrn.build_model(x, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.nn.init.normal_(
            model.ls_calibrator[-1].weight, std=0.3
        )  # a calibration that is not the identity
    model.eval()
    perm = torch.randperm(M, generator=torch.Generator().manual_seed(1))
    out = model.uplink_estimate(x)
    permuted = model.uplink_estimate(x[:, :, perm])
    assert (permuted - out[:, :, perm]).abs().max() <= 1e-5 * out.abs().max()
    plain = lrn.build_model(x, torch.Generator().manual_seed(0)).eval()  # identity calibration: a different Ĥ
    assert (plain.uplink_estimate(x) - out).abs().max() > 1e-3 * out.abs().max()


def test_channel_mismatch_ignores_a_common_complex_scale_as_zf_does():
    from mimo_l2o_plugins.ma2022.neural_calibration import channel_mismatch

    g = torch.Generator().manual_seed(0)
    H = torch.randn(3, 1, K, M, dtype=torch.complex128, generator=g)
    c = torch.tensor(0.3 - 2.0j, dtype=torch.complex128)
    assert channel_mismatch(c * H, H).abs().max() < 1e-12
    budget = torch.ones(3, 1, dtype=torch.float64)
    # ZF of cH is (c / |c|) times ZF of H on the budget: one common phase, which no rate sees
    W, Wc = (bf.zero_forcing(h.transpose(-1, -2), budget) for h in (H, c * H))
    assert torch.allclose(Wc, W * c / c.abs())
    G = torch.randn(3, 1, K, M, dtype=torch.complex128, generator=g)
    inner = (G.conj() * H).sum((1, 2, 3)).abs().square()
    ref = 1 - inner / (G.abs().square().sum((1, 2, 3)) * H.abs().square().sum((1, 2, 3)))
    assert torch.allclose(channel_mismatch(G, H), ref)


def test_block_by_block_fixes_the_dft_pilots_and_trains_the_map_on_the_channel():
    from mimo_l2o.scenarios.miso import dft_pilots

    _, _, problem, x, lrn = implicit(csi="block")
    model = lrn.build_model(x, torch.Generator().manual_seed(0))
    assert not model.pilots_real.requires_grad and model.ls_calibrator is None and model.calibrator is None
    assert torch.allclose(model.pilots(), dft_pilots(K, 6, 1.0).to(torch.complex64))
    batch = {"inputs": x, **lrn.problem_tensors(problem.to(dtype=torch.float32))}
    loss = lrn.loss(model, batch)
    assert 0 < float(loss.detach()) < 1  # a mismatch, not a rate


def test_uplink_csi_is_the_implicit_network_without_the_pilots_noise():
    """csi=uplink: the same learned chain as csi=implicit, fed noise-free pilots, so its decisions do not
    depend on the pilots' noise; its LS of the noise-free pilots is the uplink channel itself."""
    scenario, net, _, x, lrn = implicit(csi="uplink")
    features = {"uplink_pilot_phase": torch.view_as_complex(x.double().contiguous())}
    clean = lrn.prepare(features)
    assert clean[..., K:, :].abs().max() == 0 and torch.equal(clean[..., :K, :], x[..., :K, :])
    model = lrn.build_model(clean, torch.Generator().manual_seed(0)).eval()
    assert model.pilots_real.requires_grad and model.calibrator is not None  # the joint network
    noisier = features["uplink_pilot_phase"].clone()
    noisier[..., K:] *= 10
    with torch.no_grad():
        assert torch.equal(model(clean), model(lrn.prepare({"uplink_pilot_phase": noisier})))
    estimate = model.uplink_estimate(clean) * model.h_scale
    truth = net["h_ul"].transpose(-1, -2) * scenario.config.pilot_power**0.5
    assert (estimate - truth.to(estimate.dtype)).abs().max() <= 1e-4 * truth.abs().max()


def test_implicit_refuses_a_scenario_without_enough_pilots():
    none = MassiveFDD(MassiveFDD.Config(num_antennas=M, num_users=K))
    key, why = NeuralCalibrationLearner.refuses_setting(NeuralCalibrationConfig(csi="implicit"), none)
    assert key == "csi" and "pilot_length is null" in why
    short = MassiveFDD(MassiveFDD.Config(num_antennas=M, num_users=K, pilot_length=K - 1))
    key, why = NeuralCalibrationLearner.refuses_setting(NeuralCalibrationConfig(csi="block"), short)
    assert "pilot_length >= num_users" in why
    assert NeuralCalibrationLearner.refuses_setting(NeuralCalibrationConfig(), none) is None


# ---- the fully data-driven benchmark ------------------------------------------------------------------
def test_data_driven_beamformers_sit_on_the_budget_and_train_on_the_rate():
    from mimo_l2o_plugins.ma2022.data_driven import DataDrivenConfig, DataDrivenLearner

    problem, x = data(batch=256, seed=4)
    spec = LearnerSpec({"downlink_channel": (1, K, M)}, problem.to(dtype=torch.float32), SumRate(None))
    lrn = DataDrivenLearner(DataDrivenConfig(hidden=[64]), spec)
    assert LEARNERS.get("data_driven_bf") is DataDrivenLearner
    model = lrn.build_model(x, torch.Generator().manual_seed(0))
    W = model.eval()(x)
    assert W.shape == (256, 1, M, K)
    assert torch.allclose(W.abs().square().sum((-2, -1)), problem.budget.float(), rtol=1e-5)
    batch = {"inputs": x, **lrn.problem_tensors(problem.to(dtype=torch.float32))}
    with torch.no_grad():
        before = -float(lrn.loss(model.eval(), batch))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        lrn.loss(model, batch).backward()
        optimizer.step()
    with torch.no_grad():
        assert -float(lrn.loss(model.eval(), batch)) > before * 1.05


def test_data_driven_from_pilots_needs_pilots():
    from mimo_l2o_plugins.ma2022.data_driven import DataDrivenConfig, DataDrivenLearner

    none = MassiveFDD(MassiveFDD.Config(num_antennas=M, num_users=K))
    key, why = DataDrivenLearner.refuses_setting(DataDrivenConfig(csi="pilots"), none)
    assert key == "csi" and "scenario.pilot_length" in why
    assert DataDrivenLearner.refuses_setting(DataDrivenConfig(), none) is None
    assert "one cell" in DataDrivenLearner.refuses(MulticellMISO(MulticellMISO.Config()), None)


# ---- deep-unfolded WMMSE ------------------------------------------------------------------------------
def test_unfolded_wmmse_is_wmmse_written_out_and_its_factors_are_learned():
    from mimo_l2o_plugins.ma2022.networks import UnfoldedWMMSE

    problem, x = data(batch=8, seed=5)
    p64 = problem.to(dtype=torch.float64)
    model = UnfoldedWMMSE(3, p64.budget[0].double(), p64.noise[0].double())
    with torch.no_grad():
        model.log_scale.copy_(torch.tensor([0.0, 0.5, -0.3]))
    with torch.no_grad():
        W = model.double()(torch.view_as_real(p64.channel))
    noise, power = float(p64.noise[0, 0]), float(p64.budget[0, 0])
    for b in range(8):
        # from MRT on the budget, three iterations with the layers' factors, written out per sample
        H = p64.channel[b, 0].numpy()
        ref = H.T * np.sqrt(power / np.sum(np.abs(H) ** 2))
        for scale in np.exp([0.0, 0.5, -0.3]):
            ref = reference_wmmse_step(H, ref, noise, power, scale)
        # to the float32 rounding of the model's budget and noise buffers
        assert np.allclose(W[b, 0].numpy(), ref, rtol=1e-6, atol=1e-7 * np.abs(ref).max())
    assert model.log_scale.requires_grad


def reference_wmmse_step(h, V, noise, power, scale):
    """Shi et al.'s MISO WMMSE iteration for one sample, written out with the ``M × M`` inverse, the
    power-normalized multiplier ``μ = scale σ² Σ w|u|² / P`` and the scaling onto ``P``."""
    H = h.T
    g = H.conj().T @ V
    s = np.diag(g)
    u = s / (np.sum(np.abs(g) ** 2, 1) + noise)
    w = 1 / (1 - np.real(u.conj() * s))
    A = sum(w[k] * abs(u[k]) ** 2 * np.outer(H[:, k], H[:, k].conj()) for k in range(H.shape[1]))
    mu = scale * noise * np.sum(w * np.abs(u) ** 2) / power
    V = np.linalg.solve(A + mu * np.eye(H.shape[0]), H * (w * u))
    return V * np.sqrt(power / np.sum(np.abs(V) ** 2))


def test_unfolded_wmmse_rises_toward_wmmse_with_its_layers():
    from mimo_l2o_plugins.ma2022.networks import UnfoldedWMMSE

    problem, x = data(batch=64, seed=6)
    p64 = problem.to(dtype=torch.float64)
    rate = SumRate(None)
    rates = []
    for layers in (1, 5, 20):
        model = UnfoldedWMMSE(layers, p64.budget[0].double(), p64.noise[0].double()).double()
        with torch.no_grad():
            rates.append(float(rate(p64, model(torch.view_as_real(p64.channel))).mean()))
    assert rates[0] < rates[1] < rates[2]
    assert rates[2] > float(rate(p64, bf.mrt(p64)).mean())
