"""The one runner: sample → label → train → evaluate → log.

It never branches on the paper or the problem family: the parts come from their registries and are
checked to fit together (:mod:`mimo_l2o.parts`), the data stages go through the cache
(:mod:`mimo_l2o.data`), training is the shared loop (:mod:`mimo_l2o.training`), the test metrics are
the metric contract (:mod:`mimo_l2o.evaluation`), and MLflow keeps the record
(:mod:`mimo_l2o.tracking`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

import mimo_l2o
from mimo_l2o import cluster, features, jobs, provenance
from mimo_l2o.cache import Cache
from mimo_l2o.config import NOT_TRAINING, RunConfig, flatten, resolve_device, validate
from mimo_l2o.data import Data, generator
from mimo_l2o.errors import ConfigError, Incompatible, short
from mimo_l2o.evaluation import (
    Evaluation,
    ObjectiveRatio,
    policy_decisions,
    time_per_sample_ms,
    uplink_nmse_db,
)
from mimo_l2o.figures import cdf_figure, close, display_name, shift_figure
from mimo_l2o.learner import Learner, Policy
from mimo_l2o.parts import Parts, build_parts
from mimo_l2o.preflight import preflight
from mimo_l2o.shifts import Shift, evaluate_shifts, key_text, plan, shift_curves, shift_points, trained_value
from mimo_l2o.solvers.beamformers import uplink_zf
from mimo_l2o.tracking import (
    MAX_RUN_NAME,
    Tracker,
    parent_run_id,
    record_skip,
    swept_overrides,
)
from mimo_l2o.training import LAST_CHECKPOINT, fit, load_checkpoint

log = logging.getLogger(__name__)

# the test set's per-sample objective of every scheme (learner, solver, baselines), for mimo-l2o report
PER_SAMPLE_ARTIFACT = "per_sample_objective.csv"
SHIFTS_ARTIFACT = "shifts.json"  # eval.shifts: every point, evaluated or not applicable with the reason


def run_experiment(cfg: DictConfig) -> float:
    """Run one job from its composed config; returns ``test/objective_ratio``."""
    jobs.unwind_on_sigterm()
    run = validate(cfg)
    try:
        parts = build_parts(run)
        shifts = plan(run, build_parts)  # every shifted setting checked before any work
        preflight(run, parts, tracking=jobs.job_number() is None)  # a sweep checked its store once
    except Incompatible as err:
        if jobs.job_number() is None:
            raise  # a single run stops with the reason (exit 2)
        _skip(run, err)
        return math.nan
    device = resolve_device(run.device)
    threads = run.num_threads or jobs.parallel_job_threads()
    if threads:
        torch.set_num_threads(threads)
    progress = sys.stderr.isatty() if run.progress is None else bool(run.progress)
    parent = parent_run_id()
    tags = {
        "paper": run.paper or parts.learner_cls.paper,
        "learner": run.learner.name,
        # the learner's option in its config group when it is a variant (position_lstm/paper)
        "learner_preset": learner_preset(run),
        "scenario": run.scenario.name,
        "precoder": run.precoder.name,
        "objective": run.objective.name,
        "solver": run.solver.name,
        "family": parts.family,
        "sweep_id": parent or "",
        "device": str(device),
        "mimo_l2o_version": mimo_l2o.__version__,
        "mimo_l2o.commit": provenance.commit(),
        "mimo_l2o.machine": provenance.machine(str(device)),
    }
    if run.data.shard is not None:
        return _label_shard(run, parts, device, progress, tags, parent)
    checkpoint = jobs.output_dir() / "checkpoints" / "best.pt"
    # a requeued Slurm job (time limit, preemption) continues its own run from its last epoch
    reopen = cluster.requeued_run(jobs.output_dir())
    last = checkpoint.with_name(LAST_CHECKPOINT)
    resume = _resume_state(run, str(last) if reopen and last.exists() else run.resume)
    tags["mimo_l2o.checkpoint"] = str(last.resolve())
    if run.resume:
        tags["mimo_l2o.resumed_from"] = run.resume
    slurm_job = cluster.slurm_job()
    if slurm_job:
        tags["mimo_l2o.slurm_job"] = slurm_job
        tags["mimo_l2o.slurm_restarts"] = os.environ.get("SLURM_RESTART_COUNT", "0")
    began = time.perf_counter()
    with Tracker(run.tracking.experiment, run_name(run), tags, parent, reopen) as tracker:
        cluster.remember_run(jobs.output_dir(), tracker.run_id)
        tracker.files = {**jobs.run_files(), "checkpoints/best.pt": checkpoint}
        tracker.log_params(flatten(run))
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        (checkpoint.parent / "config.json").write_text(json.dumps(_training_config(run)))
        with _console(progress):
            metrics, stages = _run(
                run,
                parts,
                Cache(run.cache_dir, run.cache_check),
                device,
                progress,
                tracker,
                checkpoint,
                resume,
                shifts,
            )
    print(summary_block(run, parts, tracker, metrics, stages, time.perf_counter() - began), flush=True)
    return metrics["test/objective_ratio"]


def _label_shard(run: RunConfig, parts: Parts, device, progress: bool, tags: dict, parent) -> float:
    """A sharded labelling's job (``data.shard``): its share of the chunks of every dataset the run
    needs, recorded as a run of its own (``label 2/4 <name>``, tag ``mimo_l2o.stage=label``); no
    training. Returns NaN (no ratio)."""
    d = run.data
    name = short(f"label {d.shard + 1}/{d.shards} {run_name(run)}", MAX_RUN_NAME, word=MAX_RUN_NAME)
    began = time.perf_counter()
    reopen = cluster.requeued_run(jobs.output_dir())  # a requeued shard continues its own run
    with Tracker(
        run.tracking.experiment, name, {**tags, "mimo_l2o.stage": "label"}, parent, reopen
    ) as tracker:
        cluster.remember_run(jobs.output_dir(), tracker.run_id)
        tracker.files = jobs.run_files()
        tracker.log_params(flatten(run))
        with _console(progress):
            data = Data(run, parts, Cache(run.cache_dir, run.cache_check), device, progress)
            data.label_all()
        seconds = time.perf_counter() - began
        tracker.set_tags({f"cache.{k}": v for k, v in data.keys.items()})
        tracker.log_metrics({"label/seconds": seconds, "label/entries_incomplete": len(data.incomplete)})
    waiting = f"{len(data.incomplete)} datasets wait for other shards" if data.incomplete else "all complete"
    print(f"label shard {d.shard + 1} of {d.shards} done in {seconds:.1f} s: {waiting}", flush=True)
    return math.nan


@contextlib.contextmanager
def _console(progress: bool):
    """Log lines through tqdm while bars are shown, so that they do not break them."""
    if not progress:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield


def summary_block(run: RunConfig, parts: Parts, tracker: Tracker, metrics, stages, total_s: float) -> str:
    """The lines a run ends with: the ratio, the objectives with their unit, the baselines, the
    constraint violation, the time per sample and per stage, and where the run is in MLflow."""
    label = parts.objective.label
    name, unit = (
        (label.split(" [")[0], " " + label.split(" [")[1].rstrip("]")) if " [" in label else (label, "")
    )
    m = metrics
    baselines = ", ".join(
        f"{b} {m[f'test/objective_{b}'] / m['test/objective_solver']:.3f}"
        for b in parts.baselines
        if f"test/objective_{b}" in m
    )
    rows = [
        (
            "objective ratio",
            f"{m['test/objective_ratio']:.4f} ({name}: {run.learner.name} {m['test/objective_learner']:.4g}"
            f"{unit}, {run.solver.name} {m['test/objective_solver']:.4g}{unit})",
        ),
        ("baselines (ratio)", baselines or "none"),
        ("constraint violation", f"{m['test/constraint_violation'] + 0.0:.3g}"),
        (
            "time per sample",
            f"{run.learner.name} {m['test/time_learner_ms']:.3g} ms, {run.solver.name} "
            f"{m['test/time_solver_ms']:.3g} ms (speed-up {m['test/speedup']:.3g}x)",
        ),
        (
            "time per stage",
            ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()) + f"; total {total_s:.1f} s",
        ),
        *([("shifts (ratio)", shifts_line(m))] if any(k.startswith("test/shift/") for k in m) else []),
        ("MLflow run", tracker.address()),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join([f"{tracker.run_name}: finished", *(f"  {k:<{width}}  {v}" for k, v in rows)])


def shifts_line(metrics: dict[str, float]) -> str:
    """``scenario.num_users: 4 0.954, 8 0.926; ...`` from the shifts' metrics, then how many points were
    not applicable or failed (their reasons in ``shifts.json``)."""
    points = shift_points(metrics)
    line = "; ".join(f"{k}: {', '.join(f'{v} {r:.3f}' for v, r in p)}" for k, p in points.items())
    skipped = int(metrics.get("test/shift/not_applicable", 0))
    failed = int(metrics.get("test/shift/failed", 0))
    notes = [f"{skipped} not applicable"] * bool(skipped) + [f"{failed} failed"] * bool(failed)
    return line + (f"; {', '.join(notes)} ({SHIFTS_ARTIFACT})" if notes else "")


def learner_preset(run: RunConfig) -> str:
    """The learner's option in its config group (``position_lstm/paper``), or its name where the
    option is the learner itself or unknown (outside Hydra, an experiment preset's own learner)."""
    choice = jobs.group_choice("learner")
    return choice if choice and choice.split("/")[0] == run.learner.name else run.learner.name


def run_name(run: RunConfig) -> str:
    """``learner-scenario-K<users>`` (the learner as its option, ``position_lstm/paper``), then the
    values of the keys the run's sweep varies beyond those (``dnn-gaussian_ic-K4 scenario.p_max=2``), so
    that sibling runs have different names."""
    named = {"learner", "scenario", "scenario.num_users"}
    base = f"{learner_preset(run)}-{run.scenario.name}-K{run.scenario.num_users}"
    swept = [o for o in swept_overrides() if o.split("=", 1)[0] not in named]
    return short(" ".join([base, *swept]), MAX_RUN_NAME, word=MAX_RUN_NAME)


def _skip(run: RunConfig, err: Incompatible) -> None:
    """A sweep job whose parts cannot work together: one line naming the pair and the reason, and a
    record of it in the sweep's parent run; no run of its own."""
    pair = f"learner={run.learner.name} scenario={run.scenario.name}"
    print(f"skipped {pair}: {err.message}", file=sys.stderr, flush=True)
    parent = parent_run_id()
    if parent:
        job = {
            "learner": run.learner.name,
            "scenario": run.scenario.name,
            "job": jobs.job_number(),
            "overrides": " ".join(jobs.job_overrides()),
            "key": err.key,
            "reason": err.message,
        }
        record_skip(parent, job)


def _training_config(run: RunConfig) -> dict:
    """The flattened config without the keys that do not change training (:data:`NOT_TRAINING`), as
    JSON reads it back (what ``checkpoints/config.json`` holds)."""
    kept = {k: v for k, v in flatten(run).items() if k.split(".")[0] not in NOT_TRAINING}
    return json.loads(json.dumps(kept, default=str))


def _resume_state(run: RunConfig, resume: str | None) -> dict | None:
    """The checkpoint ``resume`` names (a run id or a path; ``run.resume`` or a requeued job's own),
    checked against this run's config before any work; ``None`` without one."""
    if not resume:
        return None
    path = Path(resume)
    if not path.exists():
        from mimo_l2o.tracking import checkpoint_of

        found = checkpoint_of(resume)
        if found is None:
            raise ConfigError("resume", f"'{resume}' is neither a checkpoint file nor a run with one")
        path = Path(found)
        if not path.exists():
            raise ConfigError("resume", f"run {resume} wrote no checkpoint yet ({path} is missing)")
    try:
        state = load_checkpoint(path)
    except Exception as err:
        raise ConfigError("resume", f"{path} cannot be read as a training checkpoint ({err})") from None
    saved = path.parent / "config.json"
    if saved.exists():
        before, now = json.loads(saved.read_text()), _training_config(run)
        changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        if changed:
            raise ConfigError(
                "resume",
                f"the checkpoint's run had another config: {changed[0]}={before.get(changed[0])} "
                f"there, {now.get(changed[0])} here ({len(changed)} keys differ)",
            )
    return state


def _run(
    run: RunConfig,
    parts: Parts,
    cache: Cache,
    device: torch.device,
    progress: bool,
    tracker: Tracker,
    checkpoint: Path,
    resume: dict | None,
    shifts: list[Shift] = (),
) -> tuple[dict[str, float], dict[str, float]]:
    data = Data(run, parts, cache, device, progress)
    objective = parts.objective
    stages: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[stage] = now - clock
        clock = now

    supervised = parts.learner_cls.requires_labels

    # sample + label: the reference's decisions on the validation and test sets, the labeller's on
    # the training and validation sets for supervised learners
    reference, targets = data.label_all()
    lap("data")
    tracker.set_tags({f"cache.{k}": v for k, v in data.keys.items()})
    cache_dir = str(Path(run.cache_dir).resolve())
    tracker.log_dict({"cache_dir": cache_dir, "keys": data.keys}, "datasets.json")
    tracker.log_datasets(
        [
            {
                "name": f"{name} ({data.sizes[name.rsplit('.', 1)[1]]:,} samples)",
                "digest": key,
                "context": name.rsplit(".", 1)[1],
                "source": cache_dir,
            }
            for name, key in data.keys.items()
        ]
    )

    # train
    learner = parts.learner_cls(run.learner, data.spec())
    train_data = {"inputs": data.inputs("train", learner)}
    val_data = {"inputs": data.inputs("val", learner)}
    for split, batch in (("train", train_data), ("val", val_data)):
        if supervised:
            batch["labels"] = targets[split].to(learner.spec.problem.decision_dtype)
        if learner.uses_problems:  # float32 copies for training on the objective
            batch.update(learner.problem_tensors(data.problem(split).to("cpu", torch.float32)))
    if supervised:
        learner.observe_labels(train_data["labels"])
    model = learner.build_model(train_data["inputs"], generator(run.seed, "init"))
    val_problem = data.problem("val")
    val_ratio = ObjectiveRatio(objective, val_problem, reference["val"].to(device))
    val_inputs = val_data["inputs"].to(device)

    def val_objective_ratio(trained) -> float:
        # the network's own decision (raw_output), made feasible: a learner's test-time extras (the GNN's
        # refinement steps, the position LSTM's pilot averaging) would multiply the cost of every epoch
        with torch.no_grad():
            raw = learner.raw_output(trained, val_inputs)
            return val_ratio(val_problem.project(raw.to(val_problem.decision_dtype)))

    def val_score(final: torch.nn.Module) -> float:
        # the trained model with a candidate final module, for the learner's choice among variants
        with torch.no_grad():
            decision = final.to(device)(model(val_inputs))
            return val_ratio(val_problem.project(decision.to(val_problem.decision_dtype)))

    summary = fit(
        learner,
        model,
        train_data,
        val_data,
        device,
        generator(run.seed, "shuffle"),
        val_objective_ratio=val_objective_ratio,
        on_epoch=lambda epoch, m: tracker.log_metrics(m, step=epoch),
        checkpoint=checkpoint,
        progress=progress,
        log_every=run.log_every,
        resume=resume,
    )
    log.info(
        "trained %d epochs (best: epoch %d) in %.1f s",
        summary["epochs"],
        summary["best_epoch"] + 1,
        summary["train_time_s"],
    )
    model.eval()
    finalize = learner.finalize(val_score).to(device)
    lap("training")

    # evaluate
    evaluation, metrics = evaluate(run, parts, data, learner, model, finalize, reference["test"], device)
    metrics.update({f"train/{k}": float(v) for k, v in {**summary, **learner.summary()}.items()})
    lap("evaluation")
    tracker.log_metrics(metrics)
    _log_figures(run, tracker, evaluation, learner.name)
    tracker.log_text(evaluation.per_sample_csv(), PER_SAMPLE_ARTIFACT)
    if shifts:
        shifted, records = evaluate_shifts(
            shifts,
            learner,
            model,
            finalize,
            tuple(val_inputs.shape[1:]),  # the trained setting's input shape, already in memory
            lambda r, p: Data(r, p, cache, device, progress),
            device,
        )
        metrics.update(shifted)
        tracker.log_metrics(shifted)
        tracker.log_dict({"shifts": records}, SHIFTS_ARTIFACT)
        _log_shift_figures(run, tracker, records, learner.name)
        lap("shifts")

    # log the deployable policy
    if run.tracking.log_model:
        example = data.inputs("test", learner)[:5].numpy()
        policy = Policy(copy.deepcopy(model), copy.deepcopy(finalize)).cpu().eval()
        code = None if learner.exportable else _code_paths(parts.learner_cls)
        tracker.log_model(
            policy,
            example,
            _model_metadata(run, parts, learner, example),
            code,
            run.tracking.registered_model,
        )
    lap("logging")
    return metrics, stages


def _model_metadata(run: RunConfig, parts: Parts, learner: Learner, example) -> dict:
    """What a logged policy's user needs to feed it (README "Use a trained policy")."""
    problem = learner.spec.problem
    return {
        "input_features": list(learner.inputs),
        "input_shape": ["batch", *example.shape[1:]],
        "input_preparation": f"{type(learner).__module__}.{type(learner).__name__}.prepare",
        "output_shape": ["batch", *problem.decision_shape],
        "output": "the final decision, feasible after problem.project (float32)",
        "scenario": run.scenario.name,
        "precoder": run.precoder.name,
        "objective": run.objective.name,
        "build_inputs": "mimo_l2o.inputs(<run id>, num_samples, seed)",
    }


def _code_paths(learner_cls) -> list[str]:
    """The packages a pickled policy's classes come from: mimo_l2o and the learner's plugin."""
    import importlib

    plugin = importlib.import_module(learner_cls.__module__.split(".")[0])
    return sorted({str(Path(mimo_l2o.__file__).parent), str(Path(plugin.__file__).parent)})


def evaluate(
    run: RunConfig,
    parts: Parts,
    data: Data,
    learner: Learner,
    model: torch.nn.Module,
    finalize: torch.nn.Module,
    solver_decisions: torch.Tensor,
    device: torch.device,
) -> tuple[Evaluation, dict[str, float]]:
    """The metric contract on the test set: the learner's deployed policy, the reference solver's
    decisions and the baselines' on the same problems, and the timings."""
    objective, solver = parts.objective, parts.solver
    problem = data.problem("test")
    inputs = data.inputs("test", learner).to(device)
    model.eval()
    policy = Policy(model, finalize)
    decision, violation = policy_decisions(policy, inputs, problem)
    decisions = {learner.name: decision, solver.name: solver_decisions.to(device)}
    network = data.network("test")
    with torch.no_grad():
        for name, baseline in parts.baselines.items():
            decisions[name] = baseline.solve(
                problem, objective, generator(run.scenario.seed, "baseline", name)
            )
        decisions.update(uplink_zf(network, problem))  # ZF from the uplink itself, where there is one
    evaluation = Evaluation(problem, objective, decisions, learner.name, solver.name)
    metrics = {**evaluation.metrics(), "test/constraint_violation": violation}
    nmse = uplink_nmse_db(network)
    if nmse is not None:
        metrics["test/nmse_uplink_ls"] = nmse
    if learner.reports_raw:
        with torch.no_grad():
            raw = learner.raw_output(model, inputs).to(problem.decision_dtype)
        metrics["test/objective_ratio_raw"] = evaluation.ratio(problem.project(raw))
    with torch.no_grad():
        metrics.update({f"test/{k}": v for k, v in learner.test_metrics(model, inputs, problem).items()})

    metrics.update(_timings(run, parts, data, learner, policy, problem, device))
    metrics["test/speedup"] = metrics["test/time_solver_ms"] / metrics["test/time_learner_ms"]
    return evaluation, metrics


def _timings(
    run: RunConfig, parts: Parts, data: Data, learner: Learner, policy: Policy, problem, device
) -> dict[str, float]:
    """Time per sample from the sampled networks to each decision, on the same test samples and device:

    * ``test/time_problem_ms``: the precoder's problem (the gains a solver needs: Monte-Carlo averages
      in cellular massive MIMO);
    * ``test/time_solver_ms``: the problem, then the reference solver;
    * ``test/time_learner_ms``: the learner's features (the problem too, when one of them reads it),
      then its deployed policy; a learner is not flattered by leaving out the inputs it needs.
    """
    n = min(run.eval.timing_samples, data.sizes["test"])
    net = data.network("test").select(slice(0, n)).to(device)
    timed_problem = problem[:n]
    repeats, budget = run.eval.timing_repeats, run.eval.timing_budget_s

    spread: dict[str, float] = {}

    def timed(name: str, fn) -> float:
        times: list[float] = []
        median = time_per_sample_ms(fn, n, device, repeats, budget, times)
        q = torch.tensor(times, dtype=torch.float64).quantile(torch.tensor([0.25, 0.75], dtype=torch.float64))
        spread[f"test/time_{name}_iqr_ms"] = float(q[1] - q[0]) * 1e3 / n
        return median

    with torch.no_grad():
        problem_ms = timed("problem", lambda: parts.precoder(net.to(dtype=torch.float64)))
        solver_ms = timed("solver", lambda: parts.solver.solve(timed_problem, parts.objective))
        # the features from the test problems, then the precoder's time added if they read the problem
        learner_ms = timed(
            "learner", lambda: policy(data.learner_inputs(learner, net, lambda: timed_problem))
        )
    if features.reads_problem(learner.inputs):
        learner_ms += problem_ms
    return {
        "test/time_problem_ms": problem_ms,
        "test/time_solver_ms": problem_ms + solver_ms,
        "test/time_learner_ms": learner_ms,
        **spread,  # of the solver's and the policy's own repetitions (the problem's time is its own)
    }


def figure_title(run: RunConfig, extra: str) -> str:
    """What a paper's caption names: the scenario and precoder, M, K and p_max, then ``extra``."""
    sc = run.scenario
    parts = [sc.name] + ([run.precoder.name] if run.precoder.name != "none" else [])
    antennas = getattr(sc, "num_antennas", None)
    size = (f"M={antennas}, " if antennas else "") + f"K={sc.num_users}"
    unit = " W" if sc.power_unit == "W" else ""
    power = f"p_max={sc.p_max:g}{unit}"
    if sc.power_unit == "W":
        power += f" ({10 * math.log10(sc.p_max * 1e3):.0f} dBm)"
    return f"{', '.join(parts)}: {size}, {power}; {extra}"


def _log_shift_figures(run: RunConfig, tracker: Tracker, records: list[dict], learner: str) -> None:
    """``shift_<key>.png``: the objective ratio against each shifted key, the trained value marked."""
    for key, points in shift_curves(records).items():
        trained = trained_value(run.scenario, key)
        fig = shift_figure({learner: points}, key, figure_title(run, "trained here; no retraining"), trained)
        tracker.log_figure(fig, f"shift_{key_text(key)}.png")
        close(fig)


def _log_figures(run: RunConfig, tracker: Tracker, evaluation: Evaluation, learner: str) -> None:
    """The CDF of the per-sample objective and, with per-user rates, of the per-user SE and of the
    learner's squared SE error per UE (Sanguinetti et al. 2018, Fig. 1b)."""
    fig = cdf_figure(
        evaluation.per_sample,
        evaluation.objective.label,
        figure_title(run, f"{run.data.num_test} test samples"),
    )
    tracker.log_figure(fig, "cdf_objective.png")
    close(fig)
    if evaluation.per_user:
        users = evaluation.per_user[learner].numel()
        fig = cdf_figure(
            {name: se.flatten() for name, se in evaluation.per_user.items()},
            "SE per user [bit/s/Hz]",
            figure_title(run, f"{run.objective.name}, {users} UEs"),
        )
        tracker.log_figure(fig, "cdf_se_per_user.png")
        close(fig)
        error = (evaluation.per_user[learner] - evaluation.per_user[evaluation.solver]).square().flatten()
        fig = cdf_figure(
            {learner: error.clamp_min(1e-12)},
            f"squared SE error per UE vs {display_name(evaluation.solver)} [(bit/s/Hz)²]",
            figure_title(run, f"{users} UEs"),
            logx=True,
        )
        tracker.log_figure(fig, "cdf_se_error.png")
        close(fig)
