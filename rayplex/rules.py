"""The rules every rayplex process checks the same way: client ids, tags, metric keys, steps.

Workers check at the call site, the hub checks again before it writes anything, the CLI and the
readers use the same functions to find their way: one rule, one place, so what a worker
accepts the hub can always write.

Example:
    >>> split_client_id("agent/3")
    ('agent', '3')
    >>> check_step(2**63)
    Traceback (most recent call last):
    ...
    ValueError: step 9223372036854775808 is out of range: TensorBoard steps are signed 64-bit integers
"""

from __future__ import annotations

import numbers
import re

STEP_MIN = -(2**63)
STEP_MAX = 2**63 - 1

_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
MAX_PART_LENGTH = 128
MAX_TAG_LENGTH = 1024


def validate_part(part: object, what: str) -> str:
    """Check one component of a client id (a group or a name).

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
    if not _PART.fullmatch(part) or part in (".", ".."):
        raise ValueError(
            f"{what} {part!r} is invalid: use letters, digits, '_', '-' and '.', "
            "not starting with '.' or '-'"
        )
    return part


def split_client_id(client_id: object) -> tuple[str, str]:
    """Split ``"<group>/<name>"`` into its validated parts.

    Example:
        >>> split_client_id("agent/3")
        ('agent', '3')

    Raises:
        TypeError: if ``client_id`` is not a string.
        ValueError: if it is not exactly ``<group>/<name>`` with valid parts.
    """
    if not isinstance(client_id, str):
        raise TypeError(f"client id must be a str like 'agent/3', got {type(client_id).__name__}")
    parts = client_id.split("/")
    if len(parts) != 2:
        raise ValueError(
            f"client id {client_id!r} must have the form '<group>/<name>' with exactly one '/'"
        )
    group, name = parts
    validate_part(group, f"group of client id {client_id!r}")
    validate_part(name, f"name of client id {client_id!r}")
    return group, name


def validate_tag(tag: object) -> str:
    """Check a user's tag (``"reward"``, ``".section/loss"``, ``"a:b#c"``).

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
    """Check a ``store_metrics`` key: the same rules as a tag, since it becomes one.

    Raises:
        TypeError: if ``key`` is not a string.
        ValueError: if it is empty, too long, or contains NUL or a line break.
    """
    return validate_tag(key)


def check_step(step: object) -> int:
    """A step as an int in TensorBoard's signed 64-bit range (integral floats are accepted).

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
        step = int(step)  # type: ignore[call-overload]
    if not STEP_MIN <= step <= STEP_MAX:
        raise ValueError(
            f"step {step} is out of range: TensorBoard steps are signed 64-bit integers"
        )
    return step
