"""The remote backend against small loopback servers, for what a healthy server never does
(429s, 503s, refused keys). Against real vLLM servers: tests/test_vllm.py."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.memory import MemoryAdapter
from bot.app.commands.doctor import run_checks
from bot.app.wiring import build_service
from bot.config import Config, ModelConfig, RemoteConfig
from bot.core.service import Service
from bot.errors import Busy, GenerationError
from bot.generation.base import ChatMessage, GenerationParams
from bot.generation.remote import RemoteBackend
from tests.conftest import make_config
from tests.fakes.inference import serving as fake_inference

pytestmark = pytest.mark.bundled

MESSAGES = [
    ChatMessage("system", "You are a helpful support assistant."),
    ChatMessage("user", "How do I reset my password?"),
]
SHORT = GenerationParams(max_new_tokens=6, temperature=0.0)


def _remote(*urls: str, **changes: object) -> RemoteConfig:
    return dataclasses.replace(RemoteConfig(base_urls=list(urls)), **changes)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _backend(config: RemoteConfig) -> AsyncIterator[RemoteBackend]:
    backend = RemoteBackend(config, ModelConfig(context_window=2048))
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


# -- against small loopback servers ---------------------------------------------------------
async def test_429_and_503_are_retried_honouring_retry_after() -> None:
    async with fake_inference(refusals=[(429, "0"), (503, "0")]) as fake:
        async with _backend(_remote(fake.url, backoff=0.01)) as backend:
            assert "".join([d async for d in backend.stream(MESSAGES, SHORT)]) == "Hello there!"
        assert fake.hits == 3
        assert fake.bodies[0]["stream"] is True and fake.bodies[0]["max_tokens"] == 6


async def test_a_server_that_stays_overloaded_means_busy() -> None:
    async with fake_inference(always=(503, "0")) as fake:
        async with _backend(_remote(fake.url, retries=2, backoff=0.01)) as backend:
            with pytest.raises(Busy):
                async for _ in backend.stream(MESSAGES, SHORT):
                    pass
        assert fake.hits == 3


async def test_a_failing_server_is_left_out_while_another_answers() -> None:
    async with fake_inference() as good, fake_inference() as bad:
        async with _backend(_remote(bad.url, good.url, backoff=0.01)) as backend:
            bad.always = (503, "")  # it was healthy at start-up, then went wrong
            for _ in range(4):
                assert "".join([d async for d in backend.stream(MESSAGES, SHORT)]) == "Hello there!"
        assert bad.hits <= 1 and good.hits >= 3


async def test_a_refused_key_is_one_line_at_start_up_and_in_doctor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PARLEY_REMOTE_API_KEY", "wrong")
    async with fake_inference(key="right") as fake:
        with pytest.raises(GenerationError) as caught:
            await RemoteBackend(_remote(fake.url)).start()
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"inference server {fake.url}: authentication failed (HTTP 401)")
        assert "$PARLEY_REMOTE_API_KEY" in message and "wrong" not in message

        config = Config(model=ModelConfig(backend="remote"), remote=_remote(fake.url))
        config = dataclasses.replace(
            config, store=dataclasses.replace(config.store, path=str(tmp_path / "p.db"))
        )
        assert "authentication failed" in str((await run_checks(config))[0])

        monkeypatch.setenv("PARLEY_REMOTE_API_KEY", "right")
        async with _backend(_remote(fake.url)) as backend:
            assert backend.model == "support-model"
            assert "".join([d async for d in backend.stream(MESSAGES, SHORT)]) == "Hello there!"


async def test_a_service_with_the_remote_backend_needs_no_local_model(tmp_path: Path) -> None:
    async with fake_inference() as fake:
        config = dataclasses.replace(
            make_config(tmp_path / "no-model-here", tmp_path, backend="remote"),
            remote=_remote(fake.url),
        )
        async with build_service(config) as service:
            assert isinstance(service, Service)
            reply = MemoryAdapter(service).send("Hi")
            assert await reply.wait() == "Hello there!"
