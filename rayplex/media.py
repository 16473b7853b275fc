"""Pure encoders: user data in, TensorBoard ``Summary.Value`` payloads out.

Every ``*_value`` function validates its input on the caller's side (wrong type: ``TypeError``;
wrong shape, dtype or range: ``ValueError`` naming what it got) and returns the serialized
``tensorboardX.proto.summary_pb2.Summary.Value`` **with the tag field unset**. The tag is
prepended later (:func:`rayplex.event_bytes.event_record`), which is valid protobuf because fields
may come in any order. Values that TensorBoard recognises through plugin metadata (text,
PR curves, hparams) carry that ``metadata`` exactly as tensorboardX writes it.

The work is delegated to ``tensorboardX.summary`` wherever it does the job; the exceptions are
video (an animated GIF written with ``imageio``, since tensorboardX needs ``moviepy``), audio
(a 16-bit PCM WAV written with the standard :mod:`wave` module, since tensorboardX needs
``soundfile``) and figures (``Figure.savefig`` straight to PNG).

Pixel data is ``uint8`` in ``[0, 255]`` (other integer dtypes are accepted when their values
fit) or floating point in ``[0, 1]``; floats are clipped to ``[0, 1]``, NaN becomes 0 and the
result is rounded to the nearest ``uint8`` (tensorboardX truncates and does not clip).

Example:
    >>> import numpy as np
    >>> payload = image_value(np.zeros((4, 5, 3), np.uint8))
    >>> from tensorboardX.proto.summary_pb2 import Summary
    >>> Summary.Value.FromString(payload).image.width
    5
"""

from __future__ import annotations

import io
import math
import numbers
import struct
import sys
import warnings
import wave
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from rayplex.rules import to_float
from rayplex.tfrecord import tensorboardx

if TYPE_CHECKING:
    from tensorboardX.proto.summary_pb2 import Summary


def _tbx() -> Any:
    """tensorboardX's summary builders, imported on first use (and without torch:
    :func:`rayplex.tfrecord.tensorboardx`), which no process that only forwards or writes
    scalars should pay for."""
    return tensorboardx("summary")


def _pb() -> Any:
    """tensorboardX's ``summary_pb2``, imported on first use (see :func:`_tbx`)."""
    return tensorboardx("proto.summary_pb2")

__all__ = [
    "audio_value",
    "encode_gif",
    "encode_image_file",
    "encode_png",
    "figure_value",
    "histogram_value",
    "hparams_values",
    "image_file_pixels",
    "image_pixels",
    "image_value",
    "images_value",
    "pr_curve_value",
    "stack_frames",
    "text_value",
    "video_pixels",
    "video_value",
]

_HISTOGRAM_ESTIMATORS = frozenset(
    {"auto", "fd", "doane", "scott", "stone", "rice", "sturges", "sqrt"}
)
_MAX_PR_THRESHOLDS = 127  # tensorboardX silently clamps larger values to this


def _tensorflow_bins() -> np.ndarray:
    # The same edges as tensorboardX's SummaryWriter.default_bins (generated the same way, so
    # they are bit-identical): +-1e-12 * 1.1**k up to 1e20, and 0.
    v, pos = 1e-12, []
    while v < 1e20:
        pos.append(v)
        v *= 1.1
    return np.array([-x for x in reversed(pos)] + [0.0] + pos)


_TF_BINS = _tensorflow_bins()


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _as_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a numeric ndarray without copying when possible; torch tensors are detached."""
    if x is None or isinstance(x, (str, bytes, bytearray, Mapping)):
        raise TypeError(f"{name} must be a numeric array-like, got {type(x).__name__}")
    if all(hasattr(x, a) for a in ("detach", "cpu", "numpy")):  # torch.Tensor, duck-typed
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except ValueError as e:  # ragged nested sequences
        raise ValueError(f"{name} could not be converted to an array: {e}") from e
    if arr.dtype.kind in "OSUVMm":
        raise TypeError(
            f"{name} must be a numeric array-like, got {type(x).__name__} with dtype {arr.dtype}"
        )
    return arr


def _check_int(x: Any, name: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    n = int(x)
    if n < minimum or (maximum is not None and n > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bound}, got {n}")
    return n


def _layout(
    arr: np.ndarray, dataformats: Any, required: str, optional: str, target: str, name: str
) -> np.ndarray:
    """A view of ``arr`` with axes in ``target`` order; absent optional axes get size 1."""
    if not isinstance(dataformats, str):
        raise TypeError(f"dataformats must be a str, got {type(dataformats).__name__}")
    fmt = dataformats.upper()
    if (
        len(set(fmt)) != len(fmt)
        or not set(required) <= set(fmt)
        or not set(fmt) <= set(required + optional)
    ):
        raise ValueError(
            f"dataformats {dataformats!r} must contain each of {', '.join(required)} once"
            + (f" and may contain {' and '.join(optional)}" if optional else "")
        )
    if arr.ndim != len(fmt):
        raise ValueError(
            f"{name} has shape {arr.shape} ({arr.ndim}-d) but dataformats {dataformats!r} "
            f"describes {len(fmt)} axes"
        )
    if 0 in arr.shape:
        raise ValueError(f"{name} has shape {arr.shape}; every axis must be non-empty")
    for axis in target:
        if axis not in fmt:
            arr = arr[..., np.newaxis]
            fmt += axis
    return arr.transpose([fmt.index(axis) for axis in target])


def _check_channels(c: int, allowed: tuple[int, ...], arr: np.ndarray, name: str) -> None:
    if c not in allowed:
        raise ValueError(
            f"{name} has shape {arr.shape} with {c} channels; expected "
            f"{' or '.join(map(str, allowed))} channels"
        )


def _pixels_to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    """``uint8`` pixels: uint8 passes through, floats in [0, 1] are scaled and rounded."""
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        return arr
    if kind == "f":
        work = np.multiply(arr, 255.0, dtype=np.float32)  # the one temporary we need
        np.nan_to_num(work, copy=False, nan=0.0)
        np.clip(work, 0.0, 255.0, out=work)
        np.rint(work, out=work)
        return np.asarray(work.astype(np.uint8))
    if kind in "iu":
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{name} has integer dtype {arr.dtype} with values in [{lo}, {hi}]; integer "
                "pixels must be in [0, 255] (or pass floats in [0, 1])"
            )
        return arr.astype(np.uint8)
    raise ValueError(
        f"{name} has dtype {arr.dtype}; expected uint8 in [0, 255] or floats in [0, 1]"
    )


def _payload(value: Summary.Value) -> bytes:
    value.ClearField("tag")
    return bytes(value.SerializeToString())


def _check_fps(fps: Any) -> float:
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real):
        raise TypeError(f"fps must be a number, got {type(fps).__name__}")
    f = float(fps)
    if not (math.isfinite(f) and f > 0):
        raise ValueError(f"fps must be a finite number > 0, got {fps}")
    return f


# --------------------------------------------------------------------------------------------
# Encoders shared with artifacts
# --------------------------------------------------------------------------------------------


def encode_png(img_hwc_uint8: ArrayLike) -> bytes:
    """Encode one ``uint8`` image as PNG.

    Args:
        img_hwc_uint8: ``uint8`` array of shape ``(H, W)`` or ``(H, W, C)`` with ``C`` in
            ``{1, 3, 4}`` (grayscale, RGB, RGBA).

    Returns:
        The PNG file's bytes.

    Raises:
        TypeError: ``img_hwc_uint8`` is not array-like.
        ValueError: wrong dtype or shape.

    Example:
        >>> import numpy as np
        >>> encode_png(np.zeros((2, 3, 3), np.uint8))[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    from PIL import Image

    arr = _as_array(img_hwc_uint8, "img_hwc_uint8")
    if arr.dtype != np.uint8:
        raise ValueError(f"img_hwc_uint8 must have dtype uint8, got {arr.dtype}")
    if arr.ndim == 3:
        _check_channels(arr.shape[2], (1, 3, 4), arr, "img_hwc_uint8")
        if arr.shape[2] == 1:
            arr = arr[:, :, 0]
    elif arr.ndim != 2:
        raise ValueError(f"img_hwc_uint8 must be (H, W) or (H, W, C), got shape {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"img_hwc_uint8 has shape {arr.shape}; H and W must be non-zero")
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def encode_gif(frames_thwc_uint8: ArrayLike, fps: float) -> bytes:
    """Encode ``uint8`` frames as an endlessly looping animated GIF with ``imageio``.

    GIF stores frame delays in hundredths of a second, so the delay is rounded to 10 ms and
    capped below at 20 ms (50 fps): browsers show faster GIFs at 10 fps. RGB frames are
    quantized to a 256-colour palette per frame, and consecutive identical frames are merged
    into one longer frame by Pillow (the playback time is unchanged).

    Args:
        frames_thwc_uint8: ``uint8`` array of shape ``(T, H, W)`` or ``(T, H, W, C)`` with
            ``C`` in ``{1, 3}``.
        fps: Frames per second, > 0.

    Returns:
        The GIF file's bytes.

    Raises:
        TypeError: wrong argument types.
        ValueError: wrong dtype or shape, or ``fps <= 0``.

    Example:
        >>> import numpy as np
        >>> encode_gif(np.zeros((2, 4, 4, 3), np.uint8), fps=4)[:6]
        b'GIF89a'
    """
    import imageio.v3 as iio

    arr = _as_array(frames_thwc_uint8, "frames_thwc_uint8")
    f = _check_fps(fps)
    if arr.dtype != np.uint8:
        raise ValueError(f"frames_thwc_uint8 must have dtype uint8, got {arr.dtype}")
    if arr.ndim == 4:
        _check_channels(arr.shape[3], (1, 3), arr, "frames_thwc_uint8")
        if arr.shape[3] == 1:
            arr = arr[..., 0]
    elif arr.ndim != 3:
        raise ValueError(
            f"frames_thwc_uint8 must be (T, H, W) or (T, H, W, C), got shape {arr.shape}"
        )
    if 0 in arr.shape:
        raise ValueError(f"frames_thwc_uint8 has shape {arr.shape}; T, H and W must be non-zero")
    centiseconds = max(2, round(100.0 / f))
    return iio.imwrite(
        "<bytes>", arr, extension=".gif", is_batch=True, duration=10 * centiseconds, loop=0
    )


# --------------------------------------------------------------------------------------------
# Summary.Value encoders
# --------------------------------------------------------------------------------------------


def histogram_value(
    values: ArrayLike,
    bins: str | int | Sequence[float] | np.ndarray = "tensorflow",
    max_bins: int | None = None,
) -> bytes:
    """A histogram of ``values`` (any shape, flattened), built by tensorboardX.

    Non-finite values are rejected: TensorFlow's histogram op does the same, and a histogram
    whose min/max/sum are NaN or inf does not render (tensorboardX raises only for estimator
    bins and silently writes NaN/inf statistics with the default ``"tensorflow"`` bins).
    Log ``values[np.isfinite(values)]`` to see the finite part.

    Args:
        values: Real numbers (bool, int or float array-like), not empty, all finite.
        bins: ``"tensorflow"`` (tensorboardX's default exponential buckets, +-1e-12 to
            +-1e20), a numpy estimator name (``"auto"``, ``"fd"``, ``"doane"``, ``"scott"``,
            ``"stone"``, ``"rice"``, ``"sturges"``, ``"sqrt"``), a number of equal-width bins,
            or increasing bin edges. Values outside explicit edges count in ``num``/``sum``
            but fall in no bucket, as in ``numpy.histogram``.
        max_bins: Merge adjacent bins when there are more; tensorboardX's merging is
            approximate (the result can have a few more buckets than ``max_bins``).

    Returns:
        The serialized ``Summary.Value`` (``histo`` set, tag unset).

    Raises:
        TypeError: non-numeric ``values`` or wrongly typed ``bins``/``max_bins``.
        ValueError: empty ``values``, NaN/inf in ``values``, complex dtype, bad ``bins``, or
            no value inside explicit bin edges.

    Example:
        >>> import numpy as np
        >>> payload = histogram_value(np.random.default_rng(0).normal(size=100))
        >>> from tensorboardX.proto.summary_pb2 import Summary
        >>> Summary.Value.FromString(payload).histo.num
        100.0
    """
    arr = _as_array(values, "values")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"values must be real numbers, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"values is empty (shape {arr.shape}); a histogram needs values")
    arr = arr.astype(np.float64, copy=False)
    lo, hi = arr.min(), arr.max()  # NaN propagates, so this also finds NaN
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"values (shape {arr.shape}) contains {bad} non-finite (NaN or inf) entries; "
            "log values[np.isfinite(values)] instead"
        )

    explicit_edges = False  # edges given (numpy then ignores values outside them)
    np_bins: str | int | np.ndarray
    if isinstance(bins, str):
        if bins == "tensorflow":
            np_bins, explicit_edges = _TF_BINS, True
        elif bins in _HISTOGRAM_ESTIMATORS:
            np_bins = bins
        else:
            raise ValueError(
                f"bins={bins!r} is not 'tensorflow' nor one of {sorted(_HISTOGRAM_ESTIMATORS)}"
            )
    elif isinstance(bins, numbers.Integral) and not isinstance(bins, bool):
        np_bins = _check_int(bins, "bins", 1)
    elif isinstance(bins, (Sequence, np.ndarray)):
        edges = _as_array(bins, "bins")
        if edges.dtype.kind not in "iuf" or edges.ndim != 1 or edges.size < 2:
            raise ValueError(
                f"bins as edges must be a 1-d real sequence of >= 2 values, got shape "
                f"{edges.shape} and dtype {edges.dtype}"
            )
        edges = edges.astype(np.float64, copy=False)
        if not np.isfinite(edges).all() or np.any(edges[1:] <= edges[:-1]):
            raise ValueError("bins as edges must be finite and strictly increasing")
        np_bins, explicit_edges = edges, True
    else:
        raise TypeError(f"bins must be a str, an int or a sequence, got {type(bins).__name__}")
    if max_bins is not None:
        max_bins = _check_int(max_bins, "max_bins", 1)
    try:
        histo = _tbx().make_histogram(arr, np_bins, max_bins)
    except ValueError as e:  # tensorboardX: "The histogram is empty, please file a bug report."
        if not explicit_edges:
            raise
        raise ValueError(
            f"no value of values (range [{lo}, {hi}]) falls inside the bin edges "
            f"[{np_bins[0]}, {np_bins[-1]}]"  # type: ignore[index]
        ) from e
    return bytes(_pb().Summary.Value(histo=histo).SerializeToString())


def text_value(text: str) -> bytes:
    """A text summary (rendered as Markdown by TensorBoard's text plugin).

    tensorboardX appends ``"/text_summary"`` to the tag; here the tag is the caller's.

    Args:
        text: The text.

    Returns:
        The serialized ``Summary.Value`` (string tensor of shape ``[1]`` plus ``text``
        plugin metadata, tag unset).

    Raises:
        TypeError: ``text`` is not a ``str``.

    Example:
        >>> from tensorboardX.proto.summary_pb2 import Summary
        >>> v = Summary.Value.FromString(text_value("**hello**"))
        >>> v.metadata.plugin_data.plugin_name, v.tensor.string_val[0]
        ('text', b'**hello**')
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _payload(_tbx().text("", text).value[0])


def image_value(img: ArrayLike, dataformats: str = "HWC") -> bytes:
    """One image as a PNG ``Summary.Image`` (via ``tensorboardX.summary.image``).

    Grayscale images are stored as RGB, as tensorboardX does.

    Args:
        img: ``uint8`` in ``[0, 255]`` (other integer dtypes if their values fit) or floats
            in ``[0, 1]`` (clipped; NaN becomes 0; rounded to the nearest ``uint8``).
        dataformats: The axes of ``img``: ``"HWC"``, ``"CHW"``, ``"HW"`` or any other order
            of ``H``, ``W`` and optionally ``C`` (case-insensitive); ``C`` in ``{1, 3, 4}``.

    Returns:
        The serialized ``Summary.Value`` (``image`` set, tag unset).

    Raises:
        TypeError: ``img`` is not numeric array-like, or ``dataformats`` is not a str.
        ValueError: shape, channel count or dtype do not fit.

    Example:
        >>> import numpy as np
        >>> from tensorboardX.proto.summary_pb2 import Summary
        >>> v = Summary.Value.FromString(image_value(np.ones((3, 8, 6)), dataformats="CHW"))
        >>> v.image.height, v.image.width
        (8, 6)
    """
    hwc = image_pixels(img, dataformats)
    return _payload(_tbx().image("", hwc, dataformats="HWC").value[0])


def _infer_formats(arr: np.ndarray, dataformats: str | None, by_ndim: Mapping[int, str],
                   name: str) -> str:
    """``dataformats`` itself, or (None) the layout implied by the number of axes."""
    if dataformats is not None:
        return dataformats
    fmt = by_ndim.get(arr.ndim)
    if fmt is None:
        known = ", ".join(f"{n}-d as {f!r}" for n, f in sorted(by_ndim.items()))
        raise ValueError(
            f"{name} has shape {arr.shape} ({arr.ndim}-d); without dataformats only {known} "
            "are understood: pass dataformats"
        )
    return fmt


_IMAGE_BY_NDIM = {2: "HW", 3: "HWC"}
_VIDEO_BY_NDIM = {3: "THW", 4: "THWC"}


def image_pixels(img: ArrayLike, dataformats: str | None = "HWC") -> np.ndarray:
    """Validate one image and return it as ``uint8`` H×W×C (C in 1, 3, 4).

    ``dataformats=None`` infers the layout from the number of axes: 2-d is ``"HW"``
    (grayscale), 3-d is ``"HWC"``.

    Raises:
        ValueError: shape, channel count or dtype do not fit (the message shows the shape).
    """
    arr = _as_array(img, "img")
    fmt = _infer_formats(arr, dataformats, _IMAGE_BY_NDIM, "img")
    hwc = _layout(arr, fmt, "HW", "C", "HWC", "img")
    _check_channels(hwc.shape[2], (1, 3, 4), arr, "img")
    return _pixels_to_uint8(hwc, "img")


_NORMALIZE_MODES = (True, "grid", "individual")


def _normalized(hwc: np.ndarray, normalize: Any) -> np.ndarray:
    """Floats of ``hwc`` scaled so that ``[lo, hi]`` maps to ``[0, 1]``: ``lo``/``hi`` the
    per-channel min/max (NaN ignored) or the given pair. A flat channel (``hi == lo``, e.g.
    all zeros) is only shifted, never divided by zero."""
    work = hwc.astype(np.float64)
    if isinstance(normalize, (str, bool)):
        if normalize not in _NORMALIZE_MODES:
            raise ValueError(
                f"normalize={normalize!r}: use True, 'grid', 'individual', a (lo, hi) pair, "
                "or None/False for none"
            )
        with warnings.catch_warnings():  # an all-NaN channel: "All-NaN slice encountered"
            warnings.simplefilter("ignore", RuntimeWarning)
            lo = np.nan_to_num(np.nanmin(work, axis=(0, 1)))
            hi = np.nan_to_num(np.nanmax(work, axis=(0, 1)))
    elif isinstance(normalize, (Sequence, np.ndarray)) and len(normalize) == 2:
        lo_, hi_ = (to_float(v, "normalize bound") for v in normalize)
        if not (math.isfinite(lo_) and math.isfinite(hi_) and lo_ < hi_):
            raise ValueError(f"normalize=(lo, hi) needs finite lo < hi, got {tuple(normalize)}")
        lo, hi = np.float64(lo_), np.float64(hi_)
    else:
        raise TypeError(
            f"normalize must be True, 'grid', 'individual', a (lo, hi) pair or None, got "
            f"{type(normalize).__name__}"
        )
    span = np.asarray(hi - lo)
    work -= lo
    work /= np.where(span > 0, span, 1.0)
    return work


def _colormapped(hw: np.ndarray, cmap: Any) -> np.ndarray:
    """One-channel floats in [0, 1] (clipped, NaN as 0) through a matplotlib colour map:
    ``uint8`` H×W×4 (RGBA)."""
    try:
        import matplotlib
        from matplotlib.colors import Colormap
    except ImportError as e:
        raise ImportError("save_image(cmap=...) needs matplotlib: pip install 'rayplex[media]'") \
            from e
    if isinstance(cmap, Colormap):
        colormap = cmap
    elif isinstance(cmap, str):
        try:
            colormap = matplotlib.colormaps[cmap]
        except KeyError:
            raise ValueError(
                f"cmap={cmap!r} is not a matplotlib colour map (e.g. 'cool', 'viridis', 'gray')"
            ) from None
    else:
        raise TypeError(f"cmap must be a colour-map name or a Colormap, got {type(cmap).__name__}")
    values = np.clip(np.nan_to_num(hw, nan=0.0), 0.0, 1.0)
    rgba = colormap(values)  # floats in [0, 1], shape H×W×4
    return np.asarray(np.rint(rgba * 255.0).astype(np.uint8))


def image_file_pixels(img: ArrayLike, dataformats: str | None = None, normalize: Any = None,
                      cmap: Any = None) -> np.ndarray:
    """One image made ready for an image file: ``uint8`` H×W (grayscale) or H×W×C (C 3 or 4).

    Args:
        img: ``uint8`` in ``[0, 255]`` (other integer dtypes if their values fit), or floats
            in ``[0, 1]`` (clipped; NaN becomes 0) -- any range with ``normalize``.
        dataformats: ``"HW"``, ``"HWC"``, ``"CHW"``, ...; None infers from the number of axes
            (2-d: ``"HW"``, 3-d: ``"HWC"``). A one-channel image becomes H×W.
        normalize: None/False: none. True, ``"grid"`` or ``"individual"``: each channel's
            min..max is stretched to 0..1 (the three are the same for one image; a constant
            image becomes black). ``(lo, hi)``: that range is stretched to 0..1, values
            outside are clipped.
        cmap: A matplotlib colour map (name or object) for one-channel data; the file is then
            RGBA. Integer pixels are divided by 255 first.

    Returns:
        The pixels.

    Raises:
        TypeError: non-numeric ``img``, or a wrong type for ``normalize``/``cmap``.
        ValueError: shape, channels or dtype do not fit, a bad ``normalize``, an unknown
            colour map, or ``cmap`` with a colour image.

    Example:
        >>> import numpy as np
        >>> image_file_pixels(np.zeros((4, 5, 1))).shape
        (4, 5)
        >>> image_file_pixels(np.array([[0.0, 2.0]]), normalize=True).tolist()
        [[0, 255]]
        >>> image_file_pixels(np.array([[0.0, 1.0]]), cmap="gray").shape
        (1, 2, 4)
    """
    arr = _as_array(img, "img")
    fmt = _infer_formats(arr, dataformats, _IMAGE_BY_NDIM, "img")
    hwc = _layout(arr, fmt, "HW", "C", "HWC", "img")
    _check_channels(hwc.shape[2], (1, 3, 4), arr, "img")
    if cmap is not None and hwc.shape[2] != 1:
        raise ValueError(
            f"img has shape {arr.shape} with {hwc.shape[2]} channels; cmap applies to "
            "one-channel (grayscale) images only"
        )
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"img has dtype {arr.dtype}; expected integers or floats")
    if normalize is not None and normalize is not False:
        hwc = _normalized(hwc, normalize)
    elif cmap is not None and hwc.dtype.kind != "f":
        hwc = _pixels_to_uint8(hwc, "img").astype(np.float64) / 255.0
    if cmap is not None:
        return _colormapped(hwc[:, :, 0].astype(np.float64, copy=False), cmap)
    pixels = _pixels_to_uint8(hwc, "img")
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels


def encode_image_file(pixels: np.ndarray, ext: str) -> bytes:
    """Encode ``uint8`` pixels from :func:`image_file_pixels` in the format of ``ext``
    (``".png"``, ``".jpg"``, ``".gif"``, ...) with imageio; JPEG drops an alpha channel.

    Example:
        >>> import numpy as np
        >>> encode_image_file(np.zeros((2, 2), np.uint8), ".png")[:4]
        b'\\x89PNG'
    """
    import imageio.v3 as iio

    ext = ext.lower()
    if ext in (".jpg", ".jpeg") and pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[:, :, :3]
    return bytes(iio.imwrite("<bytes>", pixels, extension=ext))


def stack_frames(images: Sequence[np.ndarray], names: Sequence[str]) -> np.ndarray:
    """Decoded images of one size as ``uint8`` T×H×W×C video frames: all grayscale stay
    one-channel (C=1), else every frame becomes RGB (alpha dropped).

    Raises:
        ValueError: if no image is given, or an image differs in size from the first (the
            message names both), or has a layout no video can hold.

    Example:
        >>> import numpy as np
        >>> stack_frames([np.zeros((2, 3), np.uint8), np.ones((2, 3, 4), np.uint8)], ["a", "b"]).shape
        (2, 2, 3, 3)
    """
    if not images:
        raise ValueError("stack_frames needs at least one image")
    frames = []
    for image, name in zip(images, names, strict=True):
        arr = np.asarray(image)
        if arr.dtype == np.uint16:  # 16-bit PNG
            arr = (arr // 257).astype(np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, np.newaxis]
        if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
            raise ValueError(f"{name} decodes to shape {arr.shape}, not an image")
        if arr.shape[2] in (2, 4):  # grayscale+alpha, RGBA: drop alpha
            arr = arr[:, :, :-1]
        frames.append(_pixels_to_uint8(arr, name))
    first = frames[0]
    for frame, name in zip(frames, names, strict=True):
        if frame.shape[:2] != first.shape[:2]:
            raise ValueError(
                f"{name} is {frame.shape[1]}x{frame.shape[0]} but {names[0]} is "
                f"{first.shape[1]}x{first.shape[0]}: every frame of a video must have one size"
            )
    if any(frame.shape[2] == 3 for frame in frames):
        frames = [np.repeat(f, 3, axis=2) if f.shape[2] == 1 else f for f in frames]
    return np.stack(frames)


def images_value(imgs: ArrayLike, dataformats: str = "NCHW") -> bytes:
    """A batch of images tiled into one PNG grid, as tensorboardX's ``add_images`` does.

    The grid has ``min(N, 8)`` columns and as many rows as needed; unused cells are black
    (transparent for RGBA). Grayscale batches are stored as RGB.

    Args:
        imgs: ``uint8`` in ``[0, 255]`` (other integer dtypes if their values fit) or floats
            in ``[0, 1]`` (clipped; NaN becomes 0).
        dataformats: The axes of ``imgs``: ``"NCHW"``, ``"NHWC"``, ``"NHW"`` or any other
            order of ``N``, ``H``, ``W`` and optionally ``C``; ``C`` in ``{1, 3, 4}``.

    Returns:
        The serialized ``Summary.Value`` (``image`` set, tag unset).

    Raises:
        TypeError: ``imgs`` is not numeric array-like, or ``dataformats`` is not a str.
        ValueError: shape, channel count or dtype do not fit.

    Example:
        >>> import numpy as np
        >>> from tensorboardX.proto.summary_pb2 import Summary
        >>> v = Summary.Value.FromString(images_value(np.zeros((10, 3, 4, 5), np.uint8)))
        >>> v.image.height, v.image.width  # 2 rows of 8 columns
        (8, 40)
    """
    arr = _as_array(imgs, "imgs")
    nchw = _layout(arr, dataformats, "NHW", "C", "NCHW", "imgs")
    _check_channels(nchw.shape[1], (1, 3, 4), arr, "imgs")
    nchw = _pixels_to_uint8(nchw, "imgs")
    return _payload(_tbx().image("", nchw, dataformats="NCHW").value[0])


def _tile_videos(nthwc: np.ndarray, max_cols: int = 8) -> np.ndarray:
    """``(N, T, H, W, C)`` -> ``(T, rows*H, cols*W, C)``, laid out like :func:`images_value`."""
    n, t, h, w, c = nthwc.shape
    if n == 1:
        return np.asarray(nthwc[0])
    cols = min(n, max_cols)
    rows = -(-n // cols)
    if rows * cols != n:
        pad = np.zeros((rows * cols - n, t, h, w, c), nthwc.dtype)
        nthwc = np.concatenate([nthwc, pad])
    grid = nthwc.reshape(rows, cols, t, h, w, c).transpose(2, 0, 3, 1, 4, 5)
    return grid.reshape(t, rows * h, cols * w, c)


def video_value(frames: ArrayLike, fps: float = 4.0, dataformats: str = "THWC") -> bytes:
    """A video as an animated GIF in a ``Summary.Image`` (TensorBoard's images tab plays it).

    Several videos (an ``N`` axis, as in tensorboardX's ``NTCHW``) are tiled into one grid
    like :func:`images_value`. See :func:`encode_gif` for GIF timing and colour limits.

    Args:
        frames: ``uint8`` in ``[0, 255]`` (other integer dtypes if their values fit) or
            floats in ``[0, 1]`` (clipped; NaN becomes 0).
        fps: Frames per second, > 0 (GIF plays at most 50 fps).
        dataformats: The axes of ``frames``: ``"THWC"`` (default), ``"TCHW"``, ``"THW"``,
            ``"NTCHW"`` (tensorboardX's default), ... -- any order of ``T``, ``H``, ``W`` and
            optionally ``C`` and ``N``; ``C`` in ``{1, 3}``.

    Returns:
        The serialized ``Summary.Value`` (``image`` holding a GIF, tag unset).

    Raises:
        TypeError: ``frames`` is not numeric array-like, or wrongly typed ``fps`` or
            ``dataformats``.
        ValueError: shape, channel count or dtype do not fit, or ``fps <= 0``.

    Example:
        >>> import numpy as np
        >>> from tensorboardX.proto.summary_pb2 import Summary
        >>> v = Summary.Value.FromString(video_value(np.zeros((5, 8, 8, 3)), fps=10))
        >>> v.image.encoded_image_string[:6]
        b'GIF89a'
    """
    _check_fps(fps)
    thwc = video_pixels(frames, dataformats)
    _, h, w, c = thwc.shape
    gif = encode_gif(thwc, fps)
    image = _pb().Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif)
    return bytes(_pb().Summary.Value(image=image).SerializeToString())


def video_pixels(frames: ArrayLike, dataformats: str | None = "THWC") -> np.ndarray:
    """Validate video frames and return them as ``uint8`` T×H×W×C (several videos tiled).

    ``dataformats=None`` infers the layout from the number of axes: 3-d (a stack or a list
    of 2-d frames) is ``"THW"`` (grayscale), 4-d is ``"THWC"``.

    Raises:
        ValueError: shape, channel count or dtype do not fit (the message shows the shape).
    """
    arr = _as_array(frames, "frames")
    fmt = _infer_formats(arr, dataformats, _VIDEO_BY_NDIM, "frames")
    nthwc = _layout(arr, fmt, "THW", "CN", "NTHWC", "frames")
    _check_channels(nthwc.shape[4], (1, 3), arr, "frames")
    return _tile_videos(_pixels_to_uint8(nthwc, "frames"))


def _encode_wav(pcm16: np.ndarray, sample_rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(pcm16.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm16.tobytes())
    return out.getvalue()


def audio_value(samples: ArrayLike, sample_rate: int = 44100) -> bytes:
    """Audio as a 16-bit PCM WAV ``Summary.Audio``.

    Written with the standard library (tensorboardX's ``audio`` needs ``soundfile``), in the
    same format ``soundfile`` would produce for float input.

    Args:
        samples: Floats in ``[-1, 1]``, shape ``(L,)`` (mono) or ``(L, C)`` with ``C`` in
            ``{1, 2}``. Out-of-range values are clipped, NaN becomes 0.
        sample_rate: Samples per second, a positive int.

    Returns:
        The serialized ``Summary.Value`` (``audio`` set, tag unset).

    Raises:
        TypeError: ``samples`` is not numeric array-like, or ``sample_rate`` is not an int.
        ValueError: wrong shape or non-float dtype, empty ``samples``, ``sample_rate <= 0``.

    Example:
        >>> import numpy as np
        >>> t = np.linspace(0, 1, 8000, endpoint=False)
        >>> from tensorboardX.proto.summary_pb2 import Summary
        >>> v = Summary.Value.FromString(audio_value(np.sin(2 * np.pi * 440 * t), 8000))
        >>> v.audio.length_frames, v.audio.content_type
        (8000, 'audio/wav')
    """
    arr = _as_array(samples, "samples")
    rate = _check_int(sample_rate, "sample_rate", 1, 2**32 - 1)
    if arr.dtype.kind != "f":
        raise ValueError(
            f"samples must be floats in [-1, 1], got dtype {arr.dtype} "
            "(divide integer PCM by its full scale, e.g. 32768 for int16)"
        )
    if arr.ndim == 1:
        arr = arr[:, np.newaxis]
    elif arr.ndim != 2 or arr.shape[1] not in (1, 2):
        raise ValueError(
            f"samples must have shape (L,) or (L, C) with C in {{1, 2}}, got shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"samples is empty (shape {arr.shape})")
    work = np.multiply(arr, 32767.0, dtype=np.float32)
    np.nan_to_num(work, copy=False, nan=0.0)
    np.clip(work, -32767.0, 32767.0, out=work)
    np.rint(work, out=work)
    pcm16 = work.astype("<i2")
    audio = _pb().Summary.Audio(
        sample_rate=float(rate),
        num_channels=pcm16.shape[1],
        length_frames=pcm16.shape[0],
        encoded_audio_string=_encode_wav(pcm16, rate),
        content_type="audio/wav",
    )
    return bytes(_pb().Summary.Value(audio=audio).SerializeToString())


_PNG_COLOR_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # PNG colour type -> channels


def figure_value(figure: Any, close: bool = True) -> bytes:
    """A matplotlib figure rendered to a PNG ``Summary.Image`` with ``figure.savefig``.

    matplotlib is imported only here. The figure's own ``dpi`` and the ``savefig.*``
    rcParams apply, as when saving it to a file.

    Args:
        figure: A ``matplotlib.figure.Figure``.
        close: Close the figure with ``pyplot.close`` afterwards (even when rendering fails),
            so that figures made with pyplot do not pile up. Figures that pyplot does not
            manage are left alone, and pyplot is never imported just to close.

    Returns:
        The serialized ``Summary.Value`` (``image`` set, tag unset).

    Raises:
        ImportError: matplotlib is not installed.
        TypeError: ``figure`` is not a matplotlib ``Figure``.

    Example:
        >>> from matplotlib.figure import Figure
        >>> fig = Figure(figsize=(2, 1), dpi=50)
        >>> _ = fig.add_subplot().plot([0, 1], [1, 0])
        >>> from tensorboardX.proto.summary_pb2 import Summary
        >>> v = Summary.Value.FromString(figure_value(fig))
        >>> v.image.width, v.image.height
        (100, 50)
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "figure_value needs matplotlib: pip install 'rayplex[media]' "
            "(or pip install matplotlib)"
        ) from e
    if not isinstance(figure, Figure):
        raise TypeError(f"figure must be a matplotlib Figure, got {type(figure).__name__}")
    out = io.BytesIO()
    try:
        figure.savefig(out, format="png")
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if close and pyplot is not None:
            pyplot.close(figure)
    png = out.getvalue()
    width, height = struct.unpack(">II", png[16:24])  # IHDR, right after the 8-byte signature
    image = _pb().Summary.Image(
        height=height,
        width=width,
        colorspace=_PNG_COLOR_CHANNELS.get(png[25], 4),
        encoded_image_string=png,
    )
    return bytes(_pb().Summary.Value(image=image).SerializeToString())


def pr_curve_value(
    labels: ArrayLike,
    predictions: ArrayLike,
    num_thresholds: int = 127,
    weights: ArrayLike | None = None,
) -> bytes:
    """A precision-recall curve (via ``tensorboardX.summary.pr_curve``).

    Args:
        labels: Ground truth, bool or numbers in ``{0, 1}``; any shape (flattened).
        predictions: Probabilities in ``[0, 1]``, same shape as ``labels``.
        num_thresholds: Number of thresholds, in ``[2, 127]`` (tensorboardX would silently
            clamp larger values to 127; this raises instead).
        weights: Optional non-negative weights: a scalar or an array shaped like ``labels``.

    Returns:
        The serialized ``Summary.Value`` (float tensor of shape ``[6, num_thresholds]`` --
        TP, FP, TN, FN, precision, recall -- plus ``pr_curves`` plugin metadata, tag unset).

    Raises:
        TypeError: non-numeric arrays or a non-int ``num_thresholds``.
        ValueError: empty or mismatched shapes, labels outside ``{0, 1}``, predictions
            outside ``[0, 1]`` or NaN, negative or non-finite weights, bad
            ``num_thresholds``.

    Example:
        >>> import numpy as np
        >>> from tensorboardX.proto.summary_pb2 import Summary
        >>> v = Summary.Value.FromString(pr_curve_value([0, 1, 1], [0.2, 0.7, 0.9], 11))
        >>> [d.size for d in v.tensor.tensor_shape.dim]
        [6, 11]
    """
    lab = _as_array(labels, "labels")
    pred = _as_array(predictions, "predictions")
    n = _check_int(num_thresholds, "num_thresholds", 2, _MAX_PR_THRESHOLDS)
    if lab.shape != pred.shape:
        raise ValueError(
            f"labels (shape {lab.shape}) and predictions (shape {pred.shape}) must have the "
            "same shape"
        )
    if lab.size == 0:
        raise ValueError(f"labels and predictions are empty (shape {lab.shape})")
    if lab.dtype.kind not in "biuf":
        raise ValueError(f"labels must be bool or 0/1 numbers, got dtype {lab.dtype}")
    if lab.dtype.kind != "b" and not np.all((lab == 0) | (lab == 1)):
        raise ValueError(f"labels (dtype {lab.dtype}) must contain only 0 and 1")
    if pred.dtype.kind not in "biuf":
        raise ValueError(f"predictions must be real numbers, got dtype {pred.dtype}")
    lo, hi = pred.min(), pred.max()
    if not (lo >= 0 and hi <= 1):  # also False for NaN
        raise ValueError(f"predictions must be in [0, 1], got values in [{lo}, {hi}]")
    w: np.ndarray | None = None
    if weights is not None:
        w = _as_array(weights, "weights")
        if w.dtype.kind not in "biuf":
            raise ValueError(f"weights must be real numbers, got dtype {w.dtype}")
        if w.shape not in ((), lab.shape):
            raise ValueError(
                f"weights has shape {w.shape}; expected a scalar or the labels' shape {lab.shape}"
            )
        if not (np.isfinite(w).all() and (w >= 0).all()):
            raise ValueError("weights must be finite and non-negative")
        w = w.ravel() if w.ndim else w
    value = _tbx().pr_curve("", lab.ravel(), pred.ravel(), num_thresholds=n, weights=w).value[0]
    return _payload(value)


def _hparam(key: str, v: Any) -> bool | int | float | str:
    if isinstance(v, np.generic):  # np.float32(0.1), np.int64(3), np.bool_(True), np.str_
        v = v.item()
    if not isinstance(v, (bool, int, float, str)):
        raise TypeError(
            f"hparams[{key!r}] must be a bool, int, float or str, got {type(v).__name__} "
            "(convert it, e.g. with str())"
        )
    return v


def hparams_values(
    hparams: Mapping[str, bool | int | float | str], metrics: Mapping[str, float]
) -> list[tuple[str, bytes]]:
    """The three hparams-plugin values (experiment, session start, session end).

    Built by ``tensorboardX.summary.hparams``; each must be written as its own event with
    the tag given here. Numbers are stored as float64, so ints beyond 2**53 lose precision.
    Only the metric *names* go into these values: for TensorBoard's HParams table, write
    the metric values as scalars with those tags to the same run (tensorboardX's
    ``add_hparams`` writes all of it into a separate run directory).

    Args:
        hparams: Hyperparameter name -> bool, int, float or str (numpy scalars accepted).
        metrics: Metric tag -> its value (a real number; only the tag is recorded here).

    Returns:
        ``[("_hparams_/experiment", payload), ("_hparams_/session_start_info", payload),
        ("_hparams_/session_end_info", payload)]``, payloads without tag, in the order
        tensorboardX writes them.

    Raises:
        TypeError: not mappings, a non-str key, or a value of another type (the message
            names the key).

    Example:
        >>> [tag for tag, _ in hparams_values({"lr": 0.1, "opt": "adam"}, {"acc": 0.9})]
        ['_hparams_/experiment', '_hparams_/session_start_info', '_hparams_/session_end_info']
    """
    if not isinstance(hparams, Mapping):
        raise TypeError(f"hparams must be a mapping, got {type(hparams).__name__}")
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping, got {type(metrics).__name__}")
    hp: dict[str, bool | int | float | str] = {}
    for key, v in hparams.items():
        if not isinstance(key, str):
            raise TypeError(f"hparams keys must be str, got {key!r} ({type(key).__name__})")
        v = _hparam(key, v)
        # tensorboardX stores every number as float64; converting here also spares it
        # np.array() of ints beyond int64
        hp[key] = float(v) if isinstance(v, int) and not isinstance(v, bool) else v
    checked: dict[str, float] = {}
    for key, m in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f"metrics keys must be str, got {key!r} ({type(key).__name__})")
        checked[key] = to_float(m, f"metrics[{key!r}]")
    out = []
    for summ in _tbx().hparams(hp, checked):
        value = summ.value[0]
        tag = value.tag
        out.append((tag, _payload(value)))
    return out
