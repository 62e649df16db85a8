"""The parts of a run and whether they fit together.

:func:`build_parts` instantiates the scenario, precoder, objective, solvers and the learner class from
the typed run config and refuses a combination that cannot work with one :class:`Incompatible` line,
before any work: parts of different problem families, a precoder without the network tensors it
reads, a solver that does not optimize the objective, a supervised learner without labels, a learner
that cannot read the scenario's problems.
"""

from __future__ import annotations

from dataclasses import dataclass

from mimo_l2o import registry
from mimo_l2o.components import Objective, Precoder, Scenario, Solver
from mimo_l2o.config import RunConfig
from mimo_l2o.errors import ConfigError, Incompatible
from mimo_l2o.features import learner_refusal
from mimo_l2o.learner import Learner
from mimo_l2o.problems import FAMILIES


@dataclass
class Parts:
    """The built parts of one run.

    Parameters
    ----------
    solver : Solver
        The reference: its decisions are the test metrics' denominator (and the labels, unless
        ``labeller`` is another solver).
    labeller : Solver
        The solver whose decisions supervised learners train on (``data.label_solver``; the reference
        unless named).
    baselines : dict[str, Solver]
        Heuristics reported beside the learner (``eval.baselines``, or the family's defaults).
    """

    scenario: Scenario
    precoder: Precoder
    objective: Objective
    solver: Solver
    labeller: Solver
    learner_cls: type[Learner]
    baselines: dict[str, Solver]

    @property
    def family(self) -> str:
        return self.precoder.family


def _default_solver(name: str) -> Solver:
    """A solver named outside the ``solver`` group (a baseline, the labeller), with its default config."""
    return registry.SOLVERS.build(registry.SOLVERS.get(name).Config(name=name))


def _check_family(part: str, name: str, families: tuple[str, ...], family: str, precoder: str) -> None:
    if family not in families:
        raise Incompatible(
            part,
            f"{part}={name} works on {' and '.join(families)} problems "
            f"but precoder={precoder} makes {family}",
        )


def _check_solves(key: str, solver: Solver, objective: str) -> None:
    if solver.objectives is not None and objective not in solver.objectives:
        raise Incompatible(
            key,
            f"solver={solver.name} cannot solve objective={objective}; "
            f"it solves: {', '.join(solver.objectives)}",
        )


def build_parts(run: RunConfig) -> Parts:
    """Instantiate the parts and check they fit together; raises :class:`Incompatible` (one line)."""
    scenario = registry.SCENARIOS.build(run.scenario)
    precoder = registry.PRECODERS.build(run.precoder)
    objective = registry.OBJECTIVES.build(run.objective)
    solver = registry.SOLVERS.build(run.solver)
    learner_cls = registry.LEARNERS.get(run.learner.name)
    s, p, o, v, lname = scenario.name, precoder.name, objective.name, solver.name, learner_cls.name
    family = precoder.family

    if scenario.family != family:
        raise Incompatible(
            "precoder", f"precoder={p} makes {family} problems but scenario={s} feeds {scenario.family}"
        )
    if not precoder.accepts(scenario.tensors):
        raise Incompatible(
            "precoder",
            f"precoder={p} needs {', '.join(precoder.requires)}, which scenario={s} does not sample",
        )
    _check_family("objective", o, objective.families, family, p)
    _check_family("solver", v, solver.families, family, p)
    _check_family("learner", lname, learner_cls.families, family, p)
    learner_cls = learner_cls.for_family(family)
    _check_solves("solver", solver, o)

    labeller = solver
    if run.data.label_solver is not None and run.data.label_solver != v:
        labeller = _default_solver(run.data.label_solver)
        _check_family("data.label_solver", labeller.name, labeller.families, family, p)
        _check_solves("data.label_solver", labeller, o)
    if learner_cls.requires_labels and not labeller.gives_labels:
        labellers = [
            n
            for n in registry.SOLVERS.names()
            if registry.SOLVERS.get(n).gives_labels and o in (registry.SOLVERS.get(n).objectives or ())
        ]
        key = "solver" if labeller is solver else "data.label_solver"
        raise Incompatible(
            key,
            f"learner={lname} trains on labels but solver={labeller.name} gives none; "
            f"use one of: {', '.join(labellers)}",
        )
    refusal = learner_refusal(learner_cls, scenario, precoder)
    if refusal:
        raise Incompatible("learner", refusal)
    setting = learner_cls.refuses_setting(run.learner, scenario)
    if setting:
        raise Incompatible(f"learner.{setting[0]}", setting[1])

    batch = run.learner.train.batch_size
    if batch > run.data.num_train:
        raise ConfigError(
            "learner.train.batch_size",
            f"{batch} is larger than the training set (data.num_train={run.data.num_train})",
        )
    names = FAMILIES[family].default_baselines if run.eval.baselines is None else tuple(run.eval.baselines)
    if v in names:
        raise ConfigError(
            "eval.baselines", f"'{v}' is the reference solver (solver={v}); list only other solvers"
        )
    baselines = {name: _default_solver(name) for name in names}
    for name, baseline in baselines.items():
        _check_family("eval.baselines", name, baseline.families, family, p)
        _check_solves("eval.baselines", baseline, o)
    return Parts(scenario, precoder, objective, solver, labeller, learner_cls, baselines)
