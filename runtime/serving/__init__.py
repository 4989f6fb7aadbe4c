"""Online scoring: model hosts forked from warm parents, MLflow's and the inference protocol's
payloads, micro-batching, swaps on publication, metrics (see service.py and host.py)."""
