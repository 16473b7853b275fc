"""Decoding what the hub committed under a logdir, for the hub itself and for every reader: the
params files (``params/<group>/<name>.json``, one JSON object per client) and the scalars of
event files. One codec in one place: :mod:`rayplex.read` and the hub's requests
(:mod:`rayplex.actors.requests`) both call these functions. No Ray needed.

Only regular files are ever opened: a FIFO or device named like an event or params file is
skipped (:func:`is_regular`), so nothing blocks on one.

Example:
    >>> import tempfile, os
    >>> logdir = tempfile.mkdtemp()
    >>> path = params_path(logdir, "agent/3")
    >>> os.makedirs(os.path.dirname(path))
    >>> with open(path, "wb") as f:
    ...     _ = f.write(encode_params({"lr": 0.1}))
    >>> decode_params(path), read_params_tree(os.path.join(logdir, "params"))
    ({'lr': 0.1}, {'agent/3': {'lr': 0.1}})
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayplex.config import MAX_STATE_BYTES
from rayplex.layout import params_path as _params_path
from rayplex.rules import split_client_id
from rayplex.tfrecord import NotRegularFileError, open_regular, read_records, tensorboardx

if TYPE_CHECKING:  # pragma: no cover
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary


def is_regular(path: str | os.PathLike[str]) -> bool:
    """True for a regular file (or a symlink to one); ``stat`` never blocks, unlike ``open``."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


# ----------------------------------------------------------------------------- params


def params_path(logdir: str | os.PathLike[str], client_id: str) -> str:
    """``logdir/params/<group>/<name>.json``, the params file of ``client_id``.

    Raises:
        ValueError, TypeError: if ``client_id`` is not a valid client id.
    """
    group, name = split_client_id(client_id)
    return _params_path(logdir, group, name)


def encode_params(params: dict[str, Any]) -> bytes:
    """The bytes of a params file: indented JSON with sorted keys (``repr`` of anything JSON
    cannot hold), ending with a newline."""
    return (json.dumps(params, indent=2, sort_keys=True, default=repr) + "\n").encode("utf-8")


def decode_params(path: str | os.PathLike[str]) -> dict[str, Any]:
    """One client's params: a JSON object.

    Raises:
        ValueError: naming the file, for anything else (text that is not JSON, another JSON
            value, nesting deeper than Python's json reads, a file that cannot be read).
        NotRegularFileError: if it is not a regular file.
    """
    where = f"params file {os.fspath(path)!r}"
    try:
        with open_regular(path) as file:
            data = json.loads(file.read().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{where} is nested too deeply to read") from None
    except NotRegularFileError:
        raise
    except OSError as exc:
        raise ValueError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where} holds a {type(data).__name__}, not a JSON object")
    return data


def read_params_tree(root: str | os.PathLike[str],
                     errors: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """``{"group/name": params}`` of every params file under ``root`` (``logdir/params``),
    sorted by client id; empty if there is none.

    Args:
        root: The ``params/`` directory.
        errors: If given, a file that cannot be decoded is recorded here as
            ``{client: message}`` and left out instead of raising.

    Raises:
        ValueError: a file cannot be decoded (:func:`decode_params`), unless ``errors`` is given.
    """
    base = Path(root)
    params: dict[str, dict[str, Any]] = {}
    if not base.is_dir():
        return params
    for group_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for path in sorted(group_dir.glob("*.json")):
            if not is_regular(path):
                continue
            client = f"{group_dir.name}/{path.stem}"
            try:
                data = decode_params(path)
            except NotRegularFileError:  # replaced by a FIFO or device since it was listed
                continue
            except ValueError as exc:
                if errors is None:
                    raise
                errors[client] = str(exc)
                continue
            params[client] = data
    return params


# ----------------------------------------------------------------------------- event files


def event_files(tensorboard_dir: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """``{run: [event files in name order]}``; the run is the directory relative to
    ``tensorboard/``.

    Event files directly in ``tensorboard/`` belong to run ``"."``, as TensorBoard names it.
    Only regular files count: a FIFO or device named like an event file is not an event file.
    """
    runs: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(tensorboard_dir):
        dirnames.sort()
        names = sorted(name for name in filenames
                       if "tfevents" in name and is_regular(os.path.join(dirpath, name)))
        if names:
            rel = os.path.relpath(dirpath, tensorboard_dir).replace(os.sep, "/")
            runs[rel] = [Path(dirpath, name) for name in names]
    return runs


def file_events(path: str | os.PathLike[str]) -> Iterator[Event]:
    """Every ``Event`` of one event file, in file order. A torn last record ends the file
    quietly; a record that is intact but not an ``Event`` is skipped, and so is a file that is
    no longer a regular file."""
    from google.protobuf.message import DecodeError

    Event = tensorboardx("proto.event_pb2").Event
    try:
        for payload in read_records(path):
            try:
                event = Event.FromString(payload)
            except DecodeError:
                continue
            yield event
    except NotRegularFileError:  # replaced by a FIFO or device since it was listed
        return


# TensorProto dtypes (tensorflow/core/framework/types.proto) that a scalar may have.
_DT_FLOAT, _DT_DOUBLE, _DT_INT32, _DT_UINT8, _DT_INT16, _DT_INT8 = 1, 2, 3, 4, 5, 6
_DT_INT64, _DT_BOOL, _DT_BFLOAT16, _DT_HALF = 9, 10, 14, 19
_CONTENT_FORMAT = {
    _DT_FLOAT: "<f", _DT_DOUBLE: "<d", _DT_HALF: "<e", _DT_INT32: "<i", _DT_INT64: "<q",
    _DT_INT16: "<h", _DT_INT8: "<b", _DT_UINT8: "<B", _DT_BOOL: "<?",
}


def _tensor_scalar(tensor: Any) -> float | None:
    """The first element of a numeric ``TensorProto`` as a float, or None if it has none."""
    dtype = tensor.dtype
    content = tensor.tensor_content
    if content:
        if dtype == _DT_BFLOAT16:
            return struct.unpack("<f", b"\0\0" + content[:2])[0] if len(content) >= 2 else None
        fmt = _CONTENT_FORMAT.get(dtype)
        if fmt is None or len(content) < struct.calcsize(fmt):
            return None
        return float(struct.unpack_from(fmt, content)[0])
    if dtype == _DT_FLOAT and tensor.float_val:
        return float(tensor.float_val[0])
    if dtype == _DT_DOUBLE and tensor.double_val:
        return float(tensor.double_val[0])
    if dtype == _DT_HALF and tensor.half_val:
        return float(struct.unpack("<e", struct.pack("<H", tensor.half_val[0] & 0xFFFF))[0])
    if dtype == _DT_BFLOAT16 and tensor.half_val:
        return float(struct.unpack("<f", struct.pack("<I", (tensor.half_val[0] & 0xFFFF) << 16))[0])
    if dtype in (_DT_INT32, _DT_INT16, _DT_INT8, _DT_UINT8) and tensor.int_val:
        return float(tensor.int_val[0])
    if dtype == _DT_INT64 and tensor.int64_val:
        return float(tensor.int64_val[0])
    if dtype == _DT_BOOL and tensor.bool_val:
        return float(tensor.bool_val[0])
    return None


_KIND_NAMES = {
    "simple_value": "scalar", "histo": "histogram", "image": "image", "audio": "audio",
    "scalars": "scalar", "histograms": "histogram", "images": "image",
}


def kind_of(value: Summary.Value) -> str:
    """What a ``Summary.Value`` is, in TensorBoard's words (``scalar``, ``histogram``, ``text``...):
    the one rule ``rayplex ls`` shows, whether it reads the event files or the store."""
    kind = value.WhichOneof("value") or "unknown"
    if kind == "tensor" or value.metadata.plugin_data.plugin_name:
        plugin = value.metadata.plugin_data.plugin_name or kind
        return _KIND_NAMES.get(plugin, plugin)
    return _KIND_NAMES.get(kind, kind)


def scalar_of(value: Summary.Value) -> float | None:
    """The scalar held by a ``Summary.Value`` (``simple_value``, or a ``tensor`` of the
    ``scalars`` plugin), or None if it holds something else."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind == "tensor" and value.metadata.plugin_data.plugin_name == "scalars":
        return _tensor_scalar(value.tensor)
    return None


def read_bounded(path: str, limit: int = MAX_STATE_BYTES) -> bytes:
    """The contents of ``path``, refusing a file larger than ``limit`` bytes.

    Raises:
        OSError: if it cannot be read.
        ValueError: if it is larger than ``limit``.
    """
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} is larger than {limit} bytes")
    return data
