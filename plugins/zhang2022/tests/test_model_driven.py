"""The model-driven learner of Zhang et al. (2022): its recovery module against the closed forms, the
Power-Net's budgets, the per-user CSI-Net's equivariance and the hybrid loss against its terms written
out (a training run: tests/test_miso_run.py)."""

from __future__ import annotations

import math

import pytest
import torch
from mimo_l2o_plugins.zhang2022.config import ModelDrivenConfig
from mimo_l2o_plugins.zhang2022.csi_features import beamspace_grid, beamspace_products
from mimo_l2o_plugins.zhang2022.model_driven import ModelDrivenLearner
from mimo_l2o_plugins.zhang2022.networks import ModelDrivenNet

from mimo_l2o.learner import LearnerSpec
from mimo_l2o.objectives.sum_rate import SumRate
from mimo_l2o.precoders.downlink import Downlink
from mimo_l2o.registry import LEARNERS
from mimo_l2o.scenarios.miso import MISOTDD
from mimo_l2o.solvers import beamformers as bf
from mimo_l2o.solvers.wmmse_bf import start, wmmse_bf

N, K, P = 4, 3, 100.0


def data(batch=64, seed=0):
    scenario = MISOTDD(MISOTDD.Config(num_antennas=N, num_users=K, p_max=P))
    net = scenario.sample(batch, torch.Generator().manual_seed(seed))
    problem = Downlink(None)(net)
    x = torch.view_as_real(net["h_ul"]).flatten(1).float()
    return net, problem, x


def learner(**kw) -> ModelDrivenLearner:
    _, problem, _ = data(batch=1)
    spec = LearnerSpec(
        input_shapes={"uplink_channel": (1, K, N)},
        problem=problem.to(dtype=torch.float32),
        objective=SumRate(None),
    )
    return ModelDrivenLearner(ModelDrivenConfig(name="model_driven", **kw), spec)


def test_registered_under_its_entry_point():
    assert LEARNERS.get("model_driven") is ModelDrivenLearner
    assert ModelDrivenLearner.inputs == ("uplink_channel",) and ModelDrivenLearner.families == (
        "beamforming",
    )


def test_recovery_forms_agree_and_powers_sum_to_the_budget():
    _, _, x = data()
    nets = {}
    for recovery in ("structure", "reduced"):
        torch.manual_seed(0)
        nets[recovery] = ModelDrivenNet(
            ModelDrivenConfig(name="m", recovery=recovery), N, K, P, 1.0, 1.0
        ).eval()
    nets["reduced"].load_state_dict(nets["structure"].state_dict())
    H, p, q = nets["structure"].parts(x)
    torch.testing.assert_close(p.sum(-1), torch.full((64,), P), rtol=1e-5, atol=0)
    torch.testing.assert_close(q.sum(-1), torch.full((64,), P), rtol=1e-5, atol=0)
    W = nets["structure"](x)
    torch.testing.assert_close(nets["reduced"](x), W, rtol=1e-3, atol=1e-4)
    # the structure module is eq. (7) on the learned parts, and each beam carries its power p_k
    torch.testing.assert_close(W[:, 0], bf.optimal_structure(H, p, q, torch.ones(64)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(W[:, 0].abs().square().sum(-2), p, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("features", ["antenna", "beamspace"])
def test_per_user_csi_net_is_permutation_equivariant(features):
    torch.manual_seed(0)
    cfg = ModelDrivenConfig(name="m", csi_sharing="per_user", csi_features=features)
    net = ModelDrivenNet(cfg, N, K, P, 1.0, 1.0).eval()
    _, _, x = data(batch=8)
    perm = torch.tensor([2, 0, 1])
    permuted = x.reshape(8, K, 2 * N)[:, perm].reshape(8, -1)
    torch.testing.assert_close(net.channel(permuted), net.channel(x)[:, :, perm], rtol=1e-5, atol=1e-6)


def test_channel_zf_variant_zero_forces_the_learned_channel_on_the_budget():
    torch.manual_seed(0)
    net = ModelDrivenNet(ModelDrivenConfig(name="m", variant="channel_zf"), N, K, P, 1.0, 1.0).eval()
    _, _, x = data(batch=8)
    H, p, q = net.parts(x)
    assert p is None and q is None and net.power is None
    W = net(x)[:, 0]
    cross = H.mH @ W  # [b, k, j] = ĥ_kᴴ w_j
    off = cross - torch.diag_embed(cross.diagonal(dim1=-2, dim2=-1))
    assert off.abs().max() < 1e-3 * cross.abs().max()
    torch.testing.assert_close(W.abs().square().sum((-2, -1)), torch.full((8,), P), rtol=1e-4, atol=0)


def test_hybrid_loss_is_the_weighted_sum_of_its_terms():
    _, problem, x = data(batch=16)
    labels = wmmse_bf(problem, start(problem, "mrt")).to(torch.complex64)
    one = learner(alpha_h=1.0, alpha_p=1.0, alpha_r=0.5)
    model = one.build_model(x, torch.Generator().manual_seed(0)).eval()
    batch = {"inputs": x, "labels": labels, **one.problem_tensors(problem.to(dtype=torch.float32))}
    H, p, q = model.parts(x)
    loss_h = torch.view_as_real(H - bf.own_channels(problem)[:, 0].to(H.dtype)).square().mean()
    p_label = labels[:, 0].abs().square().sum(-2)
    q_label = bf.dual_uplink_powers(problem, labels.to(torch.complex128)).float()
    loss_p = 0.5 * ((p - p_label).square().mean() + (q - q_label).square().mean()) / P**2
    rate = SumRate(None)(problem.to(dtype=torch.float32), model(x)).mean()
    expected = loss_h + loss_p - 0.5 * rate
    torch.testing.assert_close(one.loss(model, batch), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(one.validation_loss(model, batch), -rate, rtol=1e-5, atol=1e-5)
    zf = learner(variant="channel_zf")
    zf_model = zf.build_model(x, torch.Generator().manual_seed(0)).eval()
    H, _, _ = zf_model.parts(x)
    torch.testing.assert_close(
        zf.loss(zf_model, batch),
        torch.view_as_real(H - bf.own_channels(problem)[:, 0].to(H.dtype)).square().mean(),
    )


@pytest.mark.parametrize("key,value", [("csi_layers", 0), ("alpha_r", -1.0), ("power_width", -1)])
def test_bad_config_names_the_key(key, value):
    from mimo_l2o.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        ModelDrivenConfig(name="model_driven", **{key: value})
    assert err.value.key == key


def test_nmse_of_the_learned_channel_is_eq_39():
    _, problem, x = data(batch=32)
    one = learner()
    model = one.build_model(x, torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        got = one.test_metrics(model, x, problem)
        H = model.channel(x).to(torch.complex128)
    H_true = problem.channel[:, 0].transpose(-1, -2)  # columns h_D,k
    per_sample = [
        float((H[b] - H_true[b]).abs().square().sum() / H_true[b].abs().square().sum()) for b in range(32)
    ]
    assert abs(got["nmse_channel"] - sum(per_sample) / 32) < 1e-6 * got["nmse_channel"]
    assert abs(got["nmse_channel_db"] - 10 * math.log10(got["nmse_channel"])) < 1e-9


def test_without_rate_into_csi_the_csi_net_learns_from_the_channel_loss_alone():
    _, problem, x = data(batch=16)
    labels = wmmse_bf(problem, start(problem, "mrt")).to(torch.complex64)
    one = learner(alpha_h=1.0, alpha_p=1.0, alpha_r=1.0)
    assert one.config.rate_into_csi is None  # the default: not in one cell
    model = one.build_model(x, torch.Generator().manual_seed(0)).train()
    batch = {"inputs": x, "labels": labels, **one.problem_tensors(problem.to(dtype=torch.float32))}

    def csi_grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.csi.parameters()]

    full = csi_grads(one.loss(model, batch))
    H, _, _ = model.parts(x)
    alone = csi_grads(torch.view_as_real(H - bf.own_channels(problem)[:, 0].to(H.dtype)).square().mean())
    for a, b in zip(full, alone, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_beamspace_features_are_each_path_s_abs_u_times_u_on_its_beam():
    """The 4x oversampled grid is a tight frame (``Fᴴ F = 4 I``), and a path on a grid beam ``j`` with
    coefficient ``u`` gives ``|u| u`` at beam ``j`` (times ``√N``, for a column of unit norm)."""
    n = 8
    grid = beamspace_grid(n)
    torch.testing.assert_close(grid.mH @ grid, 4 * torch.eye(n, dtype=grid.dtype), rtol=0, atol=1e-12)
    j, u = 5, 0.6 * torch.exp(torch.tensor(0.7j, dtype=torch.complex128))
    column = u * grid[j].conj() * math.sqrt(n) / math.sqrt(n)  # u times the beam's unit-norm response
    products = torch.view_as_complex(beamspace_products(column, grid).reshape(-1, 2).contiguous())
    torch.testing.assert_close(products[j], u.abs() * u * math.sqrt(n), rtol=1e-12, atol=1e-12)
    assert products.abs().argmax() == j


def test_the_closed_forms_on_the_learned_channel_are_the_learned_channel_benchmarks():
    """``learned_channel/objective_<name>``: the closed form on the learned channel, evaluated on the true
    one. ZF's is the ``channel_zf`` benchmark's own objective (the same beamformers), MRT's is written
    out, and none is above WMMSE on the true channel by more than its tolerance."""
    _, problem, x = data(batch=32)
    one = learner(variant="channel_zf")
    model = one.build_model(x, torch.Generator().manual_seed(0)).eval()
    true = problem.to(dtype=torch.float64)
    with torch.no_grad():
        got = one.test_metrics(model, x, problem)
        H = model.channel(x).to(torch.complex128)  # [B, N, K]
        deployed = SumRate(None)(true, model(x).to(torch.complex128)).mean()
    assert set(got) == {
        "nmse_channel",
        "nmse_channel_db",
        "learned_channel/objective_mrt_bf",
        "learned_channel/objective_rzf_bf",
        "learned_channel/objective_zf_bf",
    }
    assert got["learned_channel/objective_zf_bf"] == pytest.approx(float(deployed), rel=1e-6)  # float32 W
    W = H * (P / H.abs().square().sum((-2, -1), keepdim=True)).sqrt()  # MRT on the budget
    mrt = SumRate(None)(true, W.unsqueeze(1)).mean()
    assert got["learned_channel/objective_mrt_bf"] == pytest.approx(float(mrt), rel=1e-9)
    wmmse = SumRate(None)(true, wmmse_bf(true, start(true, "mrt"))).mean()
    for name in ("mrt_bf", "rzf_bf", "zf_bf"):
        assert 0 < got[f"learned_channel/objective_{name}"] <= float(wmmse) * (1 + 1e-3)


def test_path_features_are_eq_40_path_by_path_for_any_number_of_waves_up_to_the_order():
    from mimo_l2o_plugins.zhang2022.csi_features import PATH_FEATURE_BOUND, path_features

    g = torch.Generator().manual_seed(5)
    n = 16
    m = torch.arange(n, dtype=torch.float64)
    for waves in (1, 3, 5):
        angles = 2 * math.pi * torch.rand(40, waves, generator=g, dtype=torch.float64)
        angles[:, -1] = angles[:, 0] + 0.02  # two waves closer than the array resolves (2π/16)
        u = torch.complex(*torch.randn(2, 40, waves, generator=g, dtype=torch.float64))
        z = torch.polar(torch.ones_like(angles), angles)
        x = (u.unsqueeze(-1) * z.unsqueeze(-1) ** m).sum(-2)
        expected = math.sqrt(n) * ((u.abs() * u).unsqueeze(-1) * z.unsqueeze(-1) ** m).sum(-2)
        energy = x.abs().square().sum(-1)
        inside = expected.abs().square().sum(-1).sqrt() < 0.999 * PATH_FEATURE_BOUND * energy
        assert int(inside.sum()) >= 30  # close waves of opposite amplitudes can exceed the bound
        for order in (waves, 6):  # the order of the fit at or above the waves it holds
            got = path_features(x, order)
            err = (got - expected).abs().square().sum(-1) / expected.abs().square().sum(-1)
            assert float(err[inside].max()) < 1e-6, (waves, order, float(err.max()))
            # above the bound, scaled onto it, in the same direction
            size = got.abs().square().sum(-1).sqrt()
            assert bool((size <= PATH_FEATURE_BOUND * energy * (1 + 1e-9)).all())
            cosine = (got.conj() * expected).sum(-1).abs() / (size * expected.abs().square().sum(-1).sqrt())
            assert bool((cosine[~inside] > 1 - 1e-6).all())
    assert torch.equal(
        path_features(torch.zeros(2, n, dtype=torch.complex128), 4), torch.zeros(2, n, dtype=torch.complex128)
    )
