"""mimo_l2o: learning to optimize for MIMO resource allocation.

Every paper's method is a learner plugin; scenarios, precoders, objectives and solvers are
Hydra config groups; one runner labels, trains and evaluates, and MLflow keeps the record.
Run ``python -m mimo_l2o`` (see README.md); ``mimo_l2o.policy(run_id)`` loads a run's logged policy
and ``mimo_l2o.inputs(run_id)`` builds its input for new networks (:mod:`mimo_l2o.deploy`).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("inputs", "Inputs", "policy", "NoPolicy"):  # imported on use: not needed to compose
        from mimo_l2o import deploy

        return getattr(deploy, name)
    raise AttributeError(f"module 'mimo_l2o' has no attribute '{name}'")
