"""The DNN of Sun et al. (2018), Section IV and Fig. 4: architecture, output activation (16),
truncated-normal initialisation divided by sqrt(fan-in), rounding at P_max / 2 (Section V.C),
MSE loss, input scaling, and training with the shared loop."""

from __future__ import annotations

import math

import pytest
import torch
from mimo_l2o_plugins.sun2018.dnn import (
    ClipPower,
    DNNConfig,
    DNNLearner,
    InputScaling,
    OutputUnit,
    Rounding,
    Scale,
    Standardize,
)
from torch import nn

from mimo_l2o.learner import LearnerSpec, OptimizerName, TrainConfig
from mimo_l2o.problems.power_control import FeasiblePower, PowerControlProblem
from mimo_l2o.registry import LEARNERS
from mimo_l2o.training import fit

K = 4
P_MAX = 2.0
CPU = torch.device("cpu")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def spec(group=None, budget=None) -> LearnerSpec:
    group = torch.arange(K) if group is None else torch.tensor(group)
    budget = P_MAX * torch.ones(K) if budget is None else torch.tensor(budget)
    v = len(group)
    template = PowerControlProblem(
        signal_gain=torch.zeros(1, v, v),
        interference_gain=torch.zeros(1, v, v),
        noise=torch.ones(1, v),
        group=group,
        budget=budget[None].float(),
        weights=torch.ones(1, v),
    )
    return LearnerSpec({"problem_gains": (v, v, 2)}, template)


def learner(group=None, budget=None, **config) -> DNNLearner:
    """The paper's network (outputs in W) unless ``output_unit`` says otherwise."""
    config.setdefault("output_unit", OutputUnit.budget)
    return DNNLearner(DNNConfig(name="dnn", **config), spec(group, budget))


def channel_gains(n: int, seed: int) -> torch.Tensor:
    """|h_kj|² of h_kj ~ CN(0, 1) (Rayleigh), ``[n, K, K]`` float64."""
    h = torch.randn(n, K, K, 2, generator=gen(seed), dtype=torch.float64)
    return h.square().sum(-1) / 2


def problem_gains(n: int, seed: int, noise: float = 1.0) -> torch.Tensor:
    """The ``problem_gains`` feature of an interference channel with these gains."""
    return PowerControlProblem.interference_channel(channel_gains(n, seed), noise, P_MAX).gains_db()


def inputs(n: int, seed: int) -> torch.Tensor:
    return learner().prepare({"problem_gains": problem_gains(n, seed)})


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model if isinstance(m, nn.Linear)]


def test_registered_as_a_supervised_learner_of_the_problem_gains():
    assert LEARNERS.get("dnn") is DNNLearner
    assert DNNLearner.requires_labels
    assert DNNLearner.inputs == ("problem_gains",)
    for noise in (1.0, 0.25):
        x = learner().prepare({"problem_gains": problem_gains(3, 0, noise)})
        assert x.dtype == torch.float32 and x.shape == (3, K * K)
        # row-major √(|h_kj|² · P_max / σ²), k major: the paper's |h_kj| when P_max = σ² = 1
        expected = (channel_gains(3, 0)[1] * P_MAX / noise).sqrt().float()
        torch.testing.assert_close(x[1].view(K, K), expected, rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------------
# (a) architecture and output activation
# ---------------------------------------------------------------------------------------------
def test_architecture_is_three_hidden_layers_of_200_relu():
    model = learner(input_scaling=InputScaling.none).build_model(inputs(50, 1), gen(0))
    kinds = [type(m) for m in model]
    assert kinds == [nn.Linear, nn.ReLU] * 3 + [nn.Linear, ClipPower]
    widths = [(m.in_features, m.out_features) for m in linears(model)]
    assert widths == [(K * K, 200), (200, 200), (200, 200), (200, K)]
    # hidden widths come from the config
    model = learner(input_scaling=InputScaling.none, hidden=[7, 5]).build_model(inputs(50, 1), gen(0))
    assert [(m.in_features, m.out_features) for m in linears(model)] == [(K * K, 7), (7, 5), (5, K)]


def test_output_activation_is_min_max_x_0_p_max():
    model = learner(input_scaling=InputScaling.none).build_model(inputs(50, 1), gen(0))
    x = torch.cat([inputs(20, 2), 1e6 * inputs(20, 3), -1e6 * inputs(20, 4), 1e20 * inputs(5, 5)])
    with torch.no_grad():
        pre = model[:-1](x)  # the last Linear's output
        out = model(x)
    assert torch.equal(out, torch.minimum(torch.maximum(pre, torch.zeros(())), torch.tensor(P_MAX)))
    assert out.isfinite().all()
    assert (out >= 0).all() and (out <= P_MAX).all()
    # the huge inputs do saturate it on both sides
    assert (out == 0).any() and (out == P_MAX).any()
    clip = model[-1]
    z = torch.tensor([[-1e30, -1.0, 0.0, 0.5], [1.999, 2.0, 2.001, 1e30]])
    assert torch.equal(clip(z), torch.tensor([[0.0, 0.0, 0.0, 0.5], [1.999, 2.0, 2.0, 2.0]]))


def test_cap_is_the_budget_of_the_variables_group():
    # two variables sharing a budget of 2 (either may spend all of it), one with its own budget of 3
    # and one of 0.5
    dnn = learner(group=[0, 0, 1, 2], budget=[2.0, 3.0, 0.5], input_scaling=InputScaling.none)
    model = dnn.build_model(inputs(30, 1), gen(0))
    assert torch.equal(model[-1].cap, torch.tensor([2.0, 2.0, 3.0, 0.5]))
    with torch.no_grad():
        out = model(1e6 * inputs(30, 2))
    assert (out <= torch.tensor([2.0, 2.0, 3.0, 0.5])).all() and (out >= 0).all()


# ---------------------------------------------------------------------------------------------
# (b) initialisation
# ---------------------------------------------------------------------------------------------
def truncated_normal_moments(a: float = 2.0) -> tuple[float, float, float]:
    """Variance, fourth moment and P(|z| < 1) of a standard normal truncated to [-a, a]."""
    mass = math.erf(a / math.sqrt(2))
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    var = 1 - 2 * a * phi / mass
    m4 = 3 - 2 * (a**3 + 3 * a) * phi / mass
    return var, m4, math.erf(1 / math.sqrt(2)) / mass


def test_weights_are_truncated_normal_over_sqrt_fan_in():
    var, m4, within_one = truncated_normal_moments()
    std = math.sqrt(var)
    assert abs(std - 0.8796) < 1e-3
    model = learner(input_scaling=InputScaling.none).build_model(inputs(50, 1), gen(0))
    scaled = []
    for layer in linears(model):
        z = (layer.weight.detach().double() * math.sqrt(layer.in_features)).flatten()
        n = z.numel()
        assert z.abs().max() <= 2 + 1e-6, "drawn beyond |z| = 2"
        # per layer: the std of z is the truncated normal's, whatever the layer's fan-in
        se_std = math.sqrt((m4 - var**2) / n) / (2 * std)
        assert abs(z.std().item() - std) < 6 * se_std, (layer, z.std().item())
        scaled.append(z)
    z = torch.cat(scaled)
    n = z.numel()
    assert n == K * K * 200 + 2 * 200 * 200 + 200 * K
    assert abs(z.mean().item()) < 6 * std / math.sqrt(n)
    assert abs(z.std().item() - std) < 6 * math.sqrt((m4 - var**2) / n) / (2 * std)
    # the shape of a truncated normal, not of a uniform or a clipped normal
    frac = (z.abs() < 1).double().mean().item()
    assert abs(frac - within_one) < 6 * math.sqrt(within_one * (1 - within_one) / n)
    assert (z.abs() > 1.95).any()
    assert (z.abs() >= 2 - 1e-6).double().mean().item() < 1e-3  # no mass piled up at the edge


def test_biases_and_reproducibility():
    x = inputs(50, 1)
    dnn = learner(input_scaling=InputScaling.standardize, bias_init=0.3)
    a = dnn.build_model(x, gen(5))
    for layer in linears(a):
        assert torch.equal(layer.bias.detach(), torch.full_like(layer.bias, 0.3))
    b = dnn.build_model(x, gen(5))
    c = dnn.build_model(x, gen(6))
    for (name, va), vb, vc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(va, vb), name
        if name.endswith("weight"):
            assert not torch.equal(va, vc), name
    # and so is the model's output
    assert torch.equal(a(x), b(x))


# ---------------------------------------------------------------------------------------------
# (c) final decision
# ---------------------------------------------------------------------------------------------
def test_finalize_rounds_at_half_p_max():
    dnn = learner(rounding=Rounding.always)
    assert dnn.reports_raw
    half = torch.tensor(P_MAX / 2)
    below = torch.nextafter(half, torch.tensor(0.0))
    above = torch.nextafter(half, torch.tensor(P_MAX))
    p = torch.stack(
        [
            torch.stack([below, above, torch.tensor(0.0), torch.tensor(P_MAX)]),
            torch.stack([above, below, torch.tensor(0.3), torch.tensor(1.7)]),
        ]
    )
    out = dnn.finalize()(p)
    assert torch.equal(out, torch.tensor([[0.0, P_MAX, 0.0, P_MAX], [P_MAX, 0.0, 0.0, P_MAX]]))
    # exactly at the threshold the paper leaves the choice open: either end, nothing between
    tie = dnn.finalize()(torch.full((1, K), P_MAX / 2))
    assert ((tie == 0) | (tie == P_MAX)).all()
    # the final decision is binary and feasible for any raw output
    raw = torch.rand(100, K, generator=gen(3)) * 3 * P_MAX - P_MAX
    out = dnn.finalize()(raw)
    assert ((out == 0) | (out == P_MAX)).all()
    assert torch.equal(out, torch.where(raw > P_MAX / 2, P_MAX, 0.0))


def test_finalize_rounds_at_half_the_group_budget_then_projects():
    dnn = learner(group=[0, 0, 1, 1], budget=[2.0, 2.0], rounding=Rounding.always)
    out = dnn.finalize()(torch.tensor([[0.9, 1.1, 1.5, 1.2]]))
    # {0, 2} at 1 each, then group 1 (2 + 2 > 2) scaled onto its budget
    assert torch.equal(out, torch.tensor([[0.0, 2.0, 1.0, 1.0]]))


@pytest.mark.parametrize("prefer_rounded", [True, False])
def test_validated_rounding_keeps_whichever_scores_better(prefer_rounded):
    dnn = learner(rounding=Rounding.validated)
    assert dnn.reports_raw
    seen = []

    def score(final):
        seen.append(final)
        rounds = isinstance(final, nn.Sequential)
        return 1.0 if rounds == prefer_rounded else 0.5

    final = dnn.finalize(score)
    assert len(seen) == 2
    assert isinstance(final, nn.Sequential) == prefer_rounded
    assert dnn.summary() == {"rounded": float(prefer_rounded)}
    # without a validation score it rounds, as the paper does
    assert isinstance(learner(rounding=Rounding.validated).finalize(), nn.Sequential)


def test_finalize_without_rounding_is_the_feasible_projection():
    dnn = learner(rounding=Rounding.never)
    assert not dnn.reports_raw
    final = dnn.finalize()
    assert isinstance(final, FeasiblePower)
    feasible = torch.rand(50, K, generator=gen(4)) * P_MAX
    assert torch.equal(final(feasible), feasible)
    raw = torch.randn(50, K, generator=gen(5)) * 3
    problem = PowerControlProblem.interference_channel(torch.ones(50, K, K), 1.0, P_MAX)
    assert torch.equal(final(raw), problem.project(raw))
    # per-user budgets: a clip (up to the rounding of p · (p_max / p))
    torch.testing.assert_close(final(raw), raw.clamp(0, P_MAX), rtol=1e-7, atol=0)
    # the network's own outputs already are feasible, so the unrounded decision is the raw one
    model = dnn.build_model(inputs(50, 1), gen(0))
    with torch.no_grad():
        y = model(inputs(40, 2))
    assert torch.equal(final(y), y)


# ---------------------------------------------------------------------------------------------
# (d) loss
# ---------------------------------------------------------------------------------------------
def test_loss_is_the_mean_squared_error():
    dnn = learner()
    model = dnn.build_model(inputs(50, 1), gen(0))
    x = inputs(64, 7)
    labels = torch.rand(64, K, generator=gen(8)) * P_MAX
    loss = dnn.loss(model, {"inputs": x, "labels": labels})
    with torch.no_grad():
        y = model(x)
    by_hand = sum((float(y[i, k]) - float(labels[i, k])) ** 2 for i in range(64) for k in range(K)) / (64 * K)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(by_hand, rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_output_unit_labels_learns_each_output_in_units_of_its_mean_label():
    # variable 0's labels are a hundredth of the others', variable 3 never used by the labels
    labels = torch.rand(200, K, generator=gen(11)) * torch.tensor([1e-2, 1.0, 0.5, 0.0]) * P_MAX
    dnn = learner(output_unit=OutputUnit.labels)
    dnn.observe_labels(labels.double())
    mean = labels.mean(0)
    unit = torch.tensor([mean[0], mean[1], mean[2], 1e-3 * mean[1]])
    torch.testing.assert_close(dnn.unit, unit)
    model = dnn.build_model(inputs(50, 1), gen(0))
    assert [type(m) for m in model][-3:] == [nn.Linear, Scale, ClipPower]
    x = inputs(64, 7)
    with torch.no_grad():
        raw = model[:-2](x)
        torch.testing.assert_close(model(x), (raw * unit).clamp(0, P_MAX))
        y = model(x)
    # the MSE in those units: each variable's error over its unit
    loss = dnn.loss(model, {"inputs": x, "labels": labels[:64]})
    by_hand = (((y - labels[:64]) / unit) ** 2).mean()
    assert loss.item() == pytest.approx(float(by_hand), rel=1e-5)
    # in W (the paper), no unit and the plain MSE; observing labels changes nothing
    paper = learner()
    paper.observe_labels(labels.double())
    assert torch.equal(paper.unit, torch.ones(K))
    assert not any(isinstance(m, Scale) for m in paper.build_model(inputs(50, 1), gen(0)))
    # labels of all zeros leave the unit at 1
    blank = learner(output_unit=OutputUnit.labels)
    blank.observe_labels(torch.zeros(10, K))
    assert torch.equal(blank.unit, torch.ones(K))


# ---------------------------------------------------------------------------------------------
# (e) input scaling
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scaling", [InputScaling.standardize, InputScaling.log])
def test_input_scaling_standardizes_the_training_inputs(scaling):
    # magnitudes spread over orders of magnitude, like path-loss channels
    x = (torch.randn(500, K * K, generator=gen(9)) * 2).exp() * torch.logspace(-3, 3, K * K)
    model = learner(input_scaling=scaling).build_model(x, gen(0))
    first = model[0]
    assert isinstance(first, Standardize)
    assert [type(m) for m in model][1:] == [nn.Linear, nn.ReLU] * 3 + [nn.Linear, ClipPower]
    with torch.no_grad():
        z = first(x).double()
    assert z.mean(0).abs().max() < 1e-5
    assert (z.std(0) - 1).abs().max() < 1e-5
    f = x.double().log() if scaling == InputScaling.log else x.double()
    expected = (f - f.mean(0)) / f.std(0)
    torch.testing.assert_close(z, expected, rtol=1e-4, atol=1e-4)
    # other inputs are scaled with the training statistics, and then fed to the network
    x2 = (torch.randn(30, K * K, generator=gen(10)) * 2).exp()
    f2 = x2.double().log() if scaling == InputScaling.log else x2.double()
    with torch.no_grad():
        torch.testing.assert_close(first(x2).double(), (f2 - f.mean(0)) / f.std(0), rtol=1e-4, atol=1e-4)
        assert torch.equal(model(x2), model[1:](first(x2)))


def test_no_input_scaling_has_no_scaling_module():
    model = learner(input_scaling=InputScaling.none).build_model(inputs(50, 1), gen(0))
    assert isinstance(model[0], nn.Linear)
    assert not any(isinstance(m, Standardize) for m in model.modules())


# ---------------------------------------------------------------------------------------------
# (f) training with the shared loop
# ---------------------------------------------------------------------------------------------
def test_rmsprop_training_learns_and_restores_the_best_weights():
    def dataset(n: int, seed: int) -> dict[str, torch.Tensor]:
        x = torch.rand(n, K * K, generator=gen(seed))
        # every user transmits at full power exactly when the first input exceeds its median
        return {"inputs": x, "labels": (P_MAX * (x[:, :1] > 0.5).float()).expand(-1, K).contiguous()}

    train, val = dataset(600, 11), dataset(1000, 12)
    train_cfg = TrainConfig(
        optimizer=OptimizerName.rmsprop,
        lr=1e-3,
        rmsprop_alpha=0.9,
        batch_size=30,
        max_epochs=40,
        early_stopping_patience=5,
        lr_patience=100,
    )
    dnn = learner(input_scaling=InputScaling.standardize, train=train_cfg)
    model = dnn.build_model(train["inputs"], gen(0))
    with torch.no_grad():
        initial = dnn.loss(model, val).item()
    history: list[tuple[float, dict]] = []

    def on_epoch(epoch, metrics):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append((metrics["val/loss"], state))

    summary = fit(dnn, model, train, val, CPU, gen(1), on_epoch=on_epoch)
    losses = [loss for loss, _ in history]
    assert summary["epochs"] == len(history)
    assert summary["epochs"] * 600 // 30 >= 200  # a few hundred RMSprop steps
    assert initial > 1.0
    assert summary["best_val_loss"] < 0.15 * initial
    # the best epoch's loss and weights are what fit reports and returns
    best = min(range(len(losses)), key=losses.__getitem__)
    assert summary["best_epoch"] == best
    assert summary["best_val_loss"] == losses[best]
    for name, value in model.state_dict().items():
        assert torch.equal(value, history[best][1][name]), name
    with torch.no_grad():
        recomputed = nn.functional.mse_loss(model(val["inputs"]), val["labels"]).item()
    assert recomputed == pytest.approx(summary["best_val_loss"], rel=1e-6)
    # this run stopped early, so the last weights were not the best: restoring mattered
    assert best < len(losses) - 1 and losses[-1] > losses[best]
    assert not model.training


def test_the_papers_number_only_for_the_papers_setting():
    """Tables I and II beside a run only where the run's setting is the paper's: K (and N), the powers,
    and for the IMAC R = 100 m with users from r = 0, not the scenario's default inner radius."""
    from mimo_l2o_plugins.sun2018.dnn import DNNLearner

    ic = {
        "objective.name": "sum_rate",
        "solver.name": "wmmse",
        "scenario.name": "gaussian_ic",
        "scenario.num_users": "20",
        "scenario.p_max": "1.0",
        "scenario.noise_power": "1.0",
    }
    assert DNNLearner.published(ic) == "92.04 % of WMMSE (Table I)"
    assert DNNLearner.published({**ic, "scenario.num_users": "12"}) is None  # no such row
    assert DNNLearner.published({**ic, "scenario.p_max": "10.0"}) is None  # another SNR
    assert DNNLearner.published({**ic, "solver.name": "equal"}) is None
    imac = {
        **ic,
        "scenario.name": "imac",
        "scenario.num_cells": "7",
        "scenario.num_users": "28",
        "scenario.cell_radius": "100.0",
        "scenario.min_distance": "0.0",
        "scenario.path_loss_exponent": "3.0",
        "scenario.reference_distance": "200.0",
        "scenario.shadowing_db": "8.0",
    }
    assert DNNLearner.published(imac) == "94.53 % of WMMSE (Table II, r = 0)"
    for key, value in (
        ("scenario.min_distance", "None"),  # the scenario's default r (23.1 m), not the paper's r = 0
        ("scenario.min_distance", "50.0"),
        ("scenario.cell_radius", "200.0"),
        ("scenario.shadowing_db", "0.0"),
    ):
        assert DNNLearner.published({**imac, key: value}) is None, key
    assert DNNLearner.published({k: v for k, v in imac.items() if k != "scenario.min_distance"}) is None
