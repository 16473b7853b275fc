"""Acting on many open files at once: one failing file (a full disk, a lost mount) must not
leave the others unflushed or open, and its error must still reach the caller."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

_T = TypeVar("_T")


def apply_to_all(action: Callable[[_T], object], files: Iterable[_T]) -> None:
    """Call ``action`` on every one of ``files``, also after it raised OSError for one.

    ``files`` is consumed lazily, so it may remove each file from a collection as it goes.

    Example:
        >>> def close(name: str) -> None:
        ...     if name != "b":
        ...         raise OSError(f"cannot close {name}")
        >>> closed = []
        >>> apply_to_all(lambda name: (closed.append(name), close(name)), ["a", "b", "c"])
        Traceback (most recent call last):
        OSError: cannot close a
        >>> closed
        ['a', 'b', 'c']

    Raises:
        OSError: The first error ``action`` raised, after it ran on every file.
    """
    first: OSError | None = None
    for file in files:
        try:
            action(file)
        except OSError as exc:
            first = first or exc
    if first is not None:
        raise first
