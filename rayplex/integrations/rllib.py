"""rayplex as RLlib's logger: the algorithm's results as scalars, every env runner's episodes as
``store_metrics`` so the summary shows their distribution across env runners.

RLlib builds its callbacks from a class, in the algorithm's process and in every env runner, so
the experiment and group travel in a class made on the driver by :meth:`RayplexRLlibCallback.to`.

Example:
    >>> from ray.rllib.algorithms.ppo import PPOConfig  # doctest: +SKIP
    >>> callback = RayplexRLlibCallback.to("/tmp/ppo")  # doctest: +SKIP
    >>> config = PPOConfig().environment("CartPole-v1").callbacks(callback)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from ray.rllib.callbacks.callbacks import RLlibCallback

from rayplex.integrations._common import connect, int_step, numeric_items
from rayplex.logger import Logger, get_logger

_SKIP = frozenset({"config", "training_iteration"})


class RayplexRLlibCallback(RLlibCallback):
    """Logs an RLlib algorithm into a rayplex experiment.

    * ``on_train_result``: every numeric entry of the result (nested keys joined with ``/``) as
      a scalar of client ``<group>/algorithm`` at step ``training_iteration``.
    * ``on_episode_end`` (in each env runner): the episode's return and length go to
      ``store_metrics`` of client ``<group>_env/<worker_index>`` (``<group>_eval/...`` for
      evaluation runners); ``on_sample_end`` closes the window at the env runner's sample round,
      which is the training iteration for synchronous algorithms such as PPO. The summary run
      ``<group>_env/summary`` then holds mean/std/min/max/count over every env runner's episodes.
    * Subclass it and call :meth:`logger` from your own callbacks to log images, videos or text
      of an env runner or of the algorithm.

    Make the class with :meth:`to`; RLlib instantiates it where it needs it.
    """

    hub_name: ClassVar[str] = "default"
    group: ClassVar[str] = "rllib"

    @classmethod
    def to(cls, logdir: str | os.PathLike[str] | None = None, *, hub: str | None = None,
           group: str = "rllib") -> type[RayplexRLlibCallback]:
        """A callback class bound to experiment ``hub`` (started at ``logdir`` if given).

        On the driver: registers group ``<group>`` (normal) and ``<group>_env`` and
        ``<group>_eval`` (indexed, 8 env runners per chart).

        Raises:
            HubNotFoundError: if ``logdir`` is None and no such hub runs.
        """
        handle = connect(logdir, hub)
        (handle.register_normal_group(group)
            .register_indexed_group(f"{group}_env", 8)
            .register_indexed_group(f"{group}_eval", 8))
        # a class made here is pickled by value, so RLlib's env runners get these names
        return type(f"{cls.__name__}_{group}", (cls,), {"hub_name": handle.name, "group": group})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rounds = 0

    def logger(self, env_runner: Any = None) -> Logger:
        """The Logger of ``env_runner`` (``<group>_env/<index>``), or of the algorithm
        (``<group>/algorithm``) when ``env_runner`` is None."""
        if env_runner is None:
            return get_logger(f"{self.group}/algorithm", hub=self.hub_name)
        config = getattr(env_runner, "config", None)
        kind = "eval" if getattr(config, "in_evaluation", False) else "env"
        index = int(getattr(env_runner, "worker_index", 0))
        return get_logger(f"{self.group}_{kind}/{index}", hub=self.hub_name)

    def on_train_result(self, *, algorithm: Any, metrics_logger: Any = None,
                        result: dict[str, Any], **kwargs: Any) -> None:
        step = int_step(result.get("training_iteration"))
        if step is None:
            return
        values = numeric_items(result, skip=_SKIP)
        if values:
            self.logger().add_scalars(values, step=step)

    def on_episode_end(self, *, episode: Any, env_runner: Any = None, **kwargs: Any) -> None:
        if env_runner is None:
            return
        self.logger(env_runner).store_metrics(episode_return=float(episode.get_return()),
                                              episode_len=float(len(episode)))

    def on_sample_end(self, *, env_runner: Any = None, **kwargs: Any) -> None:
        if env_runner is None:
            return
        self._rounds += 1
        self.logger(env_runner).log_metrics_summary(step=self._rounds)
