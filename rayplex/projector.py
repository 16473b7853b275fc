"""TensorBoard projector files as bytes: what ``add_embedding`` ships to the hub.

TensorBoard's projector plugin reads ``projector_config.pbtxt`` in a run's directory; each
``embeddings { ... }`` entry names a ``tensors.tsv`` (one row of tab-separated numbers per
point), optionally a ``metadata.tsv`` (one label per point, or a header row and columns) and a
``sprite.png`` (every point's thumbnail in one square grid). This module builds those files and
the config entry as plain bytes and text, laid out as tensorboardX lays them out
(``<step:05d>/<tag>/`` inside the run, tensor name ``<tag>:<step:05d>``), and merges an entry
into an existing config. No I/O, no Ray: the hub writes the result (confined to the run's
directory, atomically, once per request).

Example:
    >>> import numpy as np
    >>> emb = build_embedding(np.eye(2), metadata=["a", "b"], step=3, tag="learner/default")
    >>> emb.subdir, emb.tensor_name, sorted(emb.files)
    ('00003/learner%2Fdefault', 'learner/default:00003', ['metadata.tsv', 'tensors.tsv'])
    >>> emb.files["tensors.tsv"].decode()
    '1.0\\t0.0\\n0.0\\t1.0\\n'
    >>> print(emb.config_entry(), end="")
    embeddings {
      tensor_name: "learner/default:00003"
      tensor_path: "00003/learner%2Fdefault/tensors.tsv"
      metadata_path: "00003/learner%2Fdefault/metadata.tsv"
    }
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rayplex.media import _as_array, _pixels_to_uint8, encode_png

CONFIG_FILE = "projector_config.pbtxt"
"""The file TensorBoard's projector plugin reads in each run directory."""
TENSORS_FILE = "tensors.tsv"
METADATA_FILE = "metadata.tsv"
SPRITE_FILE = "sprite.png"
FILES = (TENSORS_FILE, METADATA_FILE, SPRITE_FILE)
"""The only file names an embedding's directory holds."""
MAX_SPRITE_SIZE = 8192
"""The largest sprite side TensorBoard's front end loads (pixels)."""

_SAFE = re.compile(r"[A-Za-z0-9_\-.]")
_SUBDIR = re.compile(r"[0-9]{5,19}/[A-Za-z0-9_\-%][A-Za-z0-9_\-.%]{0,1023}")


def encode_tag(tag: str) -> str:
    """A tag as one safe directory name: letters, digits, ``_ - .`` kept (not a leading
    ``.``), every other byte of its UTF-8 as ``%XX``.

    Example:
        >>> encode_tag("agent/emb:1/0-7"), encode_tag(".hidden")
        ('agent%2Femb%3A1%2F0-7', '%2Ehidden')
    """
    out = []
    for i, ch in enumerate(tag):
        if _SAFE.fullmatch(ch) and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def check_subdir(subdir: object) -> str:
    """Check an embedding's directory inside its run: ``<step, 5+ digits>/<encoded tag>``.

    Example:
        >>> check_subdir("00003/learner%2Fdefault")
        '00003/learner%2Fdefault'
        >>> check_subdir("00003/../x")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: embedding directory '00003/../x' is not '<step>/<encoded tag>' ...

    Raises:
        ValueError: if it is not that shape (so never absolute, never ``..``).
    """
    if not isinstance(subdir, str) or not _SUBDIR.fullmatch(subdir):
        raise ValueError(f"embedding directory {subdir!r} is not '<step>/<encoded tag>' "
                         "(as projector.build_embedding makes it)")
    return subdir


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class Embedding:
    """One embedding's files and where they go inside the run directory."""

    subdir: str
    """``<step:05d>/<encoded tag>``, relative to the run directory."""
    tensor_name: str
    """``<tag>:<step:05d>``: the name the projector lists."""
    files: dict[str, bytes] = field(default_factory=dict)
    """File name (one of :data:`FILES`) -> content."""
    sprite_dim: tuple[int, int] | None = None
    """``(width, height)`` of one thumbnail, when there is a sprite."""

    def named(self, tag: str, step: int) -> Embedding:
        """The same files under another routed ``tag`` and ``step`` (after a registry change)."""
        return Embedding(f"{step:05d}/{encode_tag(tag)}", f"{tag}:{step:05d}", self.files,
                         self.sprite_dim)

    def config_entry(self) -> str:
        """The ``embeddings { ... }`` block for ``projector_config.pbtxt``."""
        lines = ["embeddings {", f"  tensor_name: {_quote(self.tensor_name)}",
                 f"  tensor_path: {_quote(self.subdir + '/' + TENSORS_FILE)}"]
        if METADATA_FILE in self.files:
            lines.append(f"  metadata_path: {_quote(self.subdir + '/' + METADATA_FILE)}")
        if self.sprite_dim is not None:
            width, height = self.sprite_dim
            lines += ["  sprite {", f"    image_path: {_quote(self.subdir + '/' + SPRITE_FILE)}",
                      f"    single_image_dim: {width}", f"    single_image_dim: {height}", "  }"]
        lines.append("}")
        return "\n".join(lines) + "\n"


def tensors_tsv(mat: Any) -> tuple[bytes, int]:
    """``mat`` (N×D numbers) as ``tensors.tsv``; returns the bytes and N.

    Example:
        >>> tensors_tsv([[1, 2.5]])
        (b'1.0\\t2.5\\n', 1)

    Raises:
        TypeError: if ``mat`` is not numeric.
        ValueError: if it is not 2-D with at least one row and column, or has NaN/inf.
    """
    arr = _as_array(mat, "mat")
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"mat must be 2-D (points × dimensions) and non-empty, got shape "
                         f"{arr.shape}")
    if arr.dtype.kind == "c":
        raise TypeError(f"mat must be real numbers, got dtype {arr.dtype}")
    values = arr.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("mat has NaN or infinite values; the projector cannot place them")
    text = "".join("\t".join(repr(float(x)) for x in row) + "\n" for row in values)
    return text.encode("utf-8"), int(arr.shape[0])


def _cell(value: Any) -> str:
    text = str(value)
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def metadata_tsv(metadata: Sequence[Any], n: int, header: Sequence[Any] | None = None) -> bytes:
    """Labels as ``metadata.tsv``: one per line, or with ``header`` a header row and one row of
    columns per point (tabs and line breaks inside a label become spaces).

    Example:
        >>> metadata_tsv(["cat", "dog"], 2)
        b'cat\\ndog\\n'
        >>> metadata_tsv([("cat", 1), ("dog", 0)], 2, header=["name", "good"])
        b'name\\tgood\\ncat\\t1\\ndog\\t0\\n'

    Raises:
        TypeError: if ``metadata`` is not a sequence (a str is not).
        ValueError: if it does not have one entry per point, or a row's length differs from
            the header's.
    """
    if isinstance(metadata, (str, bytes, Mapping)) or not isinstance(metadata, Iterable):
        raise TypeError(f"metadata must be a list of labels, got {type(metadata).__name__}")
    rows = list(metadata)
    if len(rows) != n:
        raise ValueError(f"metadata has {len(rows)} labels but mat has {n} points")
    if header is None:
        lines = [_cell(x) for x in rows]
    else:
        head = [_cell(h) for h in header]
        lines = ["\t".join(head)]
        for i, row in enumerate(rows):
            cells = [row] if isinstance(row, str) or not isinstance(row, Sequence) else list(row)
            if len(cells) != len(head):
                raise ValueError(f"metadata row {i} has {len(cells)} columns but "
                                 f"metadata_header has {len(head)}")
            lines.append("\t".join(_cell(c) for c in cells))
    return ("\n".join(lines) + "\n").encode("utf-8")


def sprite_png(label_img: Any, n: int) -> tuple[bytes, tuple[int, int]]:
    """Thumbnails (N×C×H×W with C 1, 3 or 4, or N×H×W; uint8, or floats in [0, 1]; H == W) as
    one square sprite, row-major, padded at the bottom; returns the PNG and ``(W, H)``.

    Example:
        >>> png, dim = sprite_png(np.zeros((5, 1, 4, 4)), 5)
        >>> png[:4], dim
        (b'\\x89PNG', (4, 4))

    Raises:
        ValueError: for another shape, non-square thumbnails, a count other than ``n``, or a
            sprite larger than :data:`MAX_SPRITE_SIZE`.
    """
    arr = _as_array(label_img, "label_img")
    if arr.ndim == 3:
        arr = arr[:, np.newaxis]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3, 4) or 0 in arr.shape:
        raise ValueError(f"label_img must be N×C×H×W with C in 1, 3, 4 (or N×H×W), got shape "
                         f"{arr.shape}")
    count, channels, height, width = arr.shape
    if count != n:
        raise ValueError(f"label_img has {count} images but mat has {n} points")
    if height != width:
        raise ValueError(f"label_img thumbnails must be square, got {height}×{width}")
    pixels = _pixels_to_uint8(arr, "label_img")
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=1)
    per_row = math.ceil(math.sqrt(count))
    side = per_row * width
    if side > MAX_SPRITE_SIZE:
        raise ValueError(f"the sprite would be {side}×{side} pixels; TensorBoard loads at most "
                         f"{MAX_SPRITE_SIZE} (use fewer or smaller thumbnails)")
    canvas = np.zeros((side, side, pixels.shape[1]), np.uint8)
    for i in range(count):
        r, c = divmod(i, per_row)
        canvas[r * height:(r + 1) * height, c * width:(c + 1) * width] = \
            pixels[i].transpose(1, 2, 0)
    return encode_png(canvas), (width, height)


def build_embedding(mat: Any, metadata: Sequence[Any] | None = None, label_img: Any = None,
                    step: int = 0, tag: str = "default",
                    metadata_header: Sequence[Any] | None = None) -> Embedding:
    """Every file of one embedding, for the already routed TensorBoard ``tag``.

    Raises:
        TypeError, ValueError: see :func:`tensors_tsv`, :func:`metadata_tsv`,
            :func:`sprite_png`; also for a negative ``step`` or an empty ``tag``.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"an embedding's step must be an int >= 0, got {step!r}")
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"an embedding's tag must be a non-empty str, got {tag!r}")
    tensors, n = tensors_tsv(mat)
    files = {TENSORS_FILE: tensors}
    if metadata is not None:
        files[METADATA_FILE] = metadata_tsv(metadata, n, metadata_header)
    elif metadata_header is not None:
        raise ValueError("metadata_header needs metadata")
    sprite_dim = None
    if label_img is not None:
        files[SPRITE_FILE], sprite_dim = sprite_png(label_img, n)
    return Embedding(f"{step:05d}/{encode_tag(tag)}", f"{tag}:{step:05d}", files, sprite_dim)


def check_embedding(embedding: object) -> Embedding:
    """Check an :class:`Embedding` that arrived pickled (the hub does, before writing it).

    Example:
        >>> check_embedding(build_embedding([[1.0]])).subdir
        '00000/default'

    Raises:
        ValueError: if it is not an Embedding with a valid directory, only the known file names
            (``tensors.tsv`` among them) holding bytes, a one-line tensor name, and a sprite
            size of two positive ints exactly when there is a sprite.
    """
    if not isinstance(embedding, Embedding):
        raise ValueError(f"not an embedding: {type(embedding).__name__}")
    check_subdir(embedding.subdir)
    files = embedding.files
    if (not isinstance(files, dict) or TENSORS_FILE not in files or not set(files) <= set(FILES)
            or not all(isinstance(v, bytes) for v in files.values())):
        raise ValueError(f"an embedding's files must be bytes named from {FILES}, "
                         f"{TENSORS_FILE} among them")
    name = embedding.tensor_name
    if not isinstance(name, str) or not name or any(c in name for c in "\x00\n\r"):
        raise ValueError(f"bad embedding tensor name {name!r}")
    dim = embedding.sprite_dim
    if (dim is None) != (SPRITE_FILE not in files) or (dim is not None and not (
            isinstance(dim, tuple) and len(dim) == 2
            and all(type(d) is int and d > 0 for d in dim))):
        raise ValueError(f"bad sprite size {dim!r} for an embedding with files {sorted(files)}")
    return embedding


def _blocks(text: str) -> list[str]:
    """The top-level ``name { ... }`` blocks of a text-format config, as written."""
    blocks, depth, start, quoted, escaped = [], 0, 0, False, False
    for i, ch in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                blocks.append(text[start:i + 1].strip() + "\n")
                start = i + 1
    return blocks


def merge_config(existing: str, embedding: Embedding) -> str:
    """``existing`` config text with ``embedding``'s entry added, replacing an entry of the same
    tensor name (a repeated step and tag), so the config never lists one name twice.

    Example:
        >>> emb = build_embedding([[1.0]], step=1, tag="t")
        >>> once = merge_config("", emb)
        >>> merge_config(once, emb) == once
        True
    """
    name = f"tensor_name: {_quote(embedding.tensor_name)}"
    kept = [b for b in _blocks(existing) if name not in (ln.strip() for ln in b.splitlines())]
    return "".join(kept) + embedding.config_entry()
