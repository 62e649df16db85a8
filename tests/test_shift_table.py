"""Every learner under every shiftable key (issue 29): a trained policy tested at another value of each key
of a scenario it reads either gives its ratio or says in one line why it cannot, never a traceback.

The table: each registered learner on a scenario it reads (every scenario but ``deepmimo``, which needs
files, at least once), tiny sizes, and each key of the scenario but ``name`` and ``seed`` shifted to one
other value the scenario accepts. A key whose every candidate value the scenario refuses stops before any
work with one line naming ``eval.shifts.<key>`` (checked by :func:`~mimo_l2o.shifts.plan`); the others
run in one app run per pair, and its ``shifts.json`` holds for every point a ratio or a one-line reason,
no failure. The size-free learners (the GNN, the neural calibration, the unfolded WMMSE) give a ratio at
another number of users, and the GNN at another number of APs."""

from __future__ import annotations

import enum
import json
import math
from dataclasses import fields

import pytest

from mimo_l2o import registry
from mimo_l2o.errors import ConfigError
from mimo_l2o.scenarios.cellfree import GRIDS
from mimo_l2o.scenarios.miso import DELAY_PHASE, MISMATCH, PILOT_ESTIMATORS
from mimo_l2o.shifts import FIXED, _shifted_scenario
from tests.conftest import app_run

# (learner, scenario, the scenario's tiny sizes, a fast reference solver)
PAIRS = [
    ("dnn", "gaussian_ic", {"num_users": 3}, "wmmse"),
    ("dnn", "imac", {"num_users": 3, "num_cells": 3}, "wmmse"),
    ("gnn", "cellfree", {"num_aps": 2, "num_users": 3, "num_antennas": 2}, "ee_pga"),
    ("position_mlp", "cellular", {"num_users": 2, "num_antennas": 4}, None),
    ("position_lstm", "cellular", {"num_users": 2, "num_antennas": 4}, None),
    ("model_driven", "miso_tdd", {"num_users": 2, "num_antennas": 3}, "wmmse_bf"),
    ("model_driven", "multicell_miso", {"num_antennas": 4}, "wmmse_bf"),
    ("data_driven_bf", "miso_fdd", {"num_users": 2, "num_antennas": 4}, "wmmse_bf"),
    ("neural_calibration", "massive_fdd", {"num_users": 2, "num_antennas": 4}, "wmmse_bf"),
    ("unfolded_wmmse", "massive_fdd", {"num_users": 2, "num_antennas": 4}, "wmmse_bf"),
]
SIZE_FREE = {
    "gnn": ("num_users", "num_aps"),
    "neural_calibration": ("num_users",),
    "unfolded_wmmse": ("num_users",),
}
# a None key's value when shifted, and the choices of the string keys
UNSET = {
    "p_max_dbm": 0.0,
    "snr_db": 10.0,
    "pilot_length": 2,
    "pilot_power": 1.0,
    "pilot_power_dbm": 0.0,
    "association_db": -90.0,
    "min_distance": 10.0,
}
CHOICES = {
    "mismatch": MISMATCH,
    "pilot_estimator": PILOT_ESTIMATORS,
    "delay_phase": DELAY_PHASE,
    "ap_grid": GRIDS,
}
TINY = [
    "data.num_train=200",
    "data.num_val=100",
    "data.num_test=100",
    "data.chunk_size=100",
    "learner.train.max_epochs=1",
    "learner.train.batch_size=100",
    "eval.timing_samples=20",
    "eval.timing_repeats=1",
    "num_threads=1",
    "tracking.log_model=false",
]


def candidates(name: str, value, config) -> list:
    """Other values of a scenario key, in the order tried: the first the scenario accepts is shifted to."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, enum.Enum):
        return [m.value for m in type(value) if m is not value]
    if isinstance(value, str):
        return [c for c in CHOICES[name] if c != value]
    if isinstance(value, int):
        cells = getattr(config, "num_cells", 1)
        return [value + 1, value - 1, value + cells, 1, (math.isqrt(value) + 1) ** 2]
    if isinstance(value, float):
        logarithmic = name.endswith(("_db", "_dbm", "_deg", "_dbm_hz"))
        return [value + 3.0, value - 3.0] if logarithmic else [value * 2, value / 2]
    return [UNSET[name]] if value is None else []


def table(scenario: str, sizes: dict) -> tuple[dict, dict]:
    """``({key: value shifted to}, {key: the scenario's one-line refusal})`` over the scenario's keys."""
    cls = registry.SCENARIOS.get(scenario)
    config = cls.Config(**sizes)
    shifted, refused = {}, {}
    for field in fields(config):
        if field.name in FIXED:
            continue
        where = f"eval.shifts.scenario.{field.name}"
        errors = []
        for value in candidates(field.name, getattr(config, field.name), config):
            try:
                _shifted_scenario(config, {field.name: value}, value, where)
            except ConfigError as err:
                errors.append(str(err))
                continue
            shifted[field.name] = value
            break
        else:
            refused[field.name] = errors
    return shifted, refused


def test_the_table_covers_every_learner_and_every_scenario_with_files_at_hand():
    registry.load_all()
    assert {learner for learner, *_ in PAIRS} == set(registry.LEARNERS.names())
    assert {scenario for _, scenario, *_ in PAIRS} == set(registry.SCENARIOS.names()) - {"deepmimo"}


@pytest.mark.parametrize("learner, scenario, sizes, solver", PAIRS, ids=[f"{p[0]}-{p[1]}" for p in PAIRS])
def test_every_shift_gives_a_ratio_or_one_line_why_not(tmp_path, learner, scenario, sizes, solver):
    registry.load_all()
    shifted, refused = table(scenario, sizes)
    for key, errors in refused.items():  # a key no other value of which the scenario takes: one line each
        assert errors and all(e.startswith(f"eval.shifts.scenario.{key}:") and "\n" not in e for e in errors)
    assert "num_users" in shifted
    spec = ", ".join(f"scenario.{k}: [{v}]" for k, v in shifted.items())
    overrides = [
        f"scenario={scenario}",
        f"learner={learner}",
        *(f"scenario.{k}={v}" for k, v in sizes.items()),
    ]
    overrides += [f"solver={solver}"] * (solver is not None) + [f"eval.shifts={{{spec}}}", *TINY]
    _, client, run = app_run(tmp_path, overrides)
    path = client.download_artifacts(run.info.run_id, "shifts.json", str(tmp_path))
    with open(path) as f:
        records = json.load(f)["shifts"]
    assert len(records) == len(shifted)
    for record in records:
        where = f"{record['key']}={record['value']}"
        assert record["status"] in ("ok", "not applicable"), (where, record.get("reason"))
        if record["status"] == "ok":
            # >= 0: one epoch on 200 samples may leave a user at no power (max-prod's ratio is then 0)
            assert math.isfinite(record["objective_ratio"]) and record["objective_ratio"] >= 0, where
        else:
            assert record["reason"] and "\n" not in record["reason"], where
    read = {r["key"].removeprefix("scenario.") for r in records if r["status"] == "ok"}
    assert set(SIZE_FREE.get(learner, ())) & set(shifted) <= read
