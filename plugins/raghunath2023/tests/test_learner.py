"""The GNN learner: the validation loss and the choice between the lower bound and the midpoint, the
support penalty's schedule (eq. 8) against a hand simulation, UE and AP equivariance of the policy in
the problem's variable order, and feasible decisions."""

from __future__ import annotations

import pytest
import torch
from mimo_l2o_plugins.raghunath2023.learner import GNNConfig, GNNLearner, GNNPolicy, association_graph

from mimo_l2o.learner import Learner, LearnerSpec
from mimo_l2o.objectives.energy_efficiency import EnergyEfficiency, EnergyEfficiencyConfig
from mimo_l2o.precoders.mrt import MRT
from mimo_l2o.scenarios.cellfree import CellFree

L, K = 3, 4


@pytest.fixture(scope="module", params=["gains", "structured"])
def setup(request):
    scenario = CellFree(CellFree.Config(num_aps=L, num_users=K, num_antennas=2))
    net = scenario.sample(32, torch.Generator().manual_seed(0))
    problem = MRT(None)(net).to(dtype=torch.float32)
    x = scenario.features(net, "mrt_gains").float()
    spec = LearnerSpec(
        {"mrt_gains": (L, K, K)},
        problem=problem[:1],
        objective=EnergyEfficiency(EnergyEfficiencyConfig()),
    )
    config = GNNConfig(
        name="gnn", features=request.param, hidden=8, widths=[4], kappa_window=3, kappa_step=0.5
    )
    learner = GNNLearner(config, spec)
    model = learner.build_model(x, torch.Generator().manual_seed(1))
    return learner, model, x, problem


def batch(learner: Learner, x, problem):
    return {"inputs": x, **learner.problem_tensors(problem)}


def test_validation_loss_takes_the_better_of_lower_bound_and_midpoint(setup):
    learner, model, x, problem = setup
    model.eval()
    ee = EnergyEfficiency(EnergyEfficiencyConfig())
    with torch.no_grad():
        a, width = model.bounds(x)
        lower = ee(problem, problem.project(a)).mean()
        middle = ee(problem, problem.project(a + width / 2)).mean()
        loss = learner.loss(model, batch(learner, x, problem))
        assert float(loss) == pytest.approx(-max(float(lower), float(middle)), rel=1e-6)
        assert bool(model.midpoint) == bool(middle > lower)
        torch.testing.assert_close(model(x), a + width / 2 if middle > lower else a)
        final = learner.finalize()(model(x))
    assert bool((final >= 0).all()) and float(problem.constraint_violation(final).max()) <= 0


def test_kappa_follows_eq_8(setup):
    learner, *_ = setup
    learner.kappa, learner.steps = 0.0, 0
    learner.history.clear()
    supports = [5.0, 4.0, 4.5, 4.6, 3.0, 3.0, 6.0, 1.0]
    kappa, expected, seen = 0.0, [], []
    for i, psi in enumerate(supports):
        if i >= 3:  # h = 3 steps without the penalty
            window = sum(seen[-3:]) / 3
            kappa = kappa + 0.5 if window <= psi else max(0.0, kappa - 0.25)
        seen.append(psi)
        expected.append(kappa)
        learner._update_kappa(psi)
        assert learner.kappa == pytest.approx(kappa), i
    assert expected == [0.0, 0.0, 0.0, 0.5, 0.25, 0.0, 0.5, 0.25]


def test_policy_is_equivariant_to_ues_and_aps(setup):
    _, model, x, _ = setup
    a, width = model.bounds(x)  # [B, K·L], v = k·L + l
    a, width = a.view(-1, K, L), width.view(-1, K, L)
    ue = torch.tensor([2, 0, 3, 1])
    pa, pw = model.bounds(x[:, :, ue][:, :, :, ue])
    torch.testing.assert_close(pa.view(-1, K, L), a[:, ue], rtol=0, atol=1e-5)
    torch.testing.assert_close(pw.view(-1, K, L), width[:, ue], rtol=0, atol=1e-5)
    ap = torch.tensor([1, 2, 0])
    pa, pw = model.bounds(x[:, ap])
    torch.testing.assert_close(pa.view(-1, K, L), a[:, :, ap], rtol=0, atol=1e-5)
    torch.testing.assert_close(pw.view(-1, K, L), width[:, :, ap], rtol=0, atol=1e-5)


def test_structured_features_of_each_entry():
    """``features=structured``: entry ``(k, j)`` of AP ``l`` carries ``x[k, j]``, ``x[j, k]``, ``x[k, k]``,
    ``x[j, j]`` and ``k == j``, against a loop over the entries."""
    x = torch.randn(2, L, K, K, generator=torch.Generator().manual_seed(7))
    model = GNNPolicy(GNNConfig(name="gnn", features="structured"), 0.1, 0.0, 1.0)
    f = model.node_features(x)
    assert f.shape == (2, L, K, K, 5)
    for b in range(2):
        for l in range(L):
            for k in range(K):
                for j in range(K):
                    expected = [x[b, l, k, j], x[b, l, j, k], x[b, l, k, k], x[b, l, j, j], float(k == j)]
                    assert f[b, l, k, j].tolist() == torch.tensor(expected).tolist()
    plain = GNNPolicy(GNNConfig(name="gnn", features="gains"), 0.1, 0.0, 1.0).node_features(x)
    assert torch.equal(plain, x.unsqueeze(-1))


def test_training_steps_raise_the_energy_efficiency(setup):
    learner, model, x, problem = setup
    learner.kappa, learner.steps = 0.0, 0
    ee = EnergyEfficiency(EnergyEfficiencyConfig())
    model.midpoint.fill_(False)
    with torch.no_grad():
        before = ee(problem, problem.project(model(x))).mean()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        opt.zero_grad()
        learner.loss(model, batch(learner, x, problem)).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = ee(problem, problem.project(model(x))).mean()
    assert float(after) > 1.5 * float(before)


def test_the_policys_problem_is_the_precoders():
    """The policy rebuilds the problem from its input (gains in dB over the noise): the same SINRs and
    energy efficiency as the precoder's problem in W, with and without user-centric association."""
    ee = EnergyEfficiency(EnergyEfficiencyConfig())
    for association_db in (None, -85.0):
        scenario = CellFree(CellFree.Config(num_aps=L, num_users=K, association_db=association_db))
        net = scenario.sample(16, torch.Generator().manual_seed(3))
        problem = MRT(None)(net)
        x = scenario.features(net, "mrt_gains").float()
        config = GNNConfig(name="gnn", refine_steps=5)
        model = GNNPolicy(config, 0.1, 0.0, 1.0, budget=problem.budget[0], objective=ee)
        rebuilt = model.problem(x).to(dtype=torch.float64)
        p = problem.full_power() * torch.rand(16, L * K, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(rebuilt.sinr(p), problem.sinr(p), rtol=1e-5, atol=0)
        torch.testing.assert_close(ee(rebuilt, p), ee(problem, p), rtol=1e-5, atol=0)
        assert torch.equal(rebuilt.budget, problem.budget)


def test_refinement_never_lowers_the_energy_efficiency_and_stays_feasible(setup):
    learner, model, x, problem = setup
    ee = EnergyEfficiency(EnergyEfficiencyConfig())
    refined = GNNPolicy(
        GNNConfig(name="gnn", features=learner.config.features, hidden=8, widths=[4], refine_steps=40),
        float(model.share) / 0.1,
        float(model.mean),
        float(model.std),
        budget=problem.budget[0],
        objective=ee,
    )
    refined.load_state_dict(model.state_dict())
    with torch.no_grad():
        raw = problem.project(refined(x, refine=False))
        torch.testing.assert_close(raw, problem.project(model(x)))
        better = refined(x)
    gain = ee(problem, better) / ee(problem, raw)
    assert float(gain.min()) >= 1 - 1e-5
    assert float(gain.mean()) > 1.05  # an untrained network's decision is far from a local optimum
    assert float(problem.constraint_violation(better).max()) <= 1e-7
    assert bool((better >= 0).all())


def test_unserved_pairs_get_no_power_and_the_graph_links_aps_that_share_a_ue():
    scenario = CellFree(CellFree.Config(num_aps=4, num_users=5, association_db=-90.0))
    net = scenario.sample(32, torch.Generator().manual_seed(5))
    serves = net["serves"]  # [n, L, K]
    assert 0.3 < float(serves.double().mean()) < 0.9  # the threshold leaves some links out
    x = scenario.features(net, "mrt_gains").float()
    served, adjacency = association_graph(x)
    assert torch.equal(served, serves)
    assert 0 < int(adjacency.sum()) < 32 * 4 * 3  # a sparse graph: some pairs of APs share no UE
    for b in range(4):
        for i in range(4):
            for j in range(4):
                shared = bool((serves[b, i] & serves[b, j]).any())
                assert bool(adjacency[b, i, j]) == (shared and i != j)
    model = GNNPolicy(GNNConfig(name="gnn"), 0.1, float(x.mean()), float(x.std()))
    a, width = model.bounds(x)  # [n, K·L], v = k·L + l
    off = ~serves.transpose(1, 2).flatten(1)
    assert bool((a[off] == 0).all()) and bool((width[off] == 0).all())
    assert bool((a[~off] > 0).all())
    # the complete graph when every AP serves every UE
    full = CellFree(CellFree.Config(num_aps=4, num_users=5)).sample(4, torch.Generator().manual_seed(6))
    served, adjacency = association_graph(scenario.features(full, "mrt_gains"))
    assert bool(served.all()) and torch.equal(adjacency, ~torch.eye(4, dtype=torch.bool).expand(4, 4, 4))
