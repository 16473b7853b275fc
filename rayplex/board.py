"""Start the real TensorBoard on a logdir's ``tensorboard/`` folder and wait until it answers.

Used by ``rayplex board`` and ``rayplex demo --board``; usable from Python too.

Example:
    >>> with start_board("/tmp/exp1", port=0) as board:  # doctest: +SKIP
    ...     print(board.url)
    ...     board.wait()   # until Ctrl-C or TensorBoard exits
    http://127.0.0.1:40123/
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rayplex.errors import BoardStartError, TensorBoardNotInstalledError

__all__ = ["Board", "BoardStartError", "Stopped", "TensorBoardNotInstalledError", "start_board",
           "stop_on_signals", "tensorboard_command"]

INSTALL_HINT = 'pip install "rayplex[board]"'


def tensorboard_command(
    tensorboard_dir: str | os.PathLike[str],
    host: str,
    port: int,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line that serves ``tensorboard_dir`` with TensorBoard.

    Prefers the ``tensorboard`` package of this Python (``python -m tensorboard.main``), else a
    ``tensorboard`` program on ``PATH``.

    Args:
        tensorboard_dir: The folder holding the run directories (``logdir/tensorboard``).
        host: Address to bind, e.g. ``127.0.0.1`` or ``0.0.0.0``.
        port: Port to serve on.
        extra_args: More TensorBoard flags, e.g. ``["--reload_interval", "1"]``.

    Returns:
        The argument list for :class:`subprocess.Popen`.

    Raises:
        TensorBoardNotInstalledError: If TensorBoard is not installed.

    Example:
        >>> tensorboard_command("/tmp/exp1/tensorboard", "127.0.0.1", 6006)[-6:]  # doctest: +SKIP
        ['--logdir', '/tmp/exp1/tensorboard', '--host', '127.0.0.1', '--port', '6006']
    """
    return [*_program(), "--logdir", os.fspath(tensorboard_dir), "--host", host, "--port", str(port),
            *extra_args]


def _program() -> list[str]:
    """How to run TensorBoard here."""
    if importlib.util.find_spec("tensorboard") is not None:
        return [sys.executable, "-m", "tensorboard.main"]
    program = shutil.which("tensorboard")
    if program:
        return [program]
    raise TensorBoardNotInstalledError(f"TensorBoard is not installed: {INSTALL_HINT}")


def _bind(host: str, port: int) -> int:
    """Bind ``host:port`` briefly (``port=0``: any free port) and return the port bound."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As servers do, so that a port left in TIME_WAIT by a stopped TensorBoard counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        return int(sock.getsockname()[1])


def _url_host(host: str) -> str:
    """The host to put in a URL: a wildcard bind is reached through this machine's name."""
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


class Board:
    """A running TensorBoard process, made by :func:`start_board`.

    Attributes:
        url: Where it serves, ending in ``/``.
        port: The port.
        process: The TensorBoard process.
        tensorboard_dir: The folder it serves.
    """

    def __init__(self, process: subprocess.Popen[bytes], url: str, port: int,
                 tensorboard_dir: Path, output_path: Path, owns_output: bool) -> None:
        self.process = process
        self.url = url
        self.port = port
        self.tensorboard_dir = tensorboard_dir
        self._output_path = output_path
        self._owns_output = owns_output

    def __repr__(self) -> str:
        return f"Board(url={self.url!r}, pid={self.process.pid})"

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def output(self) -> str:
        """What TensorBoard printed so far (stdout and stderr)."""
        try:
            return self._output_path.read_text(errors="replace")
        except OSError:
            return ""

    def running(self) -> bool:
        """Whether the TensorBoard process is still alive."""
        return self.process.poll() is None

    def wait(self) -> int:
        """Block until TensorBoard exits (or Ctrl-C, which propagates); return its exit code."""
        return self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate TensorBoard (kill it after ``timeout`` s). Safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._owns_output:
            with contextlib.suppress(OSError):
                self._output_path.unlink()


class Stopped(BaseException):  # like KeyboardInterrupt: not an error, not caught by `except Exception`
    """Raised in the main thread by :func:`stop_on_signals` when a stop signal arrives."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within the block, ``signals`` raise :class:`Stopped` (like Ctrl-C raises
    ``KeyboardInterrupt``), so the ``finally`` blocks that stop TensorBoard run instead of the
    process dying and leaving TensorBoard serving. Only in the main thread (the one Python
    delivers signals to); elsewhere the block runs unchanged.

    Example:
        >>> with stop_on_signals():  # doctest: +SKIP
        ...     with start_board("/tmp/exp1") as board:
        ...         board.wait()      # `kill <pid>` stops TensorBoard, then raises Stopped here
    """
    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            previous[signum] = signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "data/logdir", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_board(
    logdir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 6006,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
    output: str | os.PathLike[str] | None = None,
) -> Board:
    """Start TensorBoard on ``logdir/tensorboard`` and return once it answers HTTP requests.

    TensorBoard's own output goes to ``output`` (a temporary file by default, deleted by
    :meth:`Board.stop`) and is quoted in the error when it fails to start.

    Args:
        logdir: The experiment's logdir (the directory given to ``rayplex.init``).
        host: Address to bind. ``0.0.0.0`` serves other machines too.
        port: Port to serve on; ``0`` picks a free one.
        timeout: Seconds to wait for TensorBoard to answer.
        extra_args: More TensorBoard flags, e.g. ``["--reload_interval", "1"]``.
        output: File that receives TensorBoard's stdout and stderr.

    Returns:
        The running :class:`Board`; stop it with :meth:`Board.stop` or a ``with`` block.

    Raises:
        FileNotFoundError: If ``logdir`` does not exist or has no ``tensorboard/`` subdirectory.
        TensorBoardNotInstalledError: If TensorBoard is not installed.
        BoardStartError: If the port is taken, or TensorBoard exits or does not answer within
            ``timeout`` (the message then ends with TensorBoard's output).

    Example:
        >>> board = start_board("/tmp/exp1", port=0)  # doctest: +SKIP
        >>> board.url  # doctest: +SKIP
        'http://127.0.0.1:40123/'
        >>> board.stop()  # doctest: +SKIP
    """
    from rayplex.layout import tensorboard_dir as tensorboard_of
    from rayplex.read import check_logdir

    tensorboard_dir = Path(tensorboard_of(check_logdir(logdir)))
    _program()  # not installed: say so before anything else
    try:
        # Checked first: otherwise the probe below could be answered by whoever holds the port.
        port = _bind(host, port)
    except OSError as exc:
        raise BoardStartError(f"cannot serve on {host}:{port}: {exc.strerror or exc} "
                              f"(choose another --port; 0 picks a free one)") from None
    command = tensorboard_command(tensorboard_dir, host, port, extra_args)
    if output is None:
        fd, name = tempfile.mkstemp(prefix="rayplex-tensorboard-", suffix=".log")
        os.close(fd)
        output_path, owns_output = Path(name), True
    else:
        output_path, owns_output = Path(output), False
    with open(output_path, "ab") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    board = Board(process, f"http://{_url_host(host)}:{port}/", port, tensorboard_dir,
                  output_path, owns_output)
    probe_host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, _url_host(host))
    probe = f"http://{probe_host}:{port}/"
    deadline = time.monotonic() + timeout
    try:
        while not _answers(probe):
            if not board.running() or time.monotonic() > deadline:
                reason = (f"exited with code {process.returncode}" if not board.running()
                          else f"did not answer within {timeout:g} s")
                tail = "\n".join(board.output().strip().splitlines()[-20:])
                raise BoardStartError(f"TensorBoard {reason} (command: {' '.join(command)})"
                                      + (f"\n{tail}" if tail else ""))
            time.sleep(0.2)
    except BaseException:  # including Ctrl-C or Stopped while waiting: never leave TensorBoard behind
        board.stop()
        raise
    return board
