"""The rules every rayplex process checks the same way: client ids, tags, keys, steps, log lines.

Workers check at the call site, the hub checks again before it writes anything, the CLI and the
readers use the same functions to find their way: one rule, one place, so what a worker
accepts the hub can always write.

Client ids are ``<group>/<name>``; each part becomes a path component under ``logdir``
(``logs/<group>/<name>.log``, ``artifacts/<group>/<name>/``, ``params/<group>/<name>.json``,
``tensorboard/<group>[/<name>]``), so the rules are about what can always be written there:

* each part is 1-128 ASCII letters, digits, ``_``, ``-`` and ``.``, not starting with ``.`` or
  ``-`` (so never ``.``, ``..``, a hidden file or an option-looking name);
* no group is called ``all.log`` or ``all.log.<anything>`` in any case: those are the combined
  text log and its rotated backups in ``logs/`` (case-insensitively, because a logdir may live
  on a case-insensitive file system);
* names rayplex writes itself are reserved for users (again in any case): the groups
  ``hparams`` (TensorBoard runs ``hparams/<group>/<name>``), ``rayplex`` (the hub's own lines,
  client ``rayplex/hub``) and ``system``, and the client name ``summary`` in every group (the
  run ``tensorboard/<group>/summary`` of ``log_metrics_summary``). Internal callers pass
  ``internal=True`` to skip only this reservation.

Example:
    >>> split_client_id("agent/3")
    ('agent', '3')
    >>> split_client_id("hparams/3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: client id 'hparams/3': group 'hparams' is reserved for rayplex's own use ...
    >>> split_client_id(HUB_CLIENT_ID, internal=True)
    ('rayplex', 'hub')
    >>> check_step(2**63)
    Traceback (most recent call last):
    ...
    ValueError: step 9223372036854775808 is out of range: TensorBoard steps are signed 64-bit integers
"""

from __future__ import annotations

import fnmatch
import hashlib
import numbers
import os
import re

import numpy as np

from rayplex.layout import ALL_LOG as ALL_LOG  # a layout name; group names may not take it
from rayplex.layout import CONTROL_FILE as CONTROL_FILE  # kept importable: tests use it

STEP_MIN = -(2**63)
STEP_MAX = 2**63 - 1

MAX_PART_LENGTH = 128
MAX_TAG_LENGTH = 1024
MAX_LOGGER_NAME_LENGTH = 256

SYSTEM_GROUP = "system"
"""The group of the node buffers' telemetry: run ``system/<node>`` holds a node's figures."""
TELEMETRY_SENDER = "telemetry:"
"""How a node buffer's telemetry batches name their sender: the only batches whose chunks may
use :data:`SYSTEM_GROUP`."""
RESERVED_GROUPS = frozenset({"hparams", "rayplex", SYSTEM_GROUP})
RESERVED_NAMES = frozenset({"summary"})
HUB_CLIENT_ID = "rayplex/hub"
"""The client id of the hub's own text-log lines (internal: users may not take it)."""

_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_NOT_IN_PART = re.compile(r"[^A-Za-z0-9_.\-]")
# RFC 3986's scheme (at least two characters: one letter is a Windows drive) then "://".
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+://")
# C0 and C1 controls (NUL, every line break str.splitlines() knows, ESC ...) and the Unicode
# line/paragraph separators: none of them may appear in one field of a text-log header line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def validate_part(part: object, what: str) -> str:
    """Check one component of a client id (a group or a name) or an experiment name.

    Example:
        >>> validate_part("gpu-0.main", "name")
        'gpu-0.main'

    Raises:
        TypeError: if ``part`` is not a string.
        ValueError: if it is empty, too long, ``.``/``..``, or has characters other than
            letters, digits, ``_``, ``-`` and ``.`` (or starts with ``.`` or ``-``).
    """
    if not isinstance(part, str):
        raise TypeError(f"{what} must be a str, got {type(part).__name__}")
    if not part:
        raise ValueError(f"{what} is empty")
    if len(part) > MAX_PART_LENGTH:
        raise ValueError(f"{what} is {len(part)} characters long; the limit is {MAX_PART_LENGTH}")
    if not _PART.fullmatch(part):
        raise ValueError(
            f"{what} {part!r} is invalid: use letters, digits, '_', '-' and '.', "
            "not starting with '.' or '-'"
        )
    return part


def validate_group_name(group: object, *, internal: bool = False,
                        what: str = "group name") -> str:
    """Check a group name: :func:`validate_part`, not ``all.log*``, not reserved.

    Example:
        >>> validate_group_name("agent")
        'agent'
        >>> validate_group_name("All.Log.2")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: group name 'All.Log.2' is not allowed: logs/all.log and logs/all.log.* ...
        >>> validate_group_name("rayplex", internal=True)
        'rayplex'

    Raises:
        TypeError: if ``group`` is not a string.
        ValueError: if it breaks :func:`validate_part`, is ``all.log`` or ``all.log.<x>`` (in
            any case), or, unless ``internal``, is one of :data:`RESERVED_GROUPS` (in any case).
    """
    validate_part(group, what)
    assert isinstance(group, str)
    folded = group.lower()
    if folded == ALL_LOG or folded.startswith(ALL_LOG + "."):
        raise ValueError(
            f"{what} {group!r} is not allowed: logs/{ALL_LOG} and logs/{ALL_LOG}.* are the "
            "combined text log and its backups"
        )
    if not internal and folded in RESERVED_GROUPS:
        raise ValueError(
            f"{what} {group!r} is reserved for rayplex's own use (reserved groups: "
            f"{', '.join(sorted(RESERVED_GROUPS))}); pick another group name"
        )
    return group


def group_name_for(text: str) -> str:
    """A valid group name for any text, distinct for distinct texts (ML-Logger's prefixes).

    A text that is a valid group name (:func:`validate_group_name`) is its own name. Any other
    text is made valid -- characters other than ASCII letters, digits, ``_``, ``-`` and ``.``
    become ``_``, a leading ``.`` or ``-`` gets a ``_`` before it, the result is cut to 119
    characters -- and always ends in ``-`` and 8 hex digits of the text's SHA-1 (UTF-8), so
    texts that only a replaced or cut character told apart (``实验``/``测试``, ``a!``/``a?``, a
    reserved ``system``/``_system``) keep distinct names.

    Example:
        >>> group_name_for("alice.exp-1")
        'alice.exp-1'
        >>> group_name_for("实验.run1"), group_name_for("测试.run1")
        ('__.run1-8b3b33c4', '__.run1-51f415cb')
    """
    try:
        return validate_group_name(text)
    except ValueError:
        pass
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    body = _NOT_IN_PART.sub("_", text)
    # a suffix makes any reserved name free except all.log.<x>: that needs a '_' before it too
    if not body or body[0] in ".-" or body.lower().startswith(ALL_LOG + "."):
        body = "_" + body
    return validate_group_name(f"{body[:MAX_PART_LENGTH - 1 - len(digest)]}-{digest}")


def local_logdir(logdir: str | os.PathLike[str]) -> str:
    """A logdir as a local path: ``scheme://...`` (``s3://``, ``gs://``, ``file://``,
    ``hdfs://`` ...) is refused here, so such a string never becomes a local directory named
    ``s3:``; ``rayplex.init``, the readers and the CLI resolve a URI first
    (:func:`rayplex.remote.resolve`: object storage) and call this only on what is a path.
    A path with a colon but no ``://`` (``C:\\runs``, ``runs:1/exp``) stays a path, as
    does a one-letter "scheme" (a Windows drive, ``C://runs``).

    Example:
        >>> local_logdir("runs:1/exp")
        'runs:1/exp'
        >>> local_logdir("s3://bucket/exp")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: logdir 's3://bucket/exp' is a URL (object storage), not a local path; ...

    Raises:
        TypeError: if ``logdir`` is not a str or path.
        ValueError: if it starts with ``<scheme>://``.
    """
    if not isinstance(logdir, (str, os.PathLike)):
        raise TypeError(f"logdir must be a path, got {type(logdir).__name__}")
    path = os.fspath(logdir)
    if not isinstance(path, str):
        raise TypeError(f"logdir must be a str path, got {type(path).__name__}")
    if _URL.match(path):
        raise ValueError(
            f"logdir {path!r} is a URL (object storage), not a local path; pass it to "
            "rayplex.init or a reader, which resolve it with pyarrow.fs")
    return path


def validate_client_name(name: object, *, internal: bool = False,
                         what: str = "client name") -> str:
    """Check the name part of a client id: :func:`validate_part`, and not reserved.

    Example:
        >>> validate_client_name("Summary")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: client name 'Summary' is reserved: run <group>/summary holds ...

    Raises:
        TypeError: if ``name`` is not a string.
        ValueError: if it breaks :func:`validate_part` or, unless ``internal``, is one of
            :data:`RESERVED_NAMES` (in any case).
    """
    validate_part(name, what)
    assert isinstance(name, str)
    if not internal and name.lower() in RESERVED_NAMES:
        raise ValueError(
            f"{what} {name!r} is reserved: run <group>/summary holds the group's "
            "log_metrics_summary statistics; pick another name"
        )
    return name


def split_client_id(client_id: object, *, internal: bool = False) -> tuple[str, str]:
    """Split ``"<group>/<name>"`` into its validated parts.

    Users' ids are checked strictly; ``internal=True`` is for rayplex's own writers (the hub's
    text-log lines as :data:`HUB_CLIENT_ID`, the text-log writer itself): it skips only the
    reservation of :data:`RESERVED_GROUPS` and :data:`RESERVED_NAMES`, never a rule that keeps
    the id writable.

    Example:
        >>> split_client_id("agent/3")
        ('agent', '3')
        >>> split_client_id("agent/summary")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: client id 'agent/summary': name 'summary' is reserved: ...

    Raises:
        TypeError: if ``client_id`` is not a string.
        ValueError: if it is not exactly ``<group>/<name>`` with valid parts, or (unless
            ``internal``) uses a reserved group or name.
    """
    if not isinstance(client_id, str):
        raise TypeError(f"client id must be a str like 'agent/3', got {type(client_id).__name__}")
    parts = client_id.split("/")
    if len(parts) != 2:
        raise ValueError(
            f"client id {client_id!r} must have the form '<group>/<name>' with exactly one '/'"
        )
    group, name = parts
    validate_group_name(group, internal=internal, what=f"client id {client_id!r}: group")
    validate_client_name(name, internal=internal, what=f"client id {client_id!r}: name")
    return group, name


def validate_tag(tag: object) -> str:
    """Check a user's tag (``"reward"``, ``".section/loss"``, ``"a:b#c"``).

    Example:
        >>> validate_tag(".section/loss")
        '.section/loss'

    Raises:
        TypeError: if ``tag`` is not a string.
        ValueError: if it is empty, too long, or contains NUL or a line break.
    """
    if not isinstance(tag, str):
        raise TypeError(f"tag must be a str, got {type(tag).__name__}")
    if not tag or tag in ("/", "."):
        raise ValueError(f"tag {tag!r} is empty")
    if len(tag) > MAX_TAG_LENGTH:
        raise ValueError(f"tag is {len(tag)} characters long; the limit is {MAX_TAG_LENGTH}")
    if "\x00" in tag or "\n" in tag or "\r" in tag:
        raise ValueError(f"tag {tag!r} contains NUL or a line break")
    return tag


def validate_metric_key(key: object) -> str:
    """Check a ``store_metrics`` key with :func:`validate_tag`, since the key becomes a tag.

    >>> validate_metric_key("reward")
    'reward'
    """
    return validate_tag(key)


def check_step(step: object) -> int:
    """A step as an int in TensorBoard's signed 64-bit range (integral floats are accepted).

    Example:
        >>> check_step(3), check_step(4.0), check_step(-(2**63))
        (3, 4, -9223372036854775808)
        >>> check_step(2**64 + 5)
        Traceback (most recent call last):
        ...
        ValueError: step 18446744073709551621 is out of range: TensorBoard steps are signed 64-bit integers

    Raises:
        TypeError: if ``step`` is not an integer.
        ValueError: if it is outside ``[-2**63, 2**63 - 1]``.
    """
    if type(step) is not int:
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            if isinstance(step, float) and step.is_integer():
                step = int(step)
            else:
                raise TypeError(f"step must be an int, got {type(step).__name__} ({step!r:.40})")
        step = int(step)
    if not STEP_MIN <= step <= STEP_MAX:
        raise ValueError(
            f"step {step} is out of range: TensorBoard steps are signed 64-bit integers"
        )
    return step


_NOT_NUMBERS = (str, bytes, bytearray, complex)


def to_float(value: object, what: str) -> float:
    """One logged number as a float: the one coercion of scalars, metrics and HParams metrics.

    Accepts any real number: Python's (``bool`` counts as 0/1), numpy scalars, 0-d and
    one-element numpy arrays of bool/int/float, and anything else that converts with
    ``float()`` and is not text or complex (scalar tensors of torch or jax, ``Decimal``).
    NaN and infinities pass through. Callers on a hot path test ``type(value) is float``
    first and skip the call.

    Args:
        value: The number.
        what: What it is, for the error message, e.g. ``"value for tag 'loss'"``.

    Returns:
        The value as a Python float.

    Raises:
        TypeError: naming ``what`` and the type, for anything else (text, ``None``, complex,
            a list, an array of several elements or of another dtype).

    Example:
        >>> to_float(3, "x"), to_float(np.float32(0.5), "x"), to_float(np.array([2]), "x")
        (3.0, 0.5, 2.0)
        >>> to_float("0.5", "value for tag 'loss'")
        Traceback (most recent call last):
        ...
        TypeError: value for tag 'loss' must be a real number, got str ('0.5')
    """
    if isinstance(value, (float, int, numbers.Real)):
        return float(value)  # also numpy's ints and floats, Fraction
    if isinstance(value, (np.ndarray, np.generic)):  # np.bool_, 0-d and one-element arrays
        if value.size == 1 and value.dtype.kind in "biuf":
            return float(value.reshape(()))
    elif not isinstance(value, _NOT_NUMBERS) and hasattr(value, "__float__"):
        try:  # torch / jax scalar tensors, Decimal
            return float(value)
        except (TypeError, ValueError, RuntimeError):
            pass
    raise TypeError(f"{what} must be a real number, got {type(value).__name__} ({value!r:.80})")


def validate_logger_name(name: object) -> str:
    """Check the ``logger=`` name of a text-log line (``"rayplex"``, ``"my_lib.io"``).

    It becomes one field of the line's header, so it must stay on one line.

    Example:
        >>> validate_logger_name("my_lib.io")
        'my_lib.io'
        >>> validate_logger_name("a\\nb")
        Traceback (most recent call last):
        ...
        ValueError: logger name 'a\\nb' contains a control character or line break

    Raises:
        TypeError: if ``name`` is not a string.
        ValueError: if it is empty, longer than :data:`MAX_LOGGER_NAME_LENGTH`, or contains a
            control character (NUL, a line break, ESC, ...).
    """
    if not isinstance(name, str):
        raise TypeError(f"logger name must be a str, got {type(name).__name__} ({name!r:.60})")
    if not name:
        raise ValueError("logger name is empty")
    if len(name) > MAX_LOGGER_NAME_LENGTH:
        raise ValueError(
            f"logger name is {len(name)} characters long; the limit is {MAX_LOGGER_NAME_LENGTH}"
        )
    if _CONTROL.search(name):
        raise ValueError(f"logger name {name!r:.80} contains a control character or line break")
    return name


def validate_log_line(line: object) -> None:
    """Check one text-log line as it travels to the hub (``textlog.LogLine`` or its 8-tuple).

    Workers build lines that always pass; the hub's writer checks every line with this before
    it writes anything, so one bad line can never be half-written. Client ids are checked with
    ``internal=True`` (the hub writes its own lines as :data:`HUB_CLIENT_ID`).

    Example:
        >>> validate_log_line((1.5, 20, "agent/3", "1a2b3c4d", 42, "my_lib", "hi", None))
        >>> validate_log_line((1.5, 20, "agent/3", "1a2b3c4d", 42, 7, "hi", None))
        Traceback (most recent call last):
        ...
        ValueError: bad text-log line from 'agent/3': logger name must be a str, got int (7)

    Raises:
        ValueError: naming the field, for anything else than ``(time: real, level: int,
            client: client id, node: str, pid: int, logger: logger name, message: str,
            exc_text: str | None)``.
    """
    if not isinstance(line, tuple) or len(line) != 8:
        raise ValueError(
            f"bad text-log line: expected an 8-tuple (time, level, client, node, pid, logger, "
            f"message, exc_text), got {type(line).__name__} ({line!r:.80})"
        )
    timestamp, level, client, node, pid, logger, message, exc_text = line
    try:
        split_client_id(client, internal=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad text-log line: {exc}") from None
    problem = None
    if isinstance(timestamp, bool) or not isinstance(timestamp, numbers.Real):
        problem = f"time must be a number, got {type(timestamp).__name__}"
    elif isinstance(level, bool) or not isinstance(level, int):
        problem = f"level must be an int, got {type(level).__name__}"
    elif not isinstance(node, str):
        problem = f"node must be a str, got {type(node).__name__}"
    elif isinstance(pid, bool) or not isinstance(pid, int):
        problem = f"pid must be an int, got {type(pid).__name__}"
    elif not isinstance(message, str):
        problem = f"message must be a str, got {type(message).__name__}"
    elif exc_text is not None and not isinstance(exc_text, str):
        problem = f"exc_text must be a str or None, got {type(exc_text).__name__}"
    else:
        try:
            validate_logger_name(logger)
        except (TypeError, ValueError) as exc:
            problem = str(exc)
    if problem is not None:
        raise ValueError(f"bad text-log line from {client!r}: {problem}")


# ------------------------------------------------------------------- heartbeats and signals


_SIGNAL = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def check_client_id(client: object) -> str:
    """``client`` if it is a valid client id ``<group>/<name>`` of any group, registered or
    not (what ``ping`` and ``signal`` name); see :func:`split_client_id`.

    Example:
        >>> check_client_id("agent/3")
        'agent/3'

    Raises:
        TypeError: if ``client`` is not a str.
        ValueError: if it is not a valid client id.
    """
    if not isinstance(client, str):
        raise TypeError(f"a client id is a str such as 'agent/3', got {type(client).__name__}")
    split_client_id(client)
    return client


def check_signal(sig: object) -> str:
    """A signal name (``hub.signal(client, sig)``): 1-64 letters, digits, ``_ . -``.

    Example:
        >>> check_signal("stop")
        'stop'

    Raises:
        TypeError: if ``sig`` is not a str.
        ValueError: for any other string (the message shows it).
    """
    if not isinstance(sig, str):
        raise TypeError(f"a signal is a str such as 'stop' or 'pause', got {type(sig).__name__}")
    if not _SIGNAL.fullmatch(sig):
        raise ValueError(f"a signal is 1-64 letters, digits, '_', '.' or '-', got {sig!r}")
    return sig


def match_clients(clients: list[str], patterns: list[str]) -> list[str]:
    """The client ids matching any :mod:`fnmatch` pattern, sorted.

    Example:
        >>> match_clients(["agent/1", "agent/2", "learner/main"], ["agent/*"])
        ['agent/1', 'agent/2']
    """
    return sorted(c for c in clients if any(fnmatch.fnmatchcase(c, p) for p in patterns))


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digit runs by value: ``agent/2`` before ``agent/10``, ``8-15``
    before ``16-23``.

    Example:
        >>> sorted(["agent/10", "agent/2", "agent/reward/16-23", "agent/reward/8-15"], key=natural_key)
        ['agent/2', 'agent/10', 'agent/reward/8-15', 'agent/reward/16-23']
    """
    return tuple((0, int(part)) if part.isdigit() else (1, part)
                 for part in re.split(r"(\d+)", text) if part)
