"""Forwarding to the trackers people already use (MLflow, W&B): one batched stream that
follows what the hub committed, instead of one tracker client in every worker.

Example:
    >>> import rayplex.forward
    >>> rayplex.forward.MLflow(tracking_uri="sqlite:////tmp/mlruns.db", experiment="ppo")
    ... # doctest: +NORMALIZE_WHITESPACE
    MLflow(tracking_uri='sqlite:////tmp/mlruns.db', experiment='ppo', slow_call_s=10.0,
           retry_max_s=30.0, artifact_location=None)

Pass them to ``rayplex.init(logdir, forward=[...])``; each gets a forwarder actor of its own
(:mod:`rayplex.forward.actor`), so a slow tracker never delays another one. MLflow and W&B
are optional extras (``pip install rayplex[mlflow]``), imported only inside the forwarder.
"""

from rayplex.forward.trackers import MLflow, Tracker, WandB

__all__ = ["MLflow", "Tracker", "WandB"]
