"""TensorBoard projector embeddings and JSON export on :class:`rayplex.Logger`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rayplex import projector
from rayplex.atomic import atomic_write_bytes
from rayplex.config import PROJECTOR_ROUTE_TRIES
from rayplex.errors import RayplexError
from rayplex.groups import Route
from rayplex.rules import check_step, validate_tag

if TYPE_CHECKING:
    from rayplex.session import Session



class ProjectorMixin:
    """``add_embedding`` and ``export_json``."""

    if TYPE_CHECKING:
        client_id: str
        _session: Session

        def flush(self, timeout: float | None = None) -> None: ...

    def _routed_call(self, method: str, args: Callable[[Route], tuple[Any, ...]]) -> Any:
        """A hub request that depends on this client's route: routed here with the registry
        this process holds; if the hub's is newer it answers with it and we route again."""
        encoder = self._session.encoder
        for _ in range(PROJECTOR_ROUTE_TRIES):
            registry = encoder.registry
            route = registry.route(self.client_id)
            answer = self._session.call(method, self.client_id, registry.stamp, route.run,
                                    *args(route))
            if isinstance(answer, dict) and "stale" in answer:
                encoder.adopt(answer["stale"])
                continue
            return answer
        raise RayplexError(f"{method}: the groups of experiment {self._session.hub_name!r} kept "
                           "changing while routing; try again")

    def add_embedding(self, mat: Any, metadata: Sequence[Any] | None = None,
                      label_img: Any = None, global_step: int | None = None,
                      tag: str = "default",
                      metadata_header: Sequence[Any] | None = None) -> str:
        """Store points for TensorBoard's projector (the PROJECTOR tab), as tensorboardX does.

        The files go to ``tensorboard/<run>/<step:05d>/<tag>/`` (``tensors.tsv``, and
        ``metadata.tsv``, ``sprite.png`` when given) with an entry in the run's
        ``projector_config.pbtxt`` named ``<tag>:<step:05d>``, where run and tag are this
        client's (``system/default`` for ``learner/system``). Built here, written by the hub
        once, each file atomically; the same tag and step again replace the entry.

        Args:
            mat: N×D numbers (one row per point; numpy, torch or nested lists).
            metadata: N labels, or N rows of columns with ``metadata_header``.
            label_img: N thumbnails, N×C×H×W (C 1, 3 or 4; H == W; uint8 or floats in
                [0, 1]) or N×H×W.
            global_step: The step; ``None`` is 0, as in tensorboardX.
            tag: The embedding's name.
            metadata_header: Column names of ``metadata``.

        Returns:
            The embedding's directory on the hub's machine.

        Example:
            >>> log.add_embedding(np.random.randn(100, 8), metadata=list(range(100)))  # doctest: +SKIP

        Raises:
            TypeError: if ``mat`` or a label is not of a usable type.
            ValueError: for shapes that do not fit (mat not 2-D, labels or images not one per
                point, thumbnails not square), a negative step or a bad tag.
        """
        validate_tag(tag)
        step = 0 if global_step is None else check_step(global_step)
        if step < 0:
            raise ValueError(f"add_embedding: global_step must be >= 0, got {step}")
        built = projector.build_embedding(mat, metadata, label_img, step, tag, metadata_header)
        answer = self._routed_call("save_embedding",
                                   lambda route: (built.named(route.tag(tag), step),))
        return str(answer["path"])

    def _own_scalars(self) -> dict[str, list[list[float]]]:
        """Everything this client logged as scalars, as written at the hub after a flush:
        ``{TensorBoard tag: [[wall_time, step, value], ...]}`` (in a normal group's shared run
        only the tags under this client's name)."""
        self.flush()
        # a normal group's run is the group itself, shared: keep only this client's prefix
        answer = self._routed_call(
            "client_scalars", lambda route: (route.prefix if "/" not in route.run else None,))
        return dict(answer["scalars"])

    def export_json(self, path: str | os.PathLike[str]) -> str:
        """Write this client's scalars to the JSON file ``path`` (on this machine), in the
        format of tensorboardX's ``export_scalars_to_json``: ``{tag: [[wall_time, step, value],
        ...]}``, keyed by the TensorBoard tag. Flushes first; the file is replaced atomically.

        Example:
            >>> log.export_json("/tmp/learner_main.json")  # doctest: +SKIP
            '/tmp/learner_main.json'

        Returns:
            The path written.

        Raises:
            OSError: if the file cannot be written.
        """
        target = os.path.expanduser(os.fspath(path))
        atomic_write_bytes(target, json.dumps(self._own_scalars()).encode("utf-8"))
        return target
