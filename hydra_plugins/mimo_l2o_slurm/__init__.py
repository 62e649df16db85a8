"""mimo_l2o's Hydra launcher for Slurm (``hydra/launcher=slurm``): it lives in Hydra's plugin namespace,
which Hydra requires of a launcher class; what it does is in :mod:`mimo_l2o.cluster`."""
