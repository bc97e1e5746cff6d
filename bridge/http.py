"""The operations endpoint: /healthz, /readyz and /metrics over HTTP.

Served by aiohttp's web server on the bridge's own event loop. aiohttp is
well kept (aio-libs, who also keep yarl and multidict, which aio-pika already
pulls in), parses HTTP robustly (keep-alive, malformed requests, slow clients),
and needs no thread or second event loop, unlike prometheus_client's
start_http_server (a thread) or its ASGI app (which would still need an ASGI
server). The probes get a short JSON body; nothing in any response is secret:
/readyz carries component reasons (URL passwords masked by `Health`), /healthz
task names and exception types, /metrics the counters.
"""

from __future__ import annotations

import socket
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.health import Health
from bridge.metrics import Metrics

__all__ = ["HttpServer", "start_http"]

_METRICS_KEY = web.AppKey("metrics", Metrics)
_HEALTH_KEY = web.AppKey("health", Health)


def _json(ok: bool, body: dict[str, Any]) -> web.Response:
    """200 with the body when ok, 503 (the probe failed) otherwise."""
    return web.json_response(body, status=200 if ok else 503)


async def _healthz(request: web.Request) -> web.Response:
    return _json(*request.app[_HEALTH_KEY].alive())


async def _readyz(request: web.Request) -> web.Response:
    return _json(*request.app[_HEALTH_KEY].ready())


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[_METRICS_KEY].registry)
    # CONTENT_TYPE_LATEST carries a charset parameter, which aiohttp wants in
    # its own header rather than in content_type=.
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket of our own, so that port 0 works and we can tell the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR: a restarted bridge must not wait out TIME_WAIT of the old one.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """A running operations endpoint; `port` is the bound port (useful with port 0)."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket) -> None:
        """Wrap a started runner and its socket; use `start_http` instead."""
        self._runner = runner
        self._sock = sock
        self.host: str = sock.getsockname()[0]
        self.port: int = sock.getsockname()[1]

    async def close(self) -> None:
        """Stop serving, close open connections and the socket."""
        await self._runner.cleanup()
        self._sock.close()


async def start_http(address: tuple[str, int], metrics: Metrics, health: Health) -> HttpServer:
    """Serve /healthz, /readyz and /metrics on `address` (host, port; port 0 for any)."""
    host, port = address
    app = web.Application()
    app[_METRICS_KEY] = metrics
    app[_HEALTH_KEY] = health
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    # No access log: probes every few seconds would drown the bridge's own log.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        sock = _bind(host, port)
    except OSError:
        await runner.cleanup()
        raise
    await web.SockSite(runner, sock).start()
    return HttpServer(runner, sock)
