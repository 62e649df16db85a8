"""Neural calibration of ZF (Ma et al. 2022, Sec. IV-A): an uncalibrated channel gives the ``zf``
baseline exactly, the beamformers are permutation equivariant over the users (eq. 19), training on the
sum rate moves above ZF (Theorem 2), and the learner refuses what it cannot decide."""

from __future__ import annotations

import pytest
import torch
from mimo_l2o_plugins.ma2022.neural_calibration import (
    Calibrator,
    NeuralCalibrationConfig,
    NeuralCalibrationLearner,
)

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
