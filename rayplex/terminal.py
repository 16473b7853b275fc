"""Text made safe for a terminal: control characters shown as escapes, never executed.

Log text and tag names come from any process of the experiment (or from foreign files). Printed
raw on a terminal, an ESC sequence can recolour the screen, retitle the window, move the cursor
or hide lines, and U+2028/U+2029 break lines where none should be. :func:`escape_controls` is
the one place that decides what is shown escaped; callers use it only when the output is a
terminal, so piped output stays byte-for-byte what was logged.

Example:
    >>> print(escape_controls("ok \\x1b[31mred\\x1b[0m\\n"), end="")
    ok \\x1b[31mred\\x1b[0m
"""

from __future__ import annotations

import os
import re
from typing import TextIO

__all__ = ["color_enabled", "escape_controls"]

# Unicode category Cc (C0, DEL, C1) except tab and newline, plus the line and paragraph
# separators; a newline is escaped too unless it ends the text (see escape_controls).
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """Show the control characters of ``text`` as Python-style escapes.

    C0 controls (but tab), DEL, C1 controls and U+2028/U+2029 become ``\\xNN`` / ``\\uNNNN``,
    so an ESC sequence is shown, not executed. One newline ending ``text`` is kept (it ends a
    line); any other newline is escaped. Backslashes are not doubled: this is for display, not
    a reversible encoding.

    Args:
        text: One line (with or without its newline), a tag, a file name.

    Returns:
        ``text`` itself when it holds nothing to escape, else the escaped copy.

    Example:
        >>> escape_controls("a\\tb\\u2028c\\x07\\n")
        'a\\tb\\\\u2028c\\\\x07\\n'
    """
    if _CONTROLS.search(text) is None:
        return text
    if text.endswith("\n"):
        return _CONTROLS.sub(_escape, text[:-1]) + "\n"
    return _CONTROLS.sub(_escape, text)


def color_enabled(stream: TextIO) -> bool:
    """Whether to colour what goes to ``stream``: only a terminal, and never when the
    ``NO_COLOR`` environment variable is set to anything but the empty string (no-color.org).

    Example:
        >>> import io
        >>> color_enabled(io.StringIO())
        False
    """
    if os.environ.get("NO_COLOR", ""):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or stream-like object
        return False
