"""Name → class registries for every swappable part.

Core parts (scenarios, precoders, objectives, solvers) register themselves with a decorator in
their own module; learners come from the ``mimo_l2o.learners`` entry-point group, so the core
never imports a plugin by name and third-party packages add learners the same way.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from mimo_l2o.errors import ConfigError

LEARNER_ENTRY_POINTS = "mimo_l2o.learners"


class Registry:
    """Classes of one config group, by the ``name`` their YAML gives."""

    def __init__(self, group: str, entry_point_group: str | None = None):
        self.group = group
        self.entry_point_group = entry_point_group
        self._classes: dict[str, type] = {}
        self._entry_points_loaded = entry_point_group is None

    def register(self, name: str):
        def decorator(cls: type) -> type:
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorator

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._classes:
                cls = ep.load()
                cls.name = ep.name
                self._classes[ep.name] = cls

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._classes)

    def get(self, name: str) -> type:
        self._load_entry_points()
        try:
            return self._classes[name]
        except KeyError:
            raise ConfigError(
                f"{self.group}.name", f"unknown {self.group} '{name}'; available: {', '.join(self.names())}"
            ) from None

    def build(self, config: Any) -> Any:
        """Instantiate the class named by ``config.name`` with its typed config."""
        return self.get(config.name)(config)


SCENARIOS = Registry("scenario")
PRECODERS = Registry("precoder")
OBJECTIVES = Registry("objective")
SOLVERS = Registry("solver")
LEARNERS = Registry("learner", LEARNER_ENTRY_POINTS)

_CORE_MODULES = ("mimo_l2o.scenarios", "mimo_l2o.precoders", "mimo_l2o.objectives", "mimo_l2o.solvers")


def load_all() -> None:
    """Import the core parts so that they register (the learners load through entry points)."""
    for module in _CORE_MODULES:
        importlib.import_module(module)
    LEARNERS.names()


def all_registries() -> dict[str, Registry]:
    return {r.group: r for r in (SCENARIOS, PRECODERS, OBJECTIVES, SOLVERS, LEARNERS)}
