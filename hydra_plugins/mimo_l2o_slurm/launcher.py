"""``hydra/launcher=slurm``: submitit's Slurm launcher, watched with ``squeue`` (see :mod:`mimo_l2o.cluster`).

Hydra imports every module of its plugin namespace at start-up, so this one is light, and without the
``slurm`` extra it defines nothing."""

from __future__ import annotations

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SubmititSlurm
except ImportError:  # the slurm extra is not installed: no launcher
    _SubmititSlurm = None

if _SubmititSlurm is not None:

    class SlurmLauncher(_SubmititSlurm):
        """submitit's Slurm launcher whose jobs are watched with ``squeue``: one line per change of a
        job's state, no ``sacct`` warning per poll on a cluster without accounting."""

        def launch(self, job_overrides, initial_job_idx):
            from mimo_l2o.cluster import quiet_queue

            with quiet_queue(initial_job_idx):
                return super().launch(job_overrides, initial_job_idx)
