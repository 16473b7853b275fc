"""Text for a terminal: control characters shown as escapes, never executed; the tables that
``Logger.log(..., print=True)`` and ``Logger.log_params(print=True)`` print, with ML-Logger's
:class:`Color` cells and :func:`percent` formatter.

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

import numbers
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

__all__ = ["Color", "color_enabled", "escape_controls", "percent", "print_table"]

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


# ML-Logger's colour names (termcolor's) that rich spells differently.
_COLOR_ALIASES = {"gray": "bright_black", "grey": "bright_black", "brown": "yellow"}


def _rich_style(color: str | None) -> str | None:
    if color in (None, "default"):
        return None
    if not isinstance(color, str):
        raise TypeError(f"color must be a str or None, got {type(color).__name__}")
    from rich.color import Color as RichColor
    from rich.color import ColorParseError

    name = _COLOR_ALIASES.get(color, color)
    try:
        RichColor.parse(name)
    except ColorParseError:
        raise ValueError(
            f"unknown color {color!r}: use a name such as 'red', 'green', 'yellow', 'blue', "
            "'magenta', 'cyan', 'white', 'gray', or any colour rich understands ('#ff8800')"
        ) from None
    return name


class Color:
    """A value shown in colour, and formatted, in a printed table; logged as the value itself.

    ``formatter`` turns the value into the text of the cell (:func:`percent`, a lambda, or
    None for ``str``). The colour is a name as in ML-Logger (``"red"``, ``"yellow"``,
    ``"gray"``, ...) or any colour rich understands; None or ``"default"`` means uncoloured.
    Colours reach the terminal only (never a pipe, nor when ``NO_COLOR`` is set).

    Example:
        >>> cell = Color(0.8512, "yellow", percent)
        >>> str(cell), cell.value
        ('85.12%', 0.8512)
        >>> f"{Color(3.14159, 'red'):.3}"
        '3.14'

    Raises:
        ValueError: for an unknown colour name.
        TypeError: if ``formatter`` is neither callable nor None.
    """

    __slots__ = ("color", "formatter", "style", "value")

    def __init__(self, value: Any, color: str | None = None,
                 formatter: Callable[[Any], Any] | None = None) -> None:
        if formatter is not None and not callable(formatter):
            raise TypeError(f"formatter must be callable or None, got {type(formatter).__name__}")
        self.value = value
        self.color = color
        self.formatter = formatter
        self.style = _rich_style(color)

    def _formatted(self) -> Any:
        return self.value if self.formatter is None else self.formatter(self.value)

    def __str__(self) -> str:
        return str(self._formatted())

    def __format__(self, format_spec: str) -> str:
        return format(self._formatted(), format_spec)

    def __repr__(self) -> str:
        return f"Color({self.value!r}, {self.color!r})"


def percent(value: float) -> str:
    """A fraction as a percentage with two decimals, for :class:`Color` cells.

    Example:
        >>> percent(0.85), percent(1)
        ('85.00%', '100.00%')
    """
    return f"{value:.2%}"


def _cell(value: Any) -> tuple[str, str | None]:
    if isinstance(value, Color):
        return str(value), value.style
    if isinstance(value, float):
        return f"{value:.6g}", None
    if isinstance(value, (numbers.Number, str)):
        return str(value), None
    return repr(value), None


def print_table(title: str, values: Mapping[str, Any], file: TextIO | None = None) -> None:
    """Print ``values`` as a two-column (key, value) table with rich; :class:`Color` values
    are shown formatted and coloured, floats with 6 significant digits, and control characters
    in keys and values are shown escaped, never executed.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> print_table("step 3", {"acc": Color(0.5, "green", percent)}, file=out)
        >>> "50.00%" in out.getvalue()
        True
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    stream = sys.stdout if file is None else file
    table = Table(title=Text(escape_controls(title)))
    table.add_column("key")
    table.add_column("value", justify="right")
    for key, value in values.items():
        text, style = _cell(value)
        table.add_row(Text(escape_controls(str(key))),
                      Text(escape_controls(text), style=style or ""))
    console = Console(file=stream, force_terminal=color_enabled(stream),
                      no_color=not color_enabled(stream), highlight=False)
    console.print(table)
