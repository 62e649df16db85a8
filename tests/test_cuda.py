"""The solvers, the training loop and the evaluation on a GPU give what they give on the CPU
(``pytest -m cuda``; skipped without a GPU; ``benchmarks/gpu_check.sh`` runs them where one is lent)."""

from __future__ import annotations

import pytest
import torch

from mimo_l2o.__main__ import composed

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _data(*overrides):
    from mimo_l2o.cache import Cache
    from mimo_l2o.data import Data
    from mimo_l2o.parts import build_parts

    run = composed(
        "data.num_train=64", "data.num_val=32", "data.num_test=32", "learner.train.batch_size=16", *overrides
    )
    parts = build_parts(run)
    return (
        run,
        parts,
        lambda root, device: Data(run, parts, Cache(root), torch.device(device), progress=False),
    )


def test_wmmse_labels_on_the_gpu_equal_the_cpu_labels(tmp_path):
    _, _, data = _data()
    cpu = data(tmp_path / "cpu", "cpu").labels("test")
    gpu = data(tmp_path / "gpu", "cuda").labels("test")
    torch.testing.assert_close(gpu, cpu, rtol=1e-9, atol=1e-12)


def test_training_and_evaluation_run_on_the_gpu(tmp_path):
    from mimo_l2o.data import generator
    from mimo_l2o.evaluation import policy_decisions
    from mimo_l2o.learner import Policy
    from mimo_l2o.training import fit

    run, parts, data = _data("learner.train.max_epochs=2")
    d = data(tmp_path, "cuda")
    learner = parts.learner_cls(run.learner, d.spec())
    train = {"inputs": d.inputs("train", learner), "labels": d.training_labels("train").float()}
    val = {"inputs": d.inputs("val", learner), "labels": d.training_labels("val").float()}
    model = learner.build_model(train["inputs"], generator(0, "init"))
    summary = fit(learner, model, train, val, torch.device("cuda"), generator(0, "shuffle"))
    assert summary["epochs"] == 2
    assert all(p.device.type == "cuda" for p in model.parameters())
    problem = d.problem("test")
    assert problem.device.type == "cuda"
    decision, violation = policy_decisions(
        Policy(model, torch.nn.Identity()), d.inputs("test", learner).cuda(), problem
    )
    assert decision.device.type == "cuda" and violation >= 0
    value = parts.objective(problem, decision)
    cpu = parts.objective(problem.to("cpu"), decision.cpu())
    torch.testing.assert_close(value.cpu(), cpu, rtol=1e-9, atol=1e-12)
