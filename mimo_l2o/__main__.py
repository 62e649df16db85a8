"""``python -m mimo_l2o [overrides]``: the Hydra app.

Before ``@hydra.main`` runs, mimo_l2o registers its schemas in the ConfigStore and, explicitly,
one search-path plugin that adds each learner plugin's ``conf/`` folder (found next to the
package of its entry point), so ``learner=<name>`` composes without scanning Hydra's plugin
namespace. Bad input of any kind ends with one line on stderr naming the key and what is
allowed, and exit code 2.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

import hydra
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig

from mimo_l2o.errors import MAX_LINE, ConfigError, RunFailure, one_line, short
from mimo_l2o.registry import LEARNER_ENTRY_POINTS


def _conf_dir() -> Path:
    """The Hydra configs: ``conf/`` of the repository, installed as the package ``mimo_l2o.conf``."""
    spec = importlib.util.find_spec("mimo_l2o.conf")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if (Path(location) / "config.yaml").exists():
                return Path(location)
    return Path(__file__).resolve().parent.parent / "conf"


CONF_DIR = _conf_dir()


def plugin_conf_dirs() -> list[Path]:
    """``conf/`` folders of the packages that provide learner entry points."""
    dirs: list[Path] = []
    for ep in entry_points(group=LEARNER_ENTRY_POINTS):
        package = ep.value.split(":")[0].rsplit(".", 1)[0]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        conf = Path(spec.origin).parent / "conf"
        if conf.is_dir() and conf not in dirs:
            dirs.append(conf)
    return dirs


class PluginSearchPath(SearchPathPlugin):
    """Adds every learner plugin's ``conf/`` to Hydra's config search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for conf in plugin_conf_dirs():
            search_path.append(provider="mimo_l2o-plugin", path=f"file://{conf}")


def composed(*overrides: str):
    """The validated run config (``RunConfig``) that ``python -m mimo_l2o <overrides>`` composes, the
    plugins' config folders included, without running anything (tests, notebooks)."""
    from hydra import compose, initialize_config_dir

    from mimo_l2o.config import register_configs, validate

    Plugins.instance().register(PluginSearchPath)
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return validate(compose("config", overrides=list(overrides)))


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> float:
    from mimo_l2o.jobs import job_number
    from mimo_l2o.runner import run_experiment

    try:
        return run_experiment(cfg)
    except ConfigError as err:
        # Leave through SystemExit, which Hydra's job runner does not catch and report at length.
        from mimo_l2o.jobs import discard_output_dir

        discard_output_dir()
        print(f"error: {short(str(err))}", file=sys.stderr)
        raise SystemExit(2) from None
    except RunFailure as err:
        if job_number() is not None:  # in a sweep, the job fails and the sweep reports it
            raise
        # a single run's expected failure (divergence, a full disk, a lost tracking server): its run
        # is closed FAILED; one line, without Hydra's "Error executing job" before it, its paths whole
        print(f"error: {short(str(err), word=MAX_LINE)}", file=sys.stderr)
        raise SystemExit(1) from None


def _check_keys(args: list[str]) -> None:
    """An override without a key (``=3``), which Hydra's parser lets through to a traceback."""
    for arg in args:
        if not arg.startswith("-") and "=" in arg and not arg.split("=", 1)[0].lstrip("+~"):
            raise ConfigError("", f"bad override '{arg}': no key before '='")


def main() -> None:
    """Console entry point (``python -m mimo_l2o`` / ``mimo-l2o``); ``mimo-l2o report ...`` compares
    finished runs (:mod:`mimo_l2o.report`)."""
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        from mimo_l2o.report import main as report

        sys.exit(report(sys.argv[2:]))
    from mimo_l2o.config import register_configs
    from mimo_l2o.tracking import close_open_parent

    # Let errors reach us whole, so bad input is reported in one line with exit code 2.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    Plugins.instance().register(PluginSearchPath)
    try:
        _check_keys(sys.argv[1:])
        register_configs()
        _app()
    except BaseException as err:
        close_open_parent("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        if isinstance(err, KeyboardInterrupt):  # Ctrl-C or SIGTERM: the runs are closed as KILLED
            print(f"stopped: {err or 'interrupted'}", file=sys.stderr)
            sys.exit(130)
        if isinstance(err, RunFailure):  # an expected failure (divergence): its run ended FAILED
            print(f"error: {short(str(err), word=MAX_LINE)}", file=sys.stderr)
            sys.exit(1)
        message = one_line(err)
        if message is None:
            raise
        print(f"error: {short(message)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
