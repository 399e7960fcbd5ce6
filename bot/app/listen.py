"""Serving an aiohttp application on an address of the app layer's (the ops endpoint, the
console): started, and the port learned when the configured one is 0 (any free port)."""

from __future__ import annotations

from aiohttp import web

__all__ = ["listen"]


async def listen(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """``app`` served on ``host``:``port``; its runner (to clean up) and the port it got."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        port = server.sockets[0].getsockname()[1]
    return runner, port
