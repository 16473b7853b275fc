"""The viewer's HTTP app (Starlette) and its server (uvicorn): the page's own files and the JSON
answers of :mod:`rayplex.view.api`, nothing else.

Routes: ``GET /`` (the page), ``GET /static/...`` (its ES modules, CSS and the vendored uPlot),
``GET /api/catalog`` (runs and tags), ``GET /api/version`` (the store's version, for polling),
``POST /api/series`` (lines or a band of one tag), ``GET /api/params`` (the sweep table),
``GET /api/logs`` (a text-log tail), ``GET /api/alerts`` (the watchers' alerts, newest
first), ``GET /api/walltimes`` (each run's step -> wall-time anchors, for a time x-axis).
Every answer carries a Content-Security-Policy that allows only the page's own scripts and
requests; bound to a loopback address, requests naming another host are refused (DNS
rebinding).

Example:
    >>> serve("/tmp/exp1", port=0)  # doctest: +SKIP
    rayplex view: http://127.0.0.1:40123/  (Ctrl-C to stop)
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from rayplex.view.api import BadRequest, Source, dumps

__all__ = ["INSTALL_HINT", "create_app", "is_loopback", "open_socket", "serve"]

INSTALL_HINT = 'pip install "rayplex[view]"'
STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.1``, ``::1``).

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _require() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ImportError(f"rayplex view needs starlette and uvicorn: {INSTALL_HINT}") from None


def create_app(logdir: str, *, loopback_only: bool = True) -> Any:
    """The Starlette app serving ``logdir``'s viewer. ``loopback_only``: answer only requests
    whose ``Host`` is a loopback name (the server is bound to one)."""
    _require()
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    source = Source(logdir)

    def reply(answer: Any, status: int = 200, since: float | None = None) -> Response:
        body = dumps(answer)
        headers = {"Cache-Control": "no-store"}
        if since is not None:  # the answer's time, serialised (bench_view.py reads it)
            headers["Server-Timing"] = f"answer;dur={(time.perf_counter() - since) * 1000:.1f}"
        return Response(body, status_code=status, media_type="application/json",
                        headers=headers)

    def guarded(handler: Callable[[Request, bytes], Any]
                ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            from starlette.concurrency import run_in_threadpool

            body = await request.body() if request.method == "POST" else b""
            t0 = time.perf_counter()
            try:
                return reply(await run_in_threadpool(handler, request, body), since=t0)
            except BadRequest as exc:
                return reply({"error": str(exc)}, 400)
            except FileNotFoundError as exc:
                return reply({"error": str(exc)}, 404)
        return endpoint

    def catalog(request: Request, body: bytes) -> Any:
        return source.known().answer

    def version(request: Request, body: bytes) -> Any:
        return {"version": source.version()}

    def series(request: Request, body: bytes) -> Any:
        try:
            parsed = json.loads(body or b"null")
        except ValueError:
            raise BadRequest("the request body is not JSON") from None
        return source.series(parsed)

    def params(request: Request, body: bytes) -> Any:
        return source.params()

    def logs(request: Request, body: bytes) -> Any:
        query = request.query_params
        try:
            lines = int(query.get("lines", "200"))
        except ValueError:
            raise BadRequest("lines must be an int") from None
        return source.logs(query.get("client") or None, query.get("level") or None, lines)

    def alerts(request: Request, body: bytes) -> Any:
        try:
            limit = int(request.query_params.get("limit", "500"))
        except ValueError:
            raise BadRequest("limit must be an int") from None
        return source.alerts(limit)

    def walltimes(request: Request, body: bytes) -> Any:
        return source.walltimes()

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    class Headers:
        """Adds the security headers to every answer."""

        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            async def send_with(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"],
                                          (b"content-security-policy", CSP.encode()),
                                          (b"x-content-type-options", b"nosniff"),
                                          (b"referrer-policy", b"no-referrer")]
                await send(message)
            await self.app(scope, receive, send_with)

    middleware = [Middleware(Headers)]
    if loopback_only:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_NAMES))
    app = Starlette(routes=[
        Route("/", page),
        Route("/favicon.ico", no_icon),
        Route("/api/catalog", guarded(catalog)),
        Route("/api/version", guarded(version)),
        Route("/api/series", guarded(series), methods=["POST"]),
        Route("/api/logs", guarded(logs)),
        Route("/api/params", guarded(params)),
        Route("/api/alerts", guarded(alerts)),
        Route("/api/walltimes", guarded(walltimes)),
        Mount("/static", StaticFiles(directory=STATIC)),
    ], middleware=middleware)
    app.state.source = source
    return app


def open_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    """The page's URL for a socket bound to ``host``."""
    port = sock.getsockname()[1]
    shown = host.strip("[]")
    if shown in ("0.0.0.0", "::"):
        shown = socket.gethostname()
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def serve(logdir: str, *, host: str = "127.0.0.1", port: int = 0, open_browser: bool = False,
          out: TextIO | None = None) -> int:
    """Serve ``logdir``'s viewer until Ctrl-C or SIGTERM; print its URL first.

    Returns 0 after a clean stop. Raises ``OSError`` if the port cannot be bound.
    """
    _require()
    import uvicorn

    out = out or sys.stdout
    # Starlette's host check cannot parse an IPv6 Host header ("[::1]:8080"): checked for IPv4
    # loopback and localhost only.
    app = create_app(logdir, loopback_only=is_loopback(host) and ":" not in host)
    sock = open_socket(host, port)
    url = url_of(sock, host)
    if not is_loopback(host):
        print(f"rayplex view: warning: serving on {host}, reachable from other machines; the "
              "page has no login (bind 127.0.0.1 and use an SSH tunnel instead)", file=sys.stderr)
    print(f"rayplex view: {url}  (Ctrl-C to stop)", file=out, flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    app.state.source.start()
    try:
        server.run(sockets=[sock])
    finally:
        app.state.source.stop()
        sock.close()
    return 0
