"""The hub's request/response operations (artifacts, params, heartbeats, embeddings, scalars):
one class per request method, its ``apply`` and its ``replay`` side by side, and the table of
them (:data:`REQUESTS`) that :meth:`rayplex.actors.hub.Hub.request` dispatches on.

Exactly once: Ray calls an actor method again after the hub restarts, with the same request
id. ``apply`` runs once per request id and records it as applied through
:class:`~rayplex.actors.writer.HubWriter` (the only client of the journal), in the same
journalled transaction as its write where the write is an append; a request id already applied
is answered by ``replay``, which writes nothing. A request without ``replay`` is either never
recorded (it only reads, or is idempotent by itself, as ``ping`` with its token) or answered
``None``. A move, or a copy that refuses an existing target, journals an *intent* first, so that
its replay after the hub died between the rename and the record is answered as applied.

Plain objects, no Ray: ``RequestContext(writer, artifacts, control, registry)`` is all a request
needs (tests/test_requests.py).

Example:
    >>> import tempfile
    >>> from rayplex.actors.control import ControlBook
    >>> from rayplex.actors.writer import HubWriter
    >>> from rayplex.artifacts import ArtifactStore
    >>> from rayplex.groups import GroupRegistry
    >>> writer = HubWriter(tempfile.mkdtemp())
    >>> ctx = RequestContext(writer, ArtifactStore(writer.logdir + "/artifacts"),
    ...                      ControlBook(None), lambda: GroupRegistry(epoch="e"))
    >>> SaveParams.apply(ctx, "req-1", "agent/3", {"lr": 0.1})
    {'lr': 0.1}
    >>> SaveParams.replay(ctx, "agent/3", {"lr": 0.5})  # applied before: answered, not merged
    {'lr': 0.1}
    >>> writer.close()
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from rayplex import projector
from rayplex.actors.control import ControlBook
from rayplex.actors.writer import HubWriter, check_run
from rayplex.artifacts import ArtifactStore
from rayplex.errors import CALLER_ERRORS
from rayplex.groups import GroupRegistry
from rayplex.layout import RESERVED_TREES, params_dir
from rayplex.logdir_codec import (
    decode_params,
    encode_params,
    event_files,
    file_events,
    params_path,
    read_params_tree,
    scalar_of,
)
from rayplex.nested import deep_merge
from rayplex.rules import check_client_id, match_clients, split_client_id, validate_part


@dataclass
class RequestContext:
    """What a request may touch: the hub's writer (the journal and every file outside the
    artifact store go through it), its artifact store, its heartbeats and signals, and its
    current group registry."""

    writer: HubWriter
    artifacts: ArtifactStore
    control: ControlBook
    registry: Callable[[], GroupRegistry]
    senders: Callable[[str, dict[str, int], list[str], dict[str, int]], None] | None = None
    """Where a node buffer's report on its processes goes (the hub's watch rules)."""


class Request:
    """One request method. ``apply(ctx, request_id, *args)`` applies it (once per request id);
    ``replay(ctx, *args)``, if any, answers a request id applied before without applying it
    again. A ``query`` only reads: no writer lock, no request id remembered."""

    query: ClassVar[bool] = False
    apply: ClassVar[Callable[..., Any]]
    replay: ClassVar[Callable[..., Any] | None] = None


def answer(request: type[Request], ctx: RequestContext, request_id: str,
           args: tuple[Any, ...]) -> tuple[bool, Any]:
    """``(True, result)`` of applying one request, or ``(False, (kind, text))`` for an error
    the caller made (or an OSError), raised again at the call site
    (:func:`rayplex.errors.request_error`)."""
    try:
        return True, request.apply(ctx, request_id, *args)
    except CALLER_ERRORS as exc:
        return False, (type(exc).__name__, str(exc))
    except OSError as exc:
        return False, ("OSError", f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------- artifacts


class SaveArtifact(Request):
    @staticmethod
    def apply(ctx: RequestContext, request_id: str, rel: str, data: bytes, append: bool = False) -> str:
        """Replace an artifact atomically, or append one framed chunk (``append=True``)."""
        if append:
            return os.fspath(ctx.writer.append_request(
                request_id, _path(ctx, rel), lambda: ctx.artifacts.append_chunk(rel, data)))
        path = ctx.artifacts.write_bytes(rel, data)
        ctx.writer.commit_request(request_id)
        return os.fspath(path)

    @staticmethod
    def replay(ctx: RequestContext, rel: str, data: bytes, append: bool = False) -> str:
        return _path(ctx, rel)


class LoadArtifact(Request):
    @staticmethod
    def apply(ctx: RequestContext, request_id: str, rel: str) -> bytes:
        return ctx.artifacts.read_bytes(rel)

    @staticmethod
    def replay(ctx: RequestContext, rel: str) -> bytes:
        return ctx.artifacts.read_bytes(rel)


class AppendArtifact(Request):
    @staticmethod
    def apply(ctx: RequestContext, request_id: str, rel: str, data: bytes) -> str:
        """Append raw bytes (JSON lines, ``error.log``) as one journalled transaction."""
        return os.fspath(ctx.writer.append_request(
            request_id, _path(ctx, rel), lambda: ctx.artifacts.append_bytes(rel, data)))

    @staticmethod
    def replay(ctx: RequestContext, rel: str, data: bytes) -> str:
        return _path(ctx, rel)


class AppendChunks(Request):
    @staticmethod
    def apply(ctx: RequestContext, request_id: str, rel: str, chunks: list[bytes]) -> str:
        """Append several framed chunks (rows of a pickle file) as one journalled transaction."""
        if not isinstance(chunks, list) or not all(isinstance(c, bytes) for c in chunks):
            raise TypeError("chunks must be a list of bytes")
        return os.fspath(ctx.writer.append_request(
            request_id, _path(ctx, rel), lambda: ctx.artifacts.append_chunks(rel, chunks)))

    @staticmethod
    def replay(ctx: RequestContext, rel: str, chunks: list[bytes]) -> str:
        return _path(ctx, rel)


class RemoveArtifacts(Request):
    @staticmethod
    def apply(ctx: RequestContext, request_id: str, base: str, paths: list[str]) -> list[str]:
        """Remove files or directories below the client directory ``base``: ``""`` is all of
        it, a path with ``*`` a glob. Returns the paths removed, relative to ``base``."""
        targets: list[str] = []
        for path in paths:
            if path in ("", "."):
                targets.append("")
            elif "*" in path:
                targets.extend(ctx.artifacts.glob(path, wd=base))
            else:
                targets.append(path)
        removed = [t for t in dict.fromkeys(targets)
                   if ctx.artifacts.remove(f"{base}/{t}" if t else base)]
        ctx.writer.commit_request(request_id)
        return removed

    @staticmethod
    def replay(ctx: RequestContext, base: str, paths: list[str]) -> list[str]:
        return []


class MoveArtifact(Request):
    @staticmethod
    def apply(ctx: RequestContext, request_id: str, src: str, to: str) -> str:
        """A move, journalled as an intent first: a replay after the hub died between the
        rename and recording the request finds the source gone and the target in place, and
        is answered as applied (not ``FileNotFoundError``)."""
        done = ctx.writer.intent(request_id)
        if (done is None or os.path.lexists(ctx.artifacts.resolve(src))
                or not os.path.lexists(done)):
            ctx.writer.intend(request_id, os.fspath(ctx.artifacts.move_target(src, to)))
            done = os.fspath(_forget_intent_on_error(ctx, request_id, ctx.artifacts.move, src, to))
        ctx.writer.commit_request(request_id)
        return done

    @staticmethod
    def replay(ctx: RequestContext, src: str, to: str) -> str:
        return _path(ctx, to)


class DuplicateArtifact(Request):
    @staticmethod
    def apply(ctx: RequestContext, request_id: str, src: str, to: str, exists_ok: bool) -> str:
        """A copy; one that refuses an existing directory is journalled as an intent first,
        so that its replay after the hub died is answered as applied (a copy that may replace
        or merge is simply made again)."""
        target = _path(ctx, to)
        replayed = (not exists_ok and ctx.writer.intent(request_id) == target
                    and os.path.lexists(target))
        if not replayed:
            if not exists_ok:
                ctx.writer.intend(request_id, target)
            _forget_intent_on_error(ctx, request_id, ctx.artifacts.duplicate, src, to, exists_ok)
        ctx.writer.commit_request(request_id)
        return target

    @staticmethod
    def replay(ctx: RequestContext, src: str, to: str, exists_ok: bool) -> str:
        return _path(ctx, to)


class GlobArtifacts(Request):
    query = True

    @staticmethod
    def apply(ctx: RequestContext, request_id: str, pattern: str, wd: str) -> list[str]:
        return ctx.artifacts.glob(pattern, wd)


def _path(ctx: RequestContext, rel: str) -> str:
    return os.fspath(ctx.artifacts.resolve(rel))


def _forget_intent_on_error(ctx: RequestContext, request_id: str,
                            op: Callable[..., os.PathLike[str]], *args: Any) -> os.PathLike[str]:
    try:
        return op(*args)
    except Exception:  # refused (the user's error): nothing to answer on a replay
        ctx.writer.forget_intent(request_id)
        raise


# -------------------------------------------------------------------------- params, control


class SaveParams(Request):
    @staticmethod
    def apply(ctx: RequestContext, request_id: str, client_id: str,
              params: dict[str, Any]) -> dict[str, Any]:
        """Merge ``params`` into ``params/<group>/<name>.json`` (a replay merges the same
        values again: idempotent); return the merged object."""
        merged = _stored_params(ctx, client_id)
        merged = deep_merge(merged, params)
        ctx.writer.replace_file(params_path(ctx.writer.logdir, client_id), encode_params(merged))
        ctx.writer.commit_request(request_id)
        return merged

    @staticmethod
    def replay(ctx: RequestContext, client_id: str, params: dict[str, Any]) -> dict[str, Any]:
        return _stored_params(ctx, client_id)


def _stored_params(ctx: RequestContext, client_id: str) -> dict[str, Any]:
    """What ``params/<group>/<name>.json`` holds (empty if nothing was stored)."""
    path = params_path(ctx.writer.logdir, client_id)
    return decode_params(path) if os.path.isfile(path) else {}


class ReadExperiments(Request):
    @staticmethod
    def apply(ctx: RequestContext, request_id: str, patterns: list[str]
              ) -> dict[str, tuple[dict[str, Any], dict[str, Any] | None]]:
        """``{client: (params, last heartbeat)}`` of the clients matching a pattern."""
        params = read_params_tree(params_dir(ctx.writer.logdir))
        beats = ctx.control.heartbeats
        return {c: (params.get(c, {}), beats.get(c))
                for c in match_clients(sorted(set(params) | set(beats)), list(patterns))}


class Ping(Request):
    @staticmethod
    def apply(ctx: RequestContext, request_id: str, client: str, status: str, token: str,
              info: dict[str, Any]) -> list[str]:
        """A heartbeat: remember it, answer the client's pending signals (once per token, so
        that Ray's replay gets the same answer without the request id being recorded)."""
        return ctx.control.ping(check_client_id(client), status, token, info, time.time())


class NodeSenders(Request):
    @staticmethod
    def apply(ctx: RequestContext, request_id: str, node: str, new: dict[str, int],
              closed: list[str], gone: dict[str, int]) -> None:
        """A node buffer's report: the processes that started logging through it
        (``{sender: pid}``), closed their session, or vanished without closing it (the
        ``crashed`` watch rule). Idempotent: a replay reports the same again."""
        if not (isinstance(node, str) and isinstance(new, dict) and isinstance(closed, list)
                and isinstance(gone, dict)):
            raise TypeError("node_senders takes (node, {sender: pid}, [sender], {sender: pid})")
        if ctx.senders is not None:
            ctx.senders(node, new, closed, gone)


# ---------------------------------------------------------------- embeddings, scalars, export


class SaveEmbedding(Request):
    @staticmethod
    def apply(ctx: RequestContext, request_id: str, client_id: str, stamp: Any, run: str,
              embedding: Any) -> dict[str, Any]:
        """Write one embedding's files into ``tensorboard/<run>/<step>/<tag>/`` and its entry
        into the run's ``projector_config.pbtxt`` (each file replaced atomically)."""
        stale = _stale_route(ctx, client_id, stamp, run)
        if stale is not None:
            return {"stale": stale}
        emb = projector.check_embedding(embedding)
        root = ctx.writer.tensorboard_dir
        run_dir = _confined(root, run)
        target = _confined(root, run, emb.subdir)
        os.makedirs(target, exist_ok=True)
        _confined(root, run, emb.subdir)  # again, now that it exists
        for name, data in emb.files.items():
            ctx.writer.replace_file(os.path.join(target, name), data)
        config_path = os.path.join(run_dir, projector.CONFIG_FILE)
        existing = ""
        if os.path.isfile(config_path):
            with open(config_path, encoding="utf-8") as f:
                existing = f.read()
        ctx.writer.replace_file(config_path,
                                projector.merge_config(existing, emb).encode("utf-8"))
        ctx.writer.ensure_event_file(run)  # TensorBoard lists only runs with an event file
        ctx.writer.commit_request(request_id)
        return {"path": target}

    @staticmethod
    def replay(ctx: RequestContext, client_id: str, stamp: Any, run: str,
               embedding: Any) -> dict[str, Any]:
        return {"path": os.path.join(ctx.writer.tensorboard_dir, run, embedding.subdir)}


class ClientScalars(Request):
    @staticmethod
    def apply(ctx: RequestContext, request_id: str, client_id: str, stamp: Any, run: str,
              prefix: str | None) -> dict[str, Any]:
        """One client's scalars (read only): its run, and in a shared run only the tags under
        its ``prefix``."""
        stale = _stale_route(ctx, client_id, stamp, run)
        if stale is not None:
            return {"stale": stale}
        tags = _scalar_rows(ctx, run).get(run, {})
        if prefix is not None:
            tags = {t: v for t, v in tags.items() if t.startswith((prefix + "/", prefix + "."))}
        return {"scalars": tags}


class ExportJson(Request):
    @staticmethod
    def apply(ctx: RequestContext, request_id: str, json_dir: str) -> list[str]:
        """Tensorplex's ``export_json``: every run's scalars as ``<json_dir>/<run with / as
        .>.json`` under the logdir."""
        if not isinstance(json_dir, str) or not json_dir.rstrip("/") or json_dir[0] in "/\\":
            raise ValueError(f"json_dir must be a relative directory name, got {json_dir!r}")
        parts = [validate_part(p, f"part of json_dir {json_dir!r}") for p in
                 json_dir.rstrip("/").split("/")]
        if parts[0] in RESERVED_TREES:
            raise ValueError(f"json_dir {json_dir!r} is inside rayplex's own {parts[0]}/ tree")
        target = _confined(ctx.writer.logdir, *parts)
        os.makedirs(target, exist_ok=True)
        paths = []
        for run, tags in sorted(_scalar_rows(ctx).items()):
            path = os.path.join(target, run.replace("/", ".") + ".json")
            ctx.writer.replace_file(path, json.dumps(tags).encode("utf-8"))
            paths.append(path)
        ctx.writer.commit_request(request_id)
        return paths

    @staticmethod
    def replay(ctx: RequestContext, json_dir: str) -> list[str]:
        return []


def _stale_route(ctx: RequestContext, client_id: str, stamp: Any, run: str) -> GroupRegistry | None:
    """The current registry if the sender routed ``client_id`` with another one (it routes
    again and resends: the hub never routes); else check that ``run`` is in its group."""
    registry = ctx.registry()
    if tuple(stamp) != registry.stamp:
        return registry
    check_run(run, split_client_id(client_id)[0])
    return None


def _confined(root: str, *parts: str) -> str:
    """``root/parts...`` resolved, refused if it leaves ``root`` (also through a link)."""
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, *parts))
    if path != base and not path.startswith(base + os.sep):
        raise ValueError(f"{'/'.join(parts)!r} resolves outside {root!r}")
    return path


def _scalar_rows(ctx: RequestContext, run: str | None = None) -> dict[str, dict[str, list[list[float]]]]:
    """``{run: {tag: [[wall_time, step, value], ...]}}`` as committed so far, each tag's points
    in ``(step, wall_time)`` order (as :func:`rayplex.read.read_scalars` sorts them)."""
    ctx.writer.flush()
    out: dict[str, dict[str, list[list[float]]]] = {}
    for name, paths in sorted(event_files(ctx.writer.tensorboard_dir).items()):
        if run is not None and name != run:
            continue
        tags = out.setdefault(name, {})
        for path in paths:
            for event in file_events(path):
                for value in event.summary.value:
                    scalar = scalar_of(value)
                    if scalar is not None:
                        tags.setdefault(value.tag, []).append([event.wall_time, event.step,
                                                               scalar])
    return {name: {tag: sorted(points, key=lambda p: (p[1], p[0]))
                   for tag, points in sorted(tags.items())}
            for name, tags in out.items() if tags}


REQUESTS: dict[str, type[Request]] = {
    "save_artifact": SaveArtifact,
    "load_artifact": LoadArtifact,
    "save_params": SaveParams,
    "append_artifact": AppendArtifact,
    "append_chunks": AppendChunks,
    "remove_artifacts": RemoveArtifacts,
    "move_artifact": MoveArtifact,
    "duplicate_artifact": DuplicateArtifact,
    "glob_artifacts": GlobArtifacts,
    "read_experiments": ReadExperiments,
    "ping": Ping,
    "node_senders": NodeSenders,
    "save_embedding": SaveEmbedding,
    "client_scalars": ClientScalars,
    "export_json": ExportJson,
}
"""Every request the hub answers, by the method name the worker sends."""

QUERIES = frozenset(name for name, request in REQUESTS.items() if request.query)
"""Requests that only read the artifact store: no writer lock, no request id to remember."""

