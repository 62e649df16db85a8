"""Every shipped config composes with Hydra and validates into its registered part's typed Config;
experiment presets apply what they say; every YAML key is documented by a comment; bad values
give one ConfigError naming the key; flattened runs hold plain values for MLflow."""

from __future__ import annotations

import math
import re
from enum import Enum
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.plugins import Plugins
from omegaconf import OmegaConf

from mimo_l2o import registry
from mimo_l2o.__main__ import CONF_DIR, PluginSearchPath, plugin_conf_dirs
from mimo_l2o.config import GROUPS, RunConfig, flatten, register_configs, validate
from mimo_l2o.errors import ConfigError
from mimo_l2o.features import learner_refusal
from mimo_l2o.parts import build_parts
from mimo_l2o.problems import FAMILIES

Plugins.instance().register(PluginSearchPath)
register_configs()

CONF_DIRS = [CONF_DIR, *plugin_conf_dirs()]
PLAIN = (int, float, str, bool, type(None))


def options(group: str) -> dict[str, Path]:
    """``name → yaml`` of a config group, over the core conf/ and the plugins' conf/ folders."""
    return {p.stem: p for d in CONF_DIRS for p in sorted((d / group).glob("*.yaml"))}


GROUP_OPTIONS = [(group, name) for group in GROUPS for name in options(group)]
EXPERIMENTS = sorted(options("experiment"))
YAML_FILES = sorted(p for d in CONF_DIRS for p in d.rglob("*.yaml"))


def load_option(group: str, name: str) -> tuple[dict, dict[str, str], dict]:
    """An option's YAML as ``(own keys, companions, other global keys)``.

    Most options fill their group's package. A ``# @package _global_`` option (scenario=cellular) has
    its own keys under its group's name, may choose other groups' options (``override /precoder: mr``:
    its companions) and set other top-level keys (``data``, ``eval``).
    """
    path = options(group)[name]
    data = yaml.safe_load(path.read_text())
    companions = {}
    for entry in data.pop("defaults", []):
        if isinstance(entry, dict) and next(iter(entry)).startswith("override "):
            ((key, value),) = entry.items()
            companions[key.removeprefix("override /").split("@")[0]] = value
    if not path.read_text().startswith("# @package _global_"):
        return data, companions, {}
    own = data.pop(group)
    return own, companions, data


def expected_choices(group: str, name: str) -> dict[str, str]:
    """The option of every group after ``group=name`` on the command line: the defaults, then the
    companions each chosen option brings (an objective its solver, ...), the command line winning."""
    plain = compose_run()
    chosen = {g: next(n for n in options(g) if load_option(g, n)[0]["name"] == plain[g].name) for g in GROUPS}
    chosen[group] = name
    for _ in GROUPS:  # companions of companions
        for g, option in list(chosen.items()):
            for other, value in load_option(g, option)[1].items():
                if other != group:
                    chosen[other] = value
    return chosen


def schema_default(group: str, name: str) -> str:
    """The defaults entry that pulls in the schema of the part the option configures."""
    own, _, _ = load_option(group, name)
    text = options(group)[name].read_text()
    package = group if text.startswith("# @package _global_") else "_here_"
    return f"/schema/{group}/{own['name']}@{package}"


def compose_run(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def plain_leaves(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(plain_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def test_every_group_has_options_and_the_plugin_conf_is_found():
    assert plugin_conf_dirs(), "no learner plugin conf/ found"
    for group in GROUPS:
        assert options(group), group
    assert "dnn" in options("learner")


# ---------------------------------------------------------------------------------------------
# every option composes and validates into its registered class's Config
# ---------------------------------------------------------------------------------------------
def required_overrides(group: str, name: str, tmp_path) -> list[str]:
    """What an option cannot run without: ``scenario=deepmimo`` reads a folder (a fixture written here)."""
    if (group, name) == ("scenario", "deepmimo"):
        from tests.test_deepmimo import write_fixture

        write_fixture(tmp_path / "scen", points=20)
        return [f"scenario.path={tmp_path / 'scen'}"]
    return []


@pytest.mark.parametrize("group,name", GROUP_OPTIONS, ids=[f"{g}={n}" for g, n in GROUP_OPTIONS])
def test_option_composes_and_validates(group, name, tmp_path):
    cfg = compose_run(f"{group}={name}", *required_overrides(group, name, tmp_path))
    run = validate(cfg)
    assert isinstance(run, RunConfig)
    part = getattr(run, group)
    own, companions, extra = load_option(group, name)
    cls = registry.all_registries()[group].get(own["name"])
    assert type(part) is cls.Config
    assert part.name == own["name"]
    # the YAML's values arrive in the typed config
    typed = flatten(part)
    for key, value in plain_leaves(own).items():
        assert typed[key] == value, key
    flat = flatten(run)
    for key, value in plain_leaves(extra).items():
        assert flat[key] == value, key
    # the other groups keep their defaults, or take the companions the option brings
    for other, option in expected_choices(group, name).items():
        assert getattr(run, other).name == load_option(other, option)[0]["name"], other


def scenario_for(group: str, name: str) -> str:
    """The first scenario a precoder accepts, or a learner reads (with the scenario's companions)."""
    for scenario in registry.SCENARIOS.names():
        if scenario == "deepmimo":  # builds only on a folder the user has (required_overrides)
            continue
        cls = registry.SCENARIOS.get(scenario)
        if group == "precoder" and registry.PRECODERS.get(name).accepts(cls.tensors):
            return scenario
        if group == "solver" and cls.family in registry.SOLVERS.get(name).families:
            return scenario
        if (
            group == "learner"
            and refusal(validate(compose_run(f"scenario={scenario}", f"learner={name}"))) is None
        ):
            return scenario
    raise AssertionError(f"no scenario for {group}={name}")


def refusal(run) -> str | None:
    """Why the run's learner cannot read its scenario, or ``None``."""
    scenario = registry.SCENARIOS.build(run.scenario)
    precoder = registry.PRECODERS.build(run.precoder)
    learner_cls = registry.LEARNERS.get(run.learner.name)
    if precoder.family in learner_cls.families:
        learner_cls = learner_cls.for_family(precoder.family)
    return learner_refusal(learner_cls, scenario, precoder)


@pytest.mark.parametrize("group,name", GROUP_OPTIONS, ids=[f"{g}={n}" for g, n in GROUP_OPTIONS])
def test_an_option_states_no_default_twice(group, name):
    """A default lives in the part's schema only: an option's own keys are its ``name`` and, for a
    variant (``learner=position_mlp/large``), the values where it differs from the schema."""
    own, _, _ = load_option(group, name)
    cls = registry.all_registries()[group].get(own["name"])
    defaults = flatten(cls.Config(name=own["name"]))
    for key, value in plain_leaves(own).items():
        assert key == "name" or defaults[key] != value, (
            f"{options(group)[name]}: {key}={value} is the default"
        )


@pytest.mark.parametrize("group,name", GROUP_OPTIONS, ids=[f"{g}={n}" for g, n in GROUP_OPTIONS])
def test_option_builds_with_the_defaults_unless_it_cannot_label(group, name, tmp_path):
    run = validate(compose_run(f"{group}={name}", *required_overrides(group, name, tmp_path)))
    default_family = registry.PRECODERS.get(run.precoder.name).family
    families = {"solver": registry.SOLVERS, "learner": registry.LEARNERS}
    if group in families and default_family not in families[group].get(name).families:
        # a part of another family: refused naming both, and built on a scenario of its family
        with pytest.raises(
            ConfigError, match=rf"^{group}: {group}={name} works on .+ makes {default_family}$"
        ):
            build_parts(run)
        run = validate(compose_run(f"scenario={scenario_for(group, name)}", f"{group}={name}"))
    if group == "solver" and not registry.SOLVERS.get(name).gives_labels:
        # validate does not check combinations; build_parts refuses a supervised learner
        # without labels, and names a solver that gives them
        with pytest.raises(ConfigError) as err:
            build_parts(run)
        assert err.value.key == "solver"
        assert f"solver={name}" in str(err.value) and "labels" in str(err.value)
        assert "wmmse" in str(err.value)
        return
    scenario = registry.SCENARIOS.get(run.scenario.name)
    needs = {
        "precoder": group == "precoder"
        and not registry.PRECODERS.get(run.precoder.name).accepts(scenario.tensors),
        "learner": group == "learner" and refusal(run) is not None,
    }
    solves = registry.SOLVERS.get(run.solver.name).objectives
    if group == "solver" and solves is not None and run.objective.name not in solves:
        # a solver for other objectives: refused, naming what it solves, and built with one of them
        with pytest.raises(ConfigError, match=rf"^solver: solver={name} cannot solve objective="):
            build_parts(run)
        run = validate(compose_run(f"objective={solves[0]}", f"solver={name}"))
    if any(needs.values()):
        # a part for another scenario: refused with the default one, naming both, and built with one
        # that has what it needs
        with pytest.raises(ConfigError) as err:
            build_parts(run)
        assert err.value.key == group and f"scenario={run.scenario.name}" in str(err.value)
        run = validate(compose_run(f"scenario={scenario_for(group, name)}", f"{group}={name}"))
    if refusal(run) is not None:
        # a scenario that no learner of this default can read (its own learner comes with it, or is
        # named): refused before any work, naming the learner and what the scenario provides
        with pytest.raises(ConfigError) as err:
            build_parts(run)
        assert err.value.key == "learner" and f"scenario={run.scenario.name}" in str(err.value)
        return
    parts = build_parts(run)
    assert parts.scenario.name == run.scenario.name
    assert parts.solver.name == run.solver.name
    assert parts.learner_cls.name == run.learner.name
    family = FAMILIES[parts.precoder.family]
    expected = family.default_baselines if run.eval.baselines is None else run.eval.baselines
    assert sorted(parts.baselines) == sorted(expected)


@pytest.mark.parametrize("solver", ["max_power", "random"])
def test_dnn_with_a_heuristic_solver_is_refused(solver):
    run = validate(compose_run(f"solver={solver}", "learner=dnn"))
    assert type(run.solver) is registry.SOLVERS.get(solver).Config
    with pytest.raises(ConfigError, match=rf"^solver: learner=dnn trains on labels but solver={solver}"):
        build_parts(run)


# ---------------------------------------------------------------------------------------------
# experiment presets
# ---------------------------------------------------------------------------------------------
CORE_PRESETS = ("debug",)  # presets of the core: no paper's, and they choose no learner


def test_every_preset_lives_in_the_plugin_of_its_learner():
    assert EXPERIMENTS
    core = {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")}
    assert core == set(CORE_PRESETS), "the core holds no paper's preset"
    for name in CORE_PRESETS:
        data = yaml.safe_load((CONF_DIR / "experiment" / f"{name}.yaml").read_text())
        assert "paper" not in data and "defaults" not in data, name
    for name, path in options("experiment").items():
        if name in CORE_PRESETS:
            continue
        learner = yaml.safe_load(path.read_text())["defaults"]
        (choice,) = [v for e in learner for k, v in e.items() if k == "override /learner"]
        module = registry.LEARNERS.get(choice).__module__  # mimo_l2o_plugins.<paper>.<module>
        assert path.parents[2].name == module.split(".")[1], (name, path)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_validates_and_applies_its_values(name):
    run = validate(compose_run(f"experiment={name}"))
    data = yaml.safe_load(options("experiment")[name].read_text())
    if name not in CORE_PRESETS:
        assert isinstance(run.paper, str) and run.paper
        assert data.get("paper") == run.paper
    # every group the preset selects is selected, every value it sets is set
    for entry in data.get("defaults", []):
        ((key, value),) = entry.items()
        group = key.removeprefix("override ").strip("/")
        assert getattr(run, group).name == value, group
    flat = flatten(run)
    for key, value in plain_leaves({k: v for k, v in data.items() if k != "defaults"}).items():
        if isinstance(value, str) and value.startswith("${mimo_l2o.mul:"):  # the product of its arguments
            factors = re.findall(r"\$\{([^}]+)\}|(\d+)", value[len("${mimo_l2o.mul:") : -1])
            value = math.prod(flat[key_] if key_ else int(number) for key_, number in factors)
        elif isinstance(value, str) and value.startswith("${") and value.endswith("}"):
            value = flat[value[2:-1]]  # an interpolation: the value of the key it names
        assert flat[key] == value, key
    build_parts(run)


# ---------------------------------------------------------------------------------------------
# names and comments in the YAML files
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("group", GROUPS)
def test_registered_names_equal_yaml_names(group):
    reg = registry.all_registries()[group]
    opts = options(group)
    names = {stem: load_option(group, stem)[0]["name"] for stem in opts}
    assert sorted(set(names.values())) == reg.names(), (
        "every registered part has a YAML and every YAML a part"
    )
    for stem, name in names.items():
        # named after its part, or a variant of it (learner=position_mlp_large configures position_mlp)
        assert stem == name or stem.startswith(f"{name}_"), opts[stem]
        assert reg.get(name).name == name
        # the YAML pulls in the schema of its part
        assert schema_default(group, stem) in yaml.safe_load(opts[stem].read_text())["defaults"], opts[stem]


KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w.-]*)\s*:(\s|$)")
EXEMPT_KEYS = {"defaults", "name"}
# capitalised words a key's comment may start with (proper names); others start lower-case
PROPER = {"Sun", "Shi", "Hydra", "MLflow", "RMSprop", "WMMSE"}


def undocumented_keys(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    problems = []
    block_indent = None  # inside a block scalar (``key: |``): its text lines are not keys
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if not line.strip() or indent > block_indent:
                continue
            block_indent = None
        match = KEY_LINE.match(line)
        if match and line.rstrip().endswith(("|", ">")):
            block_indent = indent
        if not match or match["key"] in EXEMPT_KEYS:
            continue  # comments, list items (``- ...``), blank lines, exempt keys
        above = lines[i - 1].strip() if i else ""
        if not above.startswith("#"):
            problems.append(f"{path.name}:{i + 1}: '{line.strip()}' has no comment line above")
            continue
        start = i - 1
        while start > 0 and lines[start - 1].strip().startswith("#"):
            start -= 1
        first = lines[start].strip().lstrip("#").strip()
        word = first.split(" ")[0].rstrip(":,;.")
        if re.fullmatch(r"[A-Z][a-z]+", word) and word not in PROPER:
            problems.append(
                f"{path.name}:{start + 1}: comment of '{match['key']}' is not lower-case: {first}"
            )
    return problems


def test_key_check_itself(tmp_path):
    probe = tmp_path / "probe.yaml"
    probe.write_text(
        "# top\ndefaults:\n  - a\n\nname: x\n# fine\nkey: 1\nbare: 2\nsection:\n  # Capital start\n  sub: 3\n"
    )
    problems = undocumented_keys(probe)
    assert len(problems) == 3, problems
    assert "'bare: 2'" in problems[0] and "'section:'" in problems[1] and "sub" in problems[2]


@pytest.mark.parametrize("path", YAML_FILES, ids=[f"{p.parent.name}/{p.name}" for p in YAML_FILES])
def test_every_yaml_key_has_a_lower_case_comment_above(path):
    problems = undocumented_keys(path)
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# validation errors
# ---------------------------------------------------------------------------------------------
BAD = [
    ("data.num_train=0", "data.num_train"),
    ("data.num_val=0", "data.num_val"),
    ("data.chunk_size=0", "data.chunk_size"),
    ("eval.timing_samples=0", "eval.timing_samples"),
    ("eval.timing_repeats=0", "eval.timing_repeats"),
    ("eval.timing_budget_s=0", "eval.timing_budget_s"),
    ("eval.baselines=[nosuch]", "eval.baselines"),
    ("learner.train.lr=0", "learner.train.lr"),
    ("learner.train.lr=-0.1", "learner.train.lr"),
    ("learner.train.batch_size=0", "learner.train.batch_size"),
    ("learner.train.max_epochs=0", "learner.train.max_epochs"),
    ("learner.train.lr_factor=1", "learner.train.lr_factor"),
    ("learner.train.rmsprop_alpha=0", "learner.train.rmsprop_alpha"),
    ("learner.train.early_stopping_patience=-1", "learner.train.early_stopping_patience"),
    ("learner.hidden=[]", "learner.hidden"),
    ("learner.hidden=[200,0]", "learner.hidden"),
    ("scenario.num_users=0", "scenario.num_users"),
    ("scenario.p_max=0", "scenario.p_max"),
    ("num_threads=-1", "num_threads"),
    ("device=tpu", "device"),
    pytest.param(
        "learner.train.weight_decay=-0.1",
        "learner.train.weight_decay",
    ),
    pytest.param(
        "learner.train.min_lr=-1",
        "learner.train.min_lr",
    ),
]


@pytest.mark.parametrize("override,key", BAD)
def test_out_of_range_values_raise_config_error_naming_the_key(override, key):
    cfg = compose_run(override)  # composing type-checks only; ranges are validate's job
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert err.value.key == key
    assert str(err.value).startswith(f"{key}: ")
    assert "\n" not in str(err.value)


def test_defaults_validate_and_in_range_edges_pass():
    validate(compose_run())
    validate(
        compose_run(
            "data.num_train=1",
            "learner.train.lr=1e-9",
            "learner.train.min_lr=1e-9",
            "learner.hidden=[1]",
            "num_threads=0",
        )
    )


# ---------------------------------------------------------------------------------------------
# flatten
# ---------------------------------------------------------------------------------------------
def test_flatten_gives_plain_values():
    cfg = compose_run()
    run = validate(cfg)
    flat = flatten(run)
    assert flat["learner.train.optimizer"] == "rmsprop"
    assert type(flat["learner.train.optimizer"]) is str
    assert flat["learner.input_scaling"] == "standardize"
    assert type(flat["learner.input_scaling"]) is str
    assert flat["scenario.num_users"] == 10 and type(flat["scenario.num_users"]) is int
    assert flat["learner.hidden"] == [200, 200, 200] and type(flat["learner.hidden"]) is list
    for key, value in flat.items():
        if isinstance(value, list):
            assert all(type(v) in PLAIN for v in value), key
        else:
            assert type(value) in PLAIN, (key, value)
    # every key names a value of the composed config (enums as their value)
    for key, value in flat.items():
        node = OmegaConf.select(cfg, key)
        if isinstance(node, Enum):
            node = node.value
        elif not isinstance(node, PLAIN):
            node = OmegaConf.to_container(node, resolve=True)
        assert node == value, key
    # nothing nested is left: every group's fields are spelled out
    assert not any(isinstance(v, dict) for v in flat.values())
    assert {k.split(".")[0] for k in flat} >= set(GROUPS) | {"data", "eval", "tracking"}


@pytest.mark.parametrize(
    "overrides, p_max",
    [
        (["scenario=cellular", "scenario.p_max_dbm=20"], 0.1),  # 20 dBm = 100 mW
        (["scenario=cellfree", "scenario.p_max_dbm=0"], 1e-3),
        (["scenario.snr_db=10"], 10.0),  # noise 1: SNR 10 dB = p_max 10
        (["scenario=imac", "scenario.noise_power=2", "scenario.snr_db=3"], 2 * 10**0.3),
    ],
)
def test_the_db_forms_set_p_max(overrides, p_max):
    run = validate(compose_run(*overrides))
    assert run.scenario.p_max == pytest.approx(p_max, rel=1e-12)
