"""Operations: /healthz and /metrics, an unwritable store, shutting down with replies in flight."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from adapters.memory import MemoryAdapter, MemoryReply
from bot.app.ops import OpsServer
from bot.config import Config, LimitsConfig, OpsConfig, StoreConfig
from bot.core.service import Service
from bot.core.wording import SHUTTING_DOWN, STORE_DOWN
from bot.events import ConversationKey
from bot.storage.sqlite import SQLiteStore
from tests.scripted import ScriptedBackend

KEY = ConversationKey("memory", "", "c1")


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    config = Config(
        store=StoreConfig(path=str(tmp_path / "parley.db")),
        limits=LimitsConfig(
            user_per_minute=0, channel_per_minute=0, bot_messages_per_channel_minute=0
        ),
    )
    service = Service(config, ScriptedBackend("All good here."), SQLiteStore(config.store.path))
    await service.start()
    yield service
    await service.close()


class _Adapter:
    name = "fakechat"
    connected = True


@pytest.fixture
async def ops(service: Service) -> AsyncIterator[tuple[OpsServer, _Adapter]]:
    adapter = _Adapter()
    server = OpsServer(OpsConfig(port=0), service, [adapter])
    await server.start()
    yield server, adapter
    await server.close()


async def _get(server: OpsServer, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{server.port}{path}"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def _make_read_only(store: SQLiteStore, on: bool) -> None:
    # Root ignores file permissions, so "unwritable" is simulated at the SQLite level.
    value = "ON" if on else "OFF"
    await store._run(lambda: store._conn().execute(f"PRAGMA query_only = {value}"))


async def _until_updating(reply: MemoryReply) -> None:
    async with asyncio.timeout(30):
        while not reply.updates:  # noqa: ASYNC110 - the reply has no event for its first update
            await asyncio.sleep(0.005)


async def test_healthz_and_metrics(service: Service, ops: tuple[OpsServer, _Adapter]) -> None:
    server, adapter = ops
    assert await _get(server, "/healthz") == (200, '{"status": "ok", "problems": []}')
    chat = MemoryAdapter(service, platform="web")
    chat.send("hello")
    await chat.drain()  # the handler, not just the reply, has finished: metrics are counted
    status, metrics = await _get(server, "/metrics")
    assert status == 200
    assert 'parley_events_total{outcome="answered",platform="web"} 1.0' in metrics
    assert "parley_time_to_first_token_seconds_count 1.0" in metrics
    assert "parley_reply_seconds_count 1.0" in metrics
    assert "parley_tokens_generated_total" in metrics
    assert "parley_queue_depth 0.0" in metrics
    adapter.connected = False
    status, body = await _get(server, "/healthz")
    assert status == 503 and "fakechat: not connected" in body


async def test_unwritable_store_is_reported_and_recovers(
    service: Service, ops: tuple[OpsServer, _Adapter]
) -> None:
    server, _ = ops
    chat = MemoryAdapter(service)
    await chat.send("first question").wait()
    store = service.store
    assert isinstance(store, SQLiteStore)
    await _make_read_only(store, True)
    status, body = await _get(server, "/healthz")
    assert status == 503 and "store: not writable" in body
    reply = chat.send("second question")
    assert await reply.wait() == STORE_DOWN and reply.failed
    await _make_read_only(store, False)
    assert await _get(server, "/healthz") == (200, '{"status": "ok", "problems": []}')
    assert await chat.send("third question").wait() == "All good here."
    contents = [t.content for t in await store.history(KEY)]
    assert contents == ["first question", "All good here.", "third question", "All good here."]
    status, metrics = await _get(server, "/metrics")
    assert 'parley_errors_total{kind="store"} 1.0' in metrics


async def test_shutdown_lets_replies_finish_within_the_grace_period(service: Service) -> None:
    backend = service.backend
    assert isinstance(backend, ScriptedBackend)
    backend.chunk, backend.delay = 1, 0.01
    reply = MemoryAdapter(service).send("hello")
    await _until_updating(reply)
    await service.conversations.close(grace=30)
    assert reply.text == "All good here." and not reply.failed


async def test_shutdown_past_the_grace_period_ends_replies_with_a_notice(
    service: Service,
) -> None:
    backend = service.backend
    assert isinstance(backend, ScriptedBackend)
    backend.chunk, backend.delay = 1, 0.2
    chat = MemoryAdapter(service)
    reply = chat.send("hello")
    await _until_updating(reply)
    await service.conversations.close(grace=0.5)
    assert reply.failed and reply.text is not None and reply.text.endswith(SHUTTING_DOWN)
    turns = await service.store.history(KEY)
    assert [(t.role, t.status) for t in turns] == [("user", "complete"), ("assistant", "partial")]
    assert reply.text.startswith(turns[1].content)
    # New messages are turned away, not lost in a queue nobody reads.
    late = chat.send("anyone?")
    assert "try again" in await late.wait()


def test_ops_config_defaults_are_loopback() -> None:
    assert dataclasses.asdict(OpsConfig())["host"] == "127.0.0.1"
