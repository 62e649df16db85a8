"""Package discovery (the rest of the build is in pyproject.toml): every package and config folder under
``mimo_l2o/``, ``conf/`` (installed as ``mimo_l2o.conf``) and ``plugins/`` (installed as
``mimo_l2o_plugins``), found on disk, and the Slurm launcher in Hydra's plugin namespace
(``hydra_plugins.mimo_l2o_slurm``), so that adding a plugin or a config group needs no hand-kept list;
plugin tests are not installed."""

from setuptools import find_namespace_packages, setup


def under(folder: str, package: str) -> list[str]:
    """``package`` and the folders below ``folder`` as its subpackages (tests excluded)."""
    found = find_namespace_packages(where=folder, exclude=["*tests", "*tests.*", "*__pycache__*"])
    return [package] + [f"{package}.{name}" for name in found]


setup(
    packages=under("mimo_l2o", "mimo_l2o")
    + under("conf", "mimo_l2o.conf")
    + under("plugins", "mimo_l2o_plugins")
    + ["hydra_plugins.mimo_l2o_slurm"]
)
