"""The GNN learner over any power-control problem's budget groups: the group layout of every problem
shape, the entry features against a loop, the validation loss and the choice between the lower bound
and the midpoint, the support penalty's schedule (eq. 8) against a hand simulation, user and node
equivariance of the policy in the problem's variable order, the problem it rebuilds from its input, and
feasible decisions that training improves, in cell-free networks and the interference channel."""

from __future__ import annotations

import pytest
import torch
from mimo_l2o_plugins.raghunath2023.config import GNNConfig
from mimo_l2o_plugins.raghunath2023.learner import GNNLearner
from mimo_l2o_plugins.raghunath2023.nodes import GroupLayout
from mimo_l2o_plugins.raghunath2023.policy import MISSING, GNNPolicy

from mimo_l2o.errors import ConfigError
from mimo_l2o.features import NO_GAIN_DB, total_gain_db
from mimo_l2o.learner import Learner, LearnerSpec
from mimo_l2o.objectives.energy_efficiency import EnergyEfficiency, EnergyEfficiencyConfig
from mimo_l2o.objectives.sum_rate import SumRate
from mimo_l2o.precoders.mrt import MRT
from mimo_l2o.problems.power_control import PowerControlProblem
from mimo_l2o.scenarios.cellfree import CellFree

L, K = 3, 4
EE = EnergyEfficiency(EnergyEfficiencyConfig())


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small(features: str = "structured", **config) -> GNNConfig:
    return GNNConfig(
        name="gnn", features=features, hidden=8, widths=[4], kappa_window=3, kappa_step=0.5, **config
    )


def learner_for(problem: PowerControlProblem, config: GNNConfig, objective=EE) -> GNNLearner:
    x = problem.gains_db()
    spec = LearnerSpec({"problem_gains": tuple(x.shape[1:])}, problem=problem[:1], objective=objective)
    return GNNLearner(config, spec)


def cellfree_net(n: int = 32, seed: int = 0, **kw):
    scenario = CellFree(CellFree.Config(num_aps=L, num_users=K, num_antennas=2, **kw))
    return scenario.sample(n, gen(seed))


def nodes(problem: PowerControlProblem) -> torch.Tensor:
    """The learner's input: the problem's gains arranged by node."""
    return GroupLayout.of(problem).nodes(problem.gains_db()).float()


@pytest.fixture(scope="module", params=["gains", "structured"])
def setup(request):
    problem = MRT(None)(cellfree_net()).to(dtype=torch.float32)
    learner = learner_for(problem, small(request.param))
    x = learner.prepare({"problem_gains": problem.gains_db()})
    torch.testing.assert_close(x, problem.gains_db().float())  # the problem's gains: any size
    model = learner.build_model(x, gen(1))
    torch.testing.assert_close(model.layout_nodes(x), nodes(problem))  # arranged by node in the policy
    return learner, model, x, problem


def batch(learner: Learner, x, problem):
    return {"inputs": x, **learner.problem_tensors(problem)}


def cellular_like(n: int = 8, cells: int = 2, per_cell: int = 2, seed: int = 3) -> PowerControlProblem:
    """One variable per user, a budget per cell, signal and interference both on the diagonal (the
    estimation error's self-interference of cellular massive MIMO)."""
    g = gen(seed)
    u = cells * per_cell
    signal = torch.rand(n, u, generator=g, dtype=torch.float64) + 0.5
    interference = 0.1 * torch.rand(n, u, u, generator=g, dtype=torch.float64)
    return PowerControlProblem(
        signal_gain=torch.diag_embed(signal),
        interference_gain=interference,
        noise=torch.full((n, u), 0.2, dtype=torch.float64),
        group=torch.arange(cells).repeat_interleave(per_cell),
        budget=torch.full((n, cells), 2.0, dtype=torch.float64),
        weights=torch.ones(n, u, dtype=torch.float64),
        prelog=0.9,
    )


# ---------------------------------------------------------------------------------------------
# the graph of budget groups
# ---------------------------------------------------------------------------------------------
def test_group_layout_of_every_problem_shape():
    ic = PowerControlProblem.interference_channel(torch.rand(2, 5, 5, generator=gen(0)), 1.0, 1.0)
    layout = GroupLayout.of(ic)  # a node per link, its one variable
    assert torch.equal(layout.slots, torch.arange(5)[:, None]) and torch.equal(layout.owner, layout.slots)
    assert torch.equal(layout.user_slot, torch.where(torch.eye(5, dtype=torch.bool), 0, 1))
    cellular = GroupLayout.of(cellular_like(cells=2, per_cell=3))  # a node per cell, its users' variables
    assert torch.equal(cellular.slots, torch.tensor([[0, 1, 2], [3, 4, 5]]))
    assert torch.equal(cellular.user_slot, torch.tensor([[0, 1, 2, 3, 3, 3], [3, 3, 3, 0, 1, 2]]))
    cf = GroupLayout.of(MRT(None)(cellfree_net(2)))  # a node per AP, a slot per UE: v = k·L + l
    assert torch.equal(cf.slots, torch.arange(K)[None, :] * L + torch.arange(L)[:, None])
    assert torch.equal(cf.owner, torch.arange(K).expand(L, K)) and torch.equal(cf.user_slot, cf.owner)
    uneven = cellular_like(cells=2, per_cell=2)
    uneven.group = torch.tensor([0, 0, 0, 1])
    with pytest.raises(ConfigError, match="equal size"):
        GroupLayout.of(uneven)


@pytest.mark.parametrize("make", [lambda: cellular_like(), lambda: MRT(None)(cellfree_net(4))])
def test_structured_features_of_each_entry(make):
    """Entry ``(u, s)`` of node ``g``: its gain, the gain of ``u``'s own slot at the owner of ``s``, ``u``'s
    own gain and the owner's own gain at this node, and the own-entry flag, against a loop; a gain the
    node does not have enters as MISSING."""
    problem = make()
    x = problem.gains_db().float()
    layout = GroupLayout.of(problem)
    model = GNNPolicy(small(), layout, problem[:1], mean=0.0, std=1.0)
    node = model.normalized(layout.nodes(x)[..., 0])
    f = model.node_features(node)
    groups, size = layout.slots.shape
    assert f.shape == (len(problem), groups, problem.num_users, size, 5)
    total = total_gain_db(x)

    def gain(b, g, u, slot):
        if slot == size:
            return MISSING
        return float(total[b, u, layout.slots[g, slot]])

    for b in range(2):
        for g in range(groups):
            for u in range(problem.num_users):
                for s in range(size):
                    o = int(layout.owner[g, s])
                    own_u = int(layout.user_slot[g, u])
                    expected = [
                        gain(b, g, u, s),
                        gain(b, g, o, own_u),
                        gain(b, g, u, own_u),
                        gain(b, g, o, s),
                    ]
                    expected.append(float(u == o))
                    torch.testing.assert_close(f[b, g, u, s], torch.tensor(expected), rtol=1e-6, atol=1e-5)
    plain = GNNPolicy(small("gains"), layout, problem[:1], mean=0.0, std=1.0).node_features(node)
    assert torch.equal(plain, node.unsqueeze(-1))


@pytest.mark.parametrize("make", [lambda: cellular_like(), lambda: MRT(None)(cellfree_net(16, 3))])
def test_the_policys_problem_is_the_precoders(make):
    """The policy rebuilds the problem from its input (gains times share over the noise, in dB): the same
    SINRs and objective as the precoder's problem in W, signal and interference apart (on the diagonal
    of cellular problems both are there)."""
    problem = make()
    model = GNNPolicy(small(refine_steps=5), GroupLayout.of(problem), problem[:1], 0.0, 1.0, objective=EE)
    rebuilt = model.problem(problem.gains_db().float()).to(dtype=torch.float64)
    p = problem.full_power() * torch.rand(len(problem), problem.num_vars, generator=gen(4))
    torch.testing.assert_close(rebuilt.sinr(p), problem.sinr(p), rtol=1e-5, atol=0)
    torch.testing.assert_close(EE(rebuilt, p), EE(problem, p), rtol=1e-5, atol=0)
    torch.testing.assert_close(rebuilt.rates(p), problem.rates(p), rtol=1e-5, atol=0)
    assert torch.equal(rebuilt.budget, problem.budget.float())


# ---------------------------------------------------------------------------------------------
# the policy
# ---------------------------------------------------------------------------------------------
def test_validation_loss_takes_the_better_of_lower_bound_and_midpoint(setup):
    learner, model, x, problem = setup
    model.eval()
    with torch.no_grad():
        a, width = model.bounds(x)
        lower = EE(problem, problem.project(a)).mean()
        middle = EE(problem, problem.project(a + width / 2)).mean()
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
    """Relabelling the UEs (or the APs) of the network relabels the powers the same way."""
    _, model, _, _ = setup
    net = cellfree_net(8, seed=6)

    def bounds(channels, serves):
        problem = MRT(None)(type(net)({**net.tensors, "channels": channels, "serves": serves}, net.params))
        a, width = model.bounds(problem.gains_db().float())
        return a.view(-1, K, L), width.view(-1, K, L)  # v = k·L + l

    a, width = bounds(net["channels"], net["serves"])
    ue = torch.tensor([2, 0, 3, 1])
    pa, pw = bounds(net["channels"][:, :, ue], net["serves"][:, :, ue])
    torch.testing.assert_close(pa, a[:, ue], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pw, width[:, ue], rtol=1e-5, atol=1e-6)
    ap = torch.tensor([1, 2, 0])
    pa, pw = bounds(net["channels"][:, ap], net["serves"][:, ap])
    torch.testing.assert_close(pa, a[:, :, ap], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pw, width[:, :, ap], rtol=1e-5, atol=1e-6)


def test_unserved_pairs_get_no_power_and_shared_users_link_the_aps_that_share_one():
    net = cellfree_net(32, seed=5, association_db=-90.0)
    serves = net["serves"]  # [n, L, K]
    assert 0.3 < float(serves.double().mean()) < 0.9  # the threshold leaves some links out
    problem = MRT(None)(net)
    x = problem.gains_db().float()
    layout = GroupLayout.of(problem)
    node = nodes(problem)[..., 0]
    model = GNNPolicy(small(graph="shared_users"), layout, problem[:1], float(node.mean()), 10.0)
    served = model.served(node)
    assert torch.equal(served, serves)
    adjacency = model.adjacency(served)
    assert 0 < int(adjacency.sum()) < 32 * L * (L - 1)  # some pairs of APs share no UE
    for b in range(4):
        for i in range(L):
            for j in range(L):
                shared = bool((serves[b, i] & serves[b, j]).any())
                assert bool(adjacency[b, i, j]) == (shared and i != j)
    a, width = model.bounds(x)  # [n, K·L], v = k·L + l
    off = ~serves.transpose(1, 2).flatten(1)
    assert bool((a[off] == 0).all()) and bool((width[off] == 0).all())
    assert bool((a[~off] > 0).all())
    # the default graph is complete: no mask
    assert GNNPolicy(small(), layout, problem[:1], 0.0, 1.0).adjacency(served) is None
    # missing gains enter as MISSING, present ones standardized
    normalized = model.normalized(node)
    assert bool((normalized[node <= NO_GAIN_DB] == MISSING).all())


def test_training_steps_raise_the_energy_efficiency(setup):
    learner, model, x, problem = setup
    learner.kappa, learner.steps = 0.0, 0
    model.midpoint.fill_(False)
    with torch.no_grad():
        before = EE(problem, problem.project(model(x))).mean()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        opt.zero_grad()
        learner.loss(model, batch(learner, x, problem)).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = EE(problem, problem.project(model(x))).mean()
    assert float(after) > 1.5 * float(before)


def test_on_the_interference_channel_training_raises_the_sum_rate_and_links_are_exchangeable():
    gains = -torch.log(1 - torch.rand(64, 5, 5, generator=gen(7), dtype=torch.float64))  # |h|² ~ Exp(1)
    problem = PowerControlProblem.interference_channel(gains, 0.1, 1.0).to(dtype=torch.float32)
    learner = learner_for(problem, small(power_scale=1.0), objective=SumRate(None))
    gains_db = problem.gains_db()
    x = learner.prepare({"problem_gains": gains_db})
    model = learner.build_model(x, gen(2))
    perm = torch.tensor([3, 0, 4, 1, 2])  # relabel the links: receivers and transmitters alike
    relabelled = learner.prepare({"problem_gains": gains_db[:, perm][:, :, perm]})
    with torch.no_grad():
        torch.testing.assert_close(model(relabelled), model(x)[:, perm], rtol=1e-5, atol=1e-6)
        before = SumRate(None)(problem, problem.project(model(x))).mean()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(80):
        opt.zero_grad()
        learner.loss(model, batch(learner, x, problem)).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = SumRate(None)(problem, problem.project(model(x))).mean()
    assert float(after) > float(before) + 0.2


def test_refinement_never_lowers_the_energy_efficiency_and_stays_feasible(setup):
    learner, model, x, problem = setup
    config = small(learner.config.features, refine_steps=40)
    refined = GNNPolicy(
        config, learner.layout, problem[:1], float(model.mean), float(model.std), objective=EE
    )
    refined.load_state_dict(model.state_dict())
    with torch.no_grad():
        raw = problem.project(refined(x, refine=False))
        torch.testing.assert_close(raw, problem.project(model(x)))
        better = refined(x)
    gain = EE(problem, better) / EE(problem, raw)
    assert float(gain.min()) >= 1 - 1e-5
    assert float(gain.mean()) > 1.05  # an untrained network's decision is far from a local optimum
    assert float(problem.constraint_violation(better).max()) <= 1e-7
    assert bool((better >= 0).all())


def test_one_trained_policy_serves_networks_of_other_sizes(setup):
    """``for_problem``: the trained networks on a cell-free network of other numbers of APs and UEs give
    what a policy built for that size with the same weights gives, feasible decisions through the
    learner's ``adapt``, and leave the trained policy as it was."""
    learner, model, x, problem = setup
    with torch.no_grad():
        before = model(x)
    weights = {k: v for k, v in model.state_dict().items() if "." in k}  # the networks, not the buffers
    for aps, users in ((2, 3), (5, 6)):
        net = CellFree(CellFree.Config(num_aps=aps, num_users=users, num_antennas=2)).sample(8, gen(9))
        other = MRT(None)(net).to(dtype=torch.float32)
        y = learner.prepare({"problem_gains": other.gains_db()})
        assert y.shape[1:] == (users, aps * users, 2)
        reference = GNNPolicy(
            learner.config, GroupLayout.of(other), other[:1], float(model.mean), float(model.std)
        )
        reference.load_state_dict(weights, strict=False)
        reference.midpoint.copy_(model.midpoint)
        adapted, final = learner.adapt(model, learner.finalize(), other)
        with torch.no_grad():
            torch.testing.assert_close(adapted(y), reference(y))
            decision = final(adapted(y))
        assert decision.shape == (8, aps * users)
        assert float(other.constraint_violation(decision).max()) <= 1e-6
        assert float(EE(other, decision).min()) > 0
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)
    assert learner.shift_refusal((K, L * K, 2), (3, 6, 2)) is None


@pytest.mark.parametrize(
    "make",
    [
        lambda n: PowerControlProblem.interference_channel(  # links
            -torch.log(1 - torch.rand(16, n, n, generator=gen(n), dtype=torch.float64)), 0.1, 1.0
        ),
        lambda n: cellular_like(16, cells=n, per_cell=2),  # cells
        lambda n: cellular_like(16, cells=2, per_cell=n),  # users per cell
    ],
    ids=["interference_channel", "cells", "users_per_cell"],
)
def test_a_policy_trained_at_one_size_reads_the_family_at_others(make):
    """The interference channel's links and the cellular network's cells and users: the policy trained
    on one size equals a policy built for another size with the same weights, feasible there."""
    trained = make(3).to(dtype=torch.float32)
    learner = learner_for(trained, small(power_scale=1.0), objective=SumRate(None))
    model = learner.build_model(learner.prepare({"problem_gains": trained.gains_db()}), gen(4)).eval()
    weights = {k: v for k, v in model.state_dict().items() if "." in k}
    for n in (2, 5):
        other = make(n).to(dtype=torch.float32)
        reference = GNNPolicy(
            learner.config, GroupLayout.of(other), other[:1], float(model.mean), float(model.std)
        )
        reference.load_state_dict(weights, strict=False)
        adapted, final = learner.adapt(model, learner.finalize(), other)
        y = learner.prepare({"problem_gains": other.gains_db()})
        with torch.no_grad():
            torch.testing.assert_close(adapted(y), reference(y))
            decision = final(adapted(y))
        assert float(other.constraint_violation(decision).max()) <= 1e-6


def test_the_refinement_after_a_shift_climbs_the_shifted_problems_objective():
    """``for_problem`` also takes the problem's pre-log (massive MIMO's ``(τ_c − K)/τ_c`` follows K): the
    refined policy rebuilds the shifted problem, not the trained one."""
    trained = cellular_like(cells=2, per_cell=2).to(dtype=torch.float32)
    trained.prelog = 0.9
    other = cellular_like(cells=2, per_cell=3).to(dtype=torch.float32)
    other.prelog = 0.7
    model = GNNPolicy(small(refine_steps=3), GroupLayout.of(trained), trained[:1], 0.0, 1.0, objective=EE)
    rebuilt = model.for_problem(other).problem(other.gains_db().float())
    assert rebuilt.prelog == pytest.approx(0.7) and model.problem(trained.gains_db().float()).prelog == 0.9
    p = other.full_power().float()
    torch.testing.assert_close(EE(rebuilt, p), EE(other, p).float(), rtol=1e-5, atol=0)
