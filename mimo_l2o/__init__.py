"""mimo_l2o: learning to optimize for MIMO resource allocation.

Every paper's method is a learner plugin; scenarios, precoders, objectives and solvers are
Hydra config groups; one runner labels, trains and evaluates, and MLflow keeps the record.
Run ``python -m mimo_l2o`` (see README.md).
"""

__version__ = "0.1.0"
