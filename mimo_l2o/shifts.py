"""Generalization shifts (``eval.shifts``): the trained policy on test sets drawn at other values of
scenario keys, without retraining, each against the reference solver on the same shifted set.

``eval.shifts='{scenario.num_users: [2, 4, 6, 8], scenario.p_max_dbm: [-10, 0, 10]}'`` evaluates the
trained policy on the test set of each shifted scenario (one key at a time, the others as trained; the
same test seed, so the value it was trained at reproduces the run's own test metrics), labelled once by
the reference solver and cached like any test set. Each point logs

* ``test/shift/<key>/<value>/objective_ratio`` (MLflow names allow no ``=``),
* ``test/shift/<key>/<value>/objective_learner`` and ``.../objective_solver``,

and a figure ``shift_<key>.png`` of the ratio against the key. Keys joined by ``+`` shift together, each
value a list of one value per key: ``'eval.shifts={scenario.num_aps+scenario.num_users: [[10, 10], [15,
15]]}'`` tests a cell-free model at 10 APs x 10 UEs and 15 x 15 (in metric names
``scenario.num_aps_x_num_users/15x15``, since MLflow allows no ``+``). ``test/shift/not_applicable``
counts the points the learner could not be evaluated at, ``test/shift/failed`` those an error ended (a
defect: its one line in ``shifts.json``, the traceback in the log at debug level; the run and its other
points stand). A point the learner cannot read (its input's size is fixed by the trained setting: Sun's
DNN under another number of users; or the learner refuses the shifted scenario) is *not applicable*, with
its reason, in the artifact ``shifts.json``; it is not a failure. What the learner knows at deployment,
such as the BS's power, it is told through :meth:`~mimo_l2o.learner.Learner.adapt`; the decisions are
then made feasible for the shifted problem.

:func:`plan` checks every key and value before any work (bad input: one line naming
``eval.shifts.<key>``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from omegaconf import OmegaConf

from mimo_l2o.config import RunConfig, check_finite
from mimo_l2o.errors import ConfigError, Incompatible, short
from mimo_l2o.evaluation import ObjectiveRatio, policy_decisions
from mimo_l2o.learner import Learner, Policy

log = logging.getLogger(__name__)

PREFIX = "scenario."
FIXED = ("name", "seed")  # keys a shift may not change: another scenario, another test set
JOIN = "+"  # keys shifted together: scenario.num_aps+scenario.num_users, each value [L, K]
TEXT_JOIN = "_x_"  # the same in metric names and files: scenario.num_aps_x_num_users


@dataclass
class Shift:
    """One shifted setting: ``key`` (``scenario.num_users``) at ``value``, its run config and parts,
    or why the learner cannot be evaluated there (``reason``)."""

    key: str
    value: Any
    run: RunConfig
    parts: Any = None
    reason: str | None = None

    @property
    def prefix(self) -> str:
        return metric_prefix(self.key, self.value)


def value_text(value: Any) -> str:
    """A shifted value as it appears in metric names and figures (``8``, ``-10``, ``0.5``; a joint
    value ``[15, 15]`` as ``15x15``)."""
    if isinstance(value, list | tuple):
        return "x".join(value_text(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def key_text(key: str) -> str:
    """A shifted key as it appears in metric names and files: ``scenario.num_aps+scenario.num_users`` →
    ``scenario.num_aps_x_num_users``; a single key as it is."""
    first, *rest = key.split(JOIN)
    return TEXT_JOIN.join([first, *(r.removeprefix(PREFIX) for r in rest)])


def joint_keys(text: str) -> list[str]:
    """The config keys of a key's text (:func:`key_text`): ``[scenario.num_aps, scenario.num_users]``."""
    first, *rest = text.split(TEXT_JOIN)
    return [first, *(PREFIX + r for r in rest)]


def trained_value(scenario: Any, key: str) -> Any:
    """The value a shifted ``key`` had in training, in the form :func:`shift_curves` gives its values (a
    joint key's as its text, ``5x10``)."""
    values = [getattr(scenario, k.removeprefix(PREFIX)) for k in key.split(JOIN)]
    return value_text(values) if len(values) > 1 else values[0]


def metric_prefix(key: str, value: Any) -> str:
    return f"test/shift/{key_text(key)}/{value_text(value)}"


def shift_points(metrics: dict[str, float]) -> dict[str, list[tuple[str, float]]]:
    """The inverse of :func:`metric_prefix` over a run's metrics: ``{key: [(value, ratio), ...]}`` from
    ``test/shift/<key>/<value>/objective_ratio``, in the metrics' order."""
    points: dict[str, list[tuple[str, float]]] = {}
    for name, ratio in metrics.items():
        if name.startswith("test/shift/") and name.endswith("/objective_ratio"):
            key, shifted = name[len("test/shift/") : -len("/objective_ratio")].rsplit("/", 1)
            points.setdefault(key, []).append((shifted, ratio))
    return points


def plan(run: RunConfig, build_parts) -> list[Shift]:
    """Every (key, value) of ``run.eval.shifts`` as a shifted run, checked before any work: an unknown or
    fixed key, or a value the scenario refuses, raises :class:`ConfigError` for ``eval.shifts.<key>``; a
    shifted setting the parts refuse together (:class:`Incompatible`: the learner cannot read it) is kept,
    not applicable, with the reason. ``build_parts`` is :func:`mimo_l2o.parts.build_parts`."""
    shifts: list[Shift] = []
    known = {f.name for f in fields(run.scenario)}
    if run.eval.shifts is not None and not isinstance(run.eval.shifts, dict):
        raise ConfigError(
            "eval.shifts", f"must be a mapping of scenario keys to lists of values, got {run.eval.shifts!r}"
        )
    for key, values in (run.eval.shifts or {}).items():
        where = f"eval.shifts.{key}"
        names = [_shiftable(run, part, where, known) for part in key.split(JOIN)]
        if len(set(names)) < len(names):
            raise ConfigError(where, "names a key twice")
        if not isinstance(values, list | tuple) or not values:
            raise ConfigError(where, f"must be a non-empty list of values, got {values!r}")
        for value in values:
            if len(names) > 1 and (not isinstance(value, list | tuple) or len(value) != len(names)):
                raise ConfigError(
                    where, f"{value!r}: must be a list of {len(names)} values, one per key joined by {JOIN}"
                )
            changes = dict(zip(names, value if len(names) > 1 else [value], strict=True))
            scenario = _shifted_scenario(run.scenario, changes, value, where)
            shifted = dataclasses.replace(run, scenario=scenario)
            try:
                shifts.append(Shift(key, value, shifted, build_parts(shifted)))
            except Incompatible as err:
                shifts.append(Shift(key, value, shifted, reason=str(err)))
    return shifts


def _shiftable(run: RunConfig, key: str, where: str, known: set[str]) -> str:
    """The scenario field a shifted ``key`` names, or :class:`ConfigError` for ``where``."""
    name = key[len(PREFIX) :] if key.startswith(PREFIX) else None
    if name is None or name not in known:
        allowed = ", ".join(PREFIX + k for k in sorted(known - set(FIXED)))
        raise ConfigError(
            where,
            f"{key} is not a key of scenario={run.scenario.name}; allowed: {allowed} "
            f"(several joined by {JOIN})",
        )
    if name in FIXED:
        raise ConfigError(where, f"cannot shift: {key} would make another scenario or test set")
    return name


def _shifted_scenario(config: Any, changes: dict[str, Any], value: Any, where: str) -> Any:
    """A copy of the scenario ``config`` with the fields of ``changes`` set, validated by its schema (its
    derived keys, ``p_max`` from ``p_max_dbm``, follow); ``value`` names the point in the error."""
    node = OmegaConf.structured(copy.deepcopy(config))
    try:
        for name, changed in changes.items():
            node[name] = changed
        shifted = OmegaConf.to_object(node)
        check_finite(shifted)
    except ConfigError as err:
        raise ConfigError(where, f"{value!r}: {err.message}") from None
    except Exception as err:  # OmegaConf's type errors
        raise ConfigError(where, f"{value!r}: {getattr(err, 'msg', err)}") from None
    return shifted


def evaluate_shifts(
    shifts: list[Shift],
    learner: Learner,
    model: torch.nn.Module,
    finalize: torch.nn.Module,
    trained_shape: tuple[int, ...],
    make_data,
    device: torch.device,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The trained policy on each shifted test set (module docstring): the metrics and one record per
    point (key, value, status, the metrics or the reason). ``trained_shape`` is the model input's shape
    without the sample dimension in the trained setting. ``make_data(run, parts)`` gives the
    :class:`~mimo_l2o.data.Data` of a shifted run (its test split is the only one used)."""
    metrics: dict[str, float] = {}
    records: list[dict[str, Any]] = []

    def evaluate(shift: Shift) -> tuple[float, float] | str:
        """The learner's and the solver's mean objective on the shifted test set, or why the learner
        cannot read it (one line)."""
        if shift.reason is not None:
            return shift.reason
        data = make_data(shift.run, shift.parts)
        inputs = data.inputs("test", learner)
        reason = learner.shift_refusal(tuple(trained_shape), tuple(inputs.shape[1:]))
        if reason is not None:
            return reason
        problem = data.problem("test")
        reference = data.labels("test").to(problem.device)
        adapted, final = learner.adapt(model, finalize, problem)
        policy = Policy(adapted, final).to(device).eval()
        decision, _ = policy_decisions(policy, inputs.to(device), problem)
        ratio = ObjectiveRatio(data.parts.objective, problem, reference)
        return ratio.mean(decision), ratio.mean(reference)

    for shift in shifts:
        record: dict[str, Any] = {"key": shift.key, "value": shift.value}
        status = "not applicable"
        try:
            point = evaluate(shift)
        except (ConfigError, Incompatible) as err:  # the shifted setting cannot be read or built
            point = short(str(err))
        except Exception as err:  # a defect: this point's record says so, the run and its other points stand
            log.debug("shift %s=%s failed", shift.key, value_text(shift.value), exc_info=True)
            first = next((line for line in str(err).splitlines() if line.strip()), "")
            point, status = short(f"{type(err).__name__}: {first}"), "failed"
        if isinstance(point, str):
            record.update(status=status, reason=point)
            say = log.warning if status == "failed" else log.info
            say("shift %s=%s: %s (%s)", shift.key, value_text(shift.value), status, point)
            records.append(record)
            counter = f"test/shift/{status.replace(' ', '_')}"  # test/shift/failed, .../not_applicable
            metrics[counter] = metrics.get(counter, 0.0) + 1
            continue
        ours, theirs = point
        metrics.update(
            {
                f"{shift.prefix}/objective_ratio": ours / theirs,
                f"{shift.prefix}/objective_learner": ours,
                f"{shift.prefix}/objective_solver": theirs,
            }
        )
        record.update(
            status="ok", objective_ratio=ours / theirs, objective_learner=ours, objective_solver=theirs
        )
        log.info("shift %s=%s: objective ratio %.4f", shift.key, value_text(shift.value), ours / theirs)
        records.append(record)
    return metrics, records


def shift_curves(records: list[dict[str, Any]]) -> dict[str, list[tuple[Any, float]]]:
    """The evaluated points of each key, ``{key: [(value, ratio), ...]}`` in the order given (not
    applicable points left out; a joint value as its text, ``15x15``)."""
    curves: dict[str, list[tuple[Any, float]]] = {}
    for r in records:
        if r["status"] == "ok" and math.isfinite(r["objective_ratio"]):
            value = value_text(r["value"]) if JOIN in r["key"] else r["value"]
            curves.setdefault(r["key"], []).append((value, r["objective_ratio"]))
    return curves
