"""The operations endpoint: ``/healthz`` and ``/metrics`` on a loopback port."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.app.listen import listen
from bot.config import OpsConfig
from bot.core.service import Service
from bot.errors import StoreError

__all__ = ["OpsServer"]

log = logging.getLogger(__name__)


class OpsServer:
    """Serves health and metrics for ``service``; ``adapters`` report ``connected`` if they can."""

    def __init__(self, config: OpsConfig, service: Service, adapters: Sequence[Any] = ()) -> None:
        self.config = config
        self.service = service
        self.adapters = list(adapters)
        self._runner: web.AppRunner | None = None
        self.port = config.port

    async def problems(self) -> list[str]:
        found = []
        if not self.service.ready:
            found.append("backend: the model is not ready")
        try:
            await self.service.store.check()
        except StoreError as exc:
            found.append(f"store: not writable ({exc})")
        for adapter in self.adapters:
            if not getattr(adapter, "connected", True):
                found.append(f"{adapter.name}: not connected")
        return found

    async def _healthz(self, request: web.Request) -> web.Response:
        problems = await self.problems()
        body = {"status": "unhealthy" if problems else "ok", "problems": problems}
        return web.json_response(body, status=503 if problems else 200)

    async def _metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.service.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def _reload_policy(self, request: web.Request) -> web.Response:
        error = self.service.reload_policy()
        if error is not None:
            return web.json_response({"reloaded": False, "error": error}, status=400)
        return web.json_response({"reloaded": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/policy/reload", self._reload_policy)
        self._runner, self.port = await listen(app, self.config.host, self.config.port)
        log.info(
            "health and metrics at http://%s:%s/healthz and /metrics", self.config.host, self.port
        )

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
