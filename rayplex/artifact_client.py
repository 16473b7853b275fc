"""One client's artifact operations: :class:`ArtifactClient`, the one object behind the
Logger's file calls (``save_pkl``, ``save_image``, ``upload_dir``, ``glob``, ...).

Every path is relative to the client's own directory ``artifacts/<group>/<name>/`` and is
checked here, on the caller's side (:func:`rayplex.logger_files.check_path`,
:func:`rayplex.artifacts.safe_relpath`), before anything is sent. What is stored is built here
too (pickles, images, videos, tar archives, JSON); the hub only applies one request per call,
once (request ids) and atomically (:class:`rayplex.artifacts.ArtifactStore`).

The client sends its requests through a *transport*: any callable ``transport(method, *args)``
that applies the hub request ``method`` and returns its answer. A :class:`rayplex.Logger`
gives it its session's :meth:`rayplex.session.Session.call`; a test can give it one that
applies the request to an :class:`~rayplex.artifacts.ArtifactStore` on a temporary directory,
with no Ray at all.

Example:
    >>> import os, tempfile
    >>> from rayplex.artifacts import ArtifactStore
    >>> store = ArtifactStore(tempfile.mkdtemp())
    >>> def transport(method, *args):  # save and load only, applied in this process
    ...     if method == "save_artifact":
    ...         return os.fspath(store.write_bytes(args[0], args[1]))
    ...     return store.read_bytes(args[0])
    >>> files = ArtifactClient("learner/main", transport)
    >>> _ = files.save_pkl({"epoch": 3}, "ckpt/latest.pkl")
    >>> files.load_pkl("ckpt/latest.pkl")
    {'epoch': 3}
"""

from __future__ import annotations

import glob as _glob
import io
import json
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import cloudpickle
import numpy as np

from rayplex import media
from rayplex.artifacts import decode_chunks, safe_relpath
from rayplex.logger_files import check_path, join_keys, json_default, jsonl_line, pack_dir, unpack_tar
from rayplex.rules import split_client_id

__all__ = ["ARTIFACT_VERBS", "ArtifactClient", "Transport"]

ARTIFACT_VERBS = (
    "save_bytes", "load_bytes", "save_pkl", "load_pkl", "save_text", "save_module",
    "load_module", "save_image", "save_video", "make_video", "savefig", "upload_file", "remove",
    "move", "duplicate", "glob", "save_json", "load_json", "log_jsonl", "load_jsonl",
    "save_yaml", "load_yaml", "upload_dir", "download_dir", "save_torch", "torch_save",
    "load_torch", "torch_load", "torch_jit_save", "torch_jit_load")
"""The :class:`rayplex.Logger` methods that are one-line façades over this client's method of
the same name and signature."""

Transport = Callable[..., Any]
"""``transport(method, *args)``: apply one hub request and return its answer (or raise)."""


class ArtifactClient:
    """The artifact store as one client sees it: files under ``artifacts/<group>/<name>/``.

    Args:
        client_id: ``"<group>/<name>"``: whose directory the paths are relative to.
        transport: Applies one hub request (see the module docstring).
    """

    def __init__(self, client_id: str, transport: Transport) -> None:
        split_client_id(client_id)
        self.client_id = client_id
        self._send = transport

    def __repr__(self) -> str:
        return f"ArtifactClient({self.client_id!r})"

    def path(self, path: str, client: str | None = None) -> str:
        """The store path (``<group>/<name>/<path>``) of ``path`` in ``client``'s directory
        (``None``: this client's).

        Raises:
            ValueError: for an invalid path or client id.
        """
        owner = self.client_id if client is None else client
        split_client_id(owner)
        return f"{owner}/{safe_relpath(path)}"

    def save_bytes(self, data: bytes, path: str, append: bool = False) -> str:
        """Store raw bytes at ``artifacts/<group>/<name>/<path>``; returns the path on the hub.

        Raises:
            ValueError: if ``path`` is absolute, has ``..``, or resolves outside the store.
        """
        rel = self.path(path)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        return str(self._send("save_artifact", rel, bytes(data), append))

    def append_bytes(self, path: str, data: bytes) -> str:
        """Append raw bytes to the file ``path`` (created if missing) in one request: the
        bytes land once and whole, never interleaved with another writer's."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        return str(self._send("append_artifact", self.path(path), bytes(data)))

    def append_rows(self, path: str, rows: list[bytes], framed: bool) -> str:
        """Append several rows to ``path`` in one hub request: framed chunks (a pickle file,
        as ``save_pkl(append=True)`` writes one) or raw bytes (JSON lines)."""
        rel = self.path(path)
        if framed:
            return str(self._send("append_chunks", rel, rows))
        return str(self._send("append_artifact", rel, b"".join(rows)))

    def load_bytes(self, path: str, client: str | None = None) -> bytes:
        """Read back what ``client`` stored at ``path`` (``None``: this client).

        ``path`` is always relative to that one client's directory: another client's file is
        read only when it is named, ``client="learner/main"``, never because a path happens to
        start with a client id (resume code that tries its own not-yet-saved checkpoint gets
        ``FileNotFoundError``, not a stranger's file).

        Raises:
            FileNotFoundError: if nothing is stored there.
            ValueError: for an invalid path or client id.
        """
        return bytes(self._send("load_artifact", self.path(path, client)))

    def save_pkl(self, obj: Any, path: str, append: bool = False) -> str:
        """Pickle ``obj`` (cloudpickle) to ``path``; ``append=True`` adds one chunk, and
        :meth:`load_pkl` then returns the list of every appended object.

        Example:
            >>> log.save_pkl({"epoch": 3}, "checkpoints/latest.pkl")  # doctest: +SKIP
        """
        return self.save_bytes(cloudpickle.dumps(obj), path, append)

    def load_pkl(self, path: str, client: str | None = None) -> Any:
        """Load what :meth:`save_pkl` stored; any worker may read another client's by naming
        it, ``client="learner/main"`` (a path is always relative to one client's directory).

        Example:
            >>> log.load_pkl("checkpoints/latest.pkl", client="learner/main")  # doctest: +SKIP
        """
        data = self.load_bytes(path, client)
        chunks, end, problem = decode_chunks(data)
        if chunks and problem is None and end == len(data):
            return [cloudpickle.loads(chunk) for chunk in chunks]
        return cloudpickle.loads(data)

    def save_text(self, text: str, path: str) -> str:
        """Store ``text`` (UTF-8) at ``path``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self.save_bytes(text.encode("utf-8"), path)

    def save_module(self, module: Any, path: str) -> str:
        """Store a torch module's ``state_dict`` (or a state dict) at ``path``."""
        torch = _torch()
        buf = io.BytesIO()
        state = module.state_dict() if hasattr(module, "state_dict") else module
        torch.save(state, buf)
        return self.save_bytes(buf.getvalue(), path)

    def load_module(self, module: Any, path: str, client: str | None = None) -> Any:
        """Load a state dict saved by :meth:`save_module` into ``module``; returns it."""
        torch = _torch()
        state = torch.load(io.BytesIO(self.load_bytes(path, client)), map_location="cpu")
        if hasattr(module, "load_state_dict"):
            module.load_state_dict(state)
            return module
        return state

    def save_image(self, image: Any, path: str, dataformats: str | None = None,
                   normalize: Any = None, cmap: Any = None) -> str:
        """Store an image file (format from the extension; PNG by default).

        ``dataformats=None`` reads a 2-d array as grayscale (``"HW"``) and a 3-d one as
        ``"HWC"``; one-channel images are stored as grayscale. ``normalize``: True,
        ``"grid"`` or ``"individual"`` stretch each channel's min..max to the full range (a
        constant image becomes black), ``(lo, hi)`` stretches that range. ``cmap`` (a
        matplotlib colour map such as ``"cool"``) colours one-channel data (stored as RGBA).

        Example:
            >>> log.save_image(np.random.rand(32, 32), "pics/noise.png")  # doctest: +SKIP
            >>> log.save_image(depth, "pics/depth.png", normalize=True, cmap="cool")  # doctest: +SKIP

        Raises:
            ValueError: for a shape, dtype, ``normalize`` or colour map that does not fit.
        """
        pixels = media.image_file_pixels(image, dataformats, normalize, cmap)
        ext = os.path.splitext(path)[1].lower() or ".png"
        return self.save_bytes(media.encode_image_file(pixels, ext), path)

    def save_video(self, frames: Any, path: str, fps: float = 20.0,
                   dataformats: str | None = None) -> str:
        """Store a video file: mp4 through imageio-ffmpeg when installed, else a GIF (the
        extension then becomes ``.gif``, with a warning).

        ``dataformats=None`` reads a 3-d stack (or a list of 2-d frames) as grayscale
        ``"THW"`` and a 4-d one as ``"THWC"``.

        Example:
            >>> log.save_video(np.random.rand(10, 32, 32), "clips/noise.gif", fps=5)  # doctest: +SKIP
        """
        pixels = media.video_pixels(frames, dataformats)
        root, ext = os.path.splitext(path)
        if ext.lower() in (".mp4", ".mov", ".avi", ".mkv", ""):
            try:
                import imageio.v3 as iio
                import imageio_ffmpeg  # noqa: F401

                if pixels.shape[3] == 1:  # ffmpeg encoders take RGB
                    pixels = np.repeat(pixels, 3, axis=3)
                data = iio.imwrite("<bytes>", pixels, extension=ext.lower() or ".mp4", fps=fps)
                return self.save_bytes(data, path if ext else path + ".mp4")
            except ImportError:
                warnings.warn("imageio-ffmpeg is not installed: saving a GIF instead "
                              "(pip install 'rayplex[media]')", stacklevel=2)
                path = root + ".gif"
        return self.save_bytes(media.encode_gif(pixels, fps), path)

    def make_video(self, files: str | Sequence[str], key: str, fps: float = 20.0,
                   order: str | int | None = "ascending") -> str | None:
        """Assemble images stored by this client into a video stored at ``key``.

        ``files`` is a glob pattern over this client's artifacts (``"frames/*.png"``; the
        matches are sorted by ``order``: ``"ascending"``/1, ``"descending"``/-1, None keeps the
        store's order) or a list of paths, used in its own order. Frames must have one size;
        the format follows ``key`` as in :meth:`save_video`.

        Example:
            >>> log.make_video("frames/*.png", key="videos/run.gif", fps=10)  # doctest: +SKIP

        Returns:
            The stored path, or None when nothing matched.

        Raises:
            ValueError: for an unknown ``order`` or frames of different sizes.
            FileNotFoundError: for a listed path that is not stored.
        """
        if isinstance(files, str):
            if order not in ("ascending", 1, "descending", -1, None):
                raise ValueError(f"order must be 'ascending', 'descending' or None, got {order!r}")
            names = list(self.glob(files))
            if order in ("ascending", 1):
                names.sort()
            elif order in ("descending", -1):
                names.sort(reverse=True)
        else:
            names = list(files)
            for name in names:
                if not isinstance(name, str):
                    raise TypeError(f"make_video takes a glob or a list of paths, got an item "
                                    f"{type(name).__name__}")
        if not names:
            return None
        import imageio.v3 as iio

        images = [iio.imread(self.load_bytes(name)) for name in names]
        return self.save_video(media.stack_frames(images, names), key, fps=fps,
                               dataformats="THWC")

    def savefig(self, path: str, fig: Any = None, **savefig_kwargs: Any) -> str:
        """Store a matplotlib figure (default: the current one) in the format of the extension."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("savefig needs matplotlib: pip install 'rayplex[media]'") from exc
        figure = plt.gcf() if fig is None else fig
        buf = io.BytesIO()
        fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
        figure.savefig(buf, format=fmt, **savefig_kwargs)
        return self.save_bytes(buf.getvalue(), path)

    def upload_file(self, local_path: str | os.PathLike[str], path: str | None = None) -> str:
        """Copy a file of this worker's machine into the artifact store (default: its name).

        A ``path`` ending in ``/`` is a directory, as in ML-Logger: ``upload_file(p, "files/")``
        stores ``files/<basename of p>``.
        """
        local = os.fspath(local_path)
        with open(local, "rb") as f:
            data = f.read()
        name = os.path.basename(local)
        if path is None:
            path = name
        elif path.endswith("/"):
            path += name
        return self.save_bytes(data, path)


    # ------------------------------------------------------------ files, dirs
    def remove(self, *paths: str) -> list[str]:
        """Remove files and directories of this client; a path with ``*`` is a glob, ``""``
        everything this client stored. Missing paths are not an error.

        Example:
            >>> log.remove("checkpoints", "videos/*.mp4")  # doctest: +SKIP
            ['checkpoints', 'videos/a.mp4']

        Returns:
            The paths that were removed (relative to this client's directory).

        Raises:
            ValueError: for an absolute, ``//``, ``..`` or otherwise invalid path (nothing is
                removed).
        """
        for path in paths:
            if path not in ("", "."):
                check_path(path)
        if not paths:
            return []
        # A pattern is expanded by a query first (beside the hub's writes, bounded), so the
        # removal itself, on the write path, names plain paths (a matched name holding a '*'
        # is escaped, and matches only itself).
        targets: list[str] = []
        for path in paths:
            if "*" in path and path not in ("", "."):
                targets.extend(_glob.escape(m) if "*" in m else m for m in self.glob(path))
            else:
                targets.append(path)
        if not targets:
            return []
        return list(self._send("remove_artifacts", self.client_id, targets))

    def move(self, source: str, to: str) -> str:
        """Rename a file or directory of this client (as :func:`shutil.move`: into ``to`` if
        that is a directory). Atomic: a reader sees it at one place or the other.

        Returns:
            The new path on the hub.

        Raises:
            FileNotFoundError: if ``source`` does not exist.
            FileExistsError: if a directory is in the way.
            ValueError: for an invalid path, or ``to`` inside ``source``.
        """
        src = self.path(check_path(source, "source"))
        dst = self.path(check_path(to, "to"))
        return str(self._send("move_artifact", src, dst))

    def duplicate(self, source: str, to: str, exists_ok: bool = True) -> str:
        """Copy a file or directory of this client to ``to``; a directory copy is merged into
        an existing ``to`` when ``exists_ok`` (ML-Logger's default).

        Returns:
            The copy's path on the hub.

        Raises:
            FileNotFoundError: if ``source`` does not exist.
            FileExistsError: if ``to`` exists and ``exists_ok`` is false.
            ValueError: for an invalid path, or ``to`` inside ``source``.
        """
        src = self.path(check_path(source, "source"))
        dst = self.path(check_path(to, "to"))
        return str(self._send("duplicate_artifact", src, dst, bool(exists_ok)))

    def glob(self, query: str, wd: str | None = None) -> list[str]:
        """Paths of this client's files and directories matching ``query`` (``**`` recurses),
        relative to its directory or to ``wd`` below it, sorted, as ML-Logger answers.

        Example:
            >>> log.glob("**/*.pkl")  # doctest: +SKIP
            ['checkpoints/1.pkl', 'checkpoints/2.pkl']

        Raises:
            ValueError: for an absolute, ``//`` or ``..`` query or ``wd`` (the server's root
                and file system are refused by design).
        """
        check_path(query, "glob query")
        base = self.path(check_path(wd, "wd")) if wd else self.client_id
        return [str(p) for p in self._send("glob_artifacts", query, base)]

    # ------------------------------------------------------------- JSON, YAML
    def save_json(self, data: Any, file: str) -> str:
        """Store ``data`` as a JSON file (replacing it; numpy values become numbers).

        Raises:
            TypeError: for a value JSON cannot hold.
        """
        text = json.dumps(data, default=json_default)
        return self.save_bytes(text.encode("utf-8"), check_path(file, "file"))

    def load_json(self, *keys: str, client: str | None = None) -> Any:
        """What :meth:`save_json` stored (path keys joined by ``/``, as ML-Logger).

        Raises:
            FileNotFoundError: if nothing is stored there.
            ValueError: if the file is not JSON.
        """
        return json.loads(self.load_bytes(join_keys(keys), client).decode("utf-8"))

    def log_jsonl(self, data: Any, key: str) -> str:
        """Append ``data`` as one JSON line to the text file ``key`` (``None`` is ``{}``, as
        ML-Logger); each line lands once and whole.

        Example:
            >>> log.log_jsonl({"step": 1, "loss": 0.5}, "rows.jsonl")  # doctest: +SKIP
        """
        return self.append_bytes(check_path(key, "key"), jsonl_line(data))

    def load_jsonl(self, *keys: str, start: int | None = None, stop: int | None = None,
                   client: str | None = None) -> list[Any]:
        """Every line :meth:`log_jsonl` appended, parsed, as a list (``[start:stop]``).

        Raises:
            FileNotFoundError: if nothing is stored there.
            ValueError: for a line that is not JSON (the message gives its number).
        """
        text = self.load_bytes(join_keys(keys), client).decode("utf-8")
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number} of {join_keys(keys)!r} is not JSON: {exc}") from None
        return rows[start:stop]

    def save_yaml(self, data: Any, file: str) -> str:
        """Store ``data`` as YAML (``yaml.safe_dump``: plain data only, so that
        :meth:`load_yaml` reads it back without running code).

        Raises:
            TypeError: for a value that is not plain data (str, number, list, dict, ...).
        """
        import yaml

        try:
            text = yaml.safe_dump(data)
        except yaml.representer.RepresenterError as exc:
            raise TypeError(f"save_yaml stores plain data only: {exc}") from None
        return self.save_bytes(text.encode("utf-8"), check_path(file, "file"))

    def load_yaml(self, *keys: str, Loader: Any = None, client: str | None = None) -> Any:  # noqa: N803
        """What :meth:`save_yaml` stored, read with ``yaml.SafeLoader`` unless another
        ``Loader`` is asked for (ML-Logger's argument; an unsafe one is the caller's choice)."""
        import yaml

        return yaml.load(self.load_bytes(join_keys(keys), client).decode("utf-8"),  # noqa: S506
                         Loader=Loader or yaml.SafeLoader)

    # ------------------------------------------------------------ directories
    def upload_dir(self, dir_path: str | os.PathLike[str], target: str,
                   excludes: Iterable[str] = (), archive: str = "tar") -> str:
        """Store a local directory of this worker as one tar archive ``target``.

        Example:
            >>> log.upload_dir(".", "code.tar", excludes=["*.pyc", ".git"])  # doctest: +SKIP

        Returns:
            The archive's path on the hub.

        Raises:
            NotADirectoryError: if ``dir_path`` is not a directory.
            ValueError: for an invalid ``target`` or ``archive``.
        """
        check_path(target, "target")
        return self.save_bytes(pack_dir(dir_path, excludes, archive), target)

    def download_dir(self, source_path: str, to: str | os.PathLike[str],
                     unpack: str = "tar", client: str | None = None,
                     max_bytes: int | None = None) -> list[str]:
        """Unpack a stored tar archive (from :meth:`upload_dir`) into the local directory
        ``to`` of this worker, after checking every member (:func:`unpack_tar`): all of it
        or nothing.

        Args:
            max_bytes: The most the files may unpack to; default ``RAYPLEX_MAX_UNPACK_MB``
                (:attr:`rayplex.config.Config.max_unpack_mb`, 4096 MiB).

        Returns:
            The extracted member names.

        Raises:
            FileNotFoundError: if nothing is stored at ``source_path``.
            ValueError: for an unsafe member or an archive past ``max_bytes`` (nothing is
                extracted), or ``unpack`` other than ``"tar"``.
        """
        if unpack != "tar":
            raise ValueError(f"download_dir unpacks tar archives only, got unpack={unpack!r}")
        data = self.load_bytes(check_path(source_path, "source_path"), client)
        return unpack_tar(data, to, max_bytes)

    # ------------------------------------------------------------------- torch
    def save_torch(self, obj: Any, *keys: str, path: str | None = None) -> str:
        """Store any object with ``torch.save`` (a whole module, tensors, a dict of them).

        Example:
            >>> log.save_torch(model, "modules", "policy.pt")  # doctest: +SKIP
        """
        torch = _torch()
        rel = join_keys(keys, path)
        buf = io.BytesIO()
        torch.save(obj, buf)
        return self.save_bytes(buf.getvalue(), rel)

    torch_save = save_torch

    def load_torch(self, *keys: str, path: str | None = None, map_location: Any = None,
                   client: str | None = None, **kwargs: Any) -> Any:
        """Load what :meth:`save_torch` stored, with ``torch.load``. torch's own default,
        ``weights_only=True``, unpickles tensors and plain containers only; a whole module needs
        ``weights_only=False``, which runs the pickle's code: pass it only for files you trust.
        """
        torch = _torch()
        data = self.load_bytes(join_keys(keys, path), client)
        return torch.load(io.BytesIO(data), map_location=map_location, **kwargs)

    torch_load = load_torch

    # ------------------------------------------------------------- TorchScript
    def torch_jit_save(self, obj: Any, *keys: str, path: str | None = None) -> str:
        """Store ``obj`` as TorchScript (``torch.jit.script`` unless it is scripted already).

        Example:
            >>> log.torch_jit_save(model, "models", "policy.pt")  # doctest: +SKIP
        """
        torch = _torch()
        rel = join_keys(keys, path)
        scripted = obj if isinstance(obj, (torch.jit.ScriptModule, torch.jit.ScriptFunction)) \
            else torch.jit.script(obj)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        return self.save_bytes(buf.getvalue(), rel)

    def torch_jit_load(self, *keys: str, path: str | None = None, map_location: Any = None,
                       client: str | None = None) -> Any:
        """Load what :meth:`torch_jit_save` stored (``torch.jit.load``)."""
        torch = _torch()
        data = self.load_bytes(join_keys(keys, path), client)
        return torch.jit.load(io.BytesIO(data), map_location=map_location)


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError("this call needs torch: pip install 'rayplex[torch]'") from exc
    return torch
