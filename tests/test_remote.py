"""The remote backend against a real ``transformers serve`` on loopback (the bundled model), and
against small loopback servers for what a healthy server never does (429s, refused keys)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psutil
import pytest

from adapters.memory import MemoryAdapter, MemoryReply
from bot.app.cli import main
from bot.app.commands.doctor import run_checks
from bot.app.wiring import build_service
from bot.config import Config, ModelConfig, RemoteConfig
from bot.core.service import Service
from bot.core.wording import APOLOGY
from bot.errors import Busy, GenerationError
from bot.generation.base import ChatMessage, GenerationParams
from bot.generation.models import PromptFormat
from bot.generation.remote import RemoteBackend
from tests.conftest import make_config
from tests.fakes.inference import serving as fake_inference
from tests.transformers_server import TransformersServer

pytestmark = pytest.mark.bundled

MESSAGES = [
    ChatMessage("system", "You are a helpful support assistant."),
    ChatMessage("user", "How do I reset my password?"),
]
SHORT = GenerationParams(max_new_tokens=6, temperature=0.0)


@pytest.fixture(scope="module")
def server(bundled_dir: Path) -> Iterator[TransformersServer]:
    serve = TransformersServer(bundled_dir)
    serve.start()
    yield serve
    serve.stop()


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


def _unused_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def _connections_to(url: str) -> list[object]:
    port = int(url.rsplit(":", 1)[1])
    return [
        c
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    ]


async def _settled(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Whether ``condition`` holds within ``seconds``: a closed socket goes on the loop's next
    turns, not at once."""
    async with asyncio.timeout(seconds):
        for _ in itertools.count():
            if condition():
                return True
            await asyncio.sleep(0.01)
    return False


@dataclasses.dataclass(eq=False)
class _Watched(MemoryReply):
    shown: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def update(self, text: str) -> None:
        await super().update(text)
        self.shown.set()


# -- against transformers serve -------------------------------------------------------------
async def test_streams_a_reply_in_pieces_with_exact_token_counts(
    server: TransformersServer, bundled_dir: Path
) -> None:
    async with _backend(_remote(server.url + "/v1", tokenizer=str(bundled_dir))) as backend:
        assert backend.model == server.model  # "" takes the one model the server lists
        deltas = [d async for d in backend.stream(MESSAGES, SHORT)]
        assert len(deltas) >= 2 and "".join(deltas).strip()
        assert backend.in_flight == 0

        from transformers import AutoTokenizer

        exact = len(PromptFormat(AutoTokenizer.from_pretrained(str(bundled_dir))).encode(MESSAGES))
        assert backend.count_tokens(MESSAGES) == exact
    # Without the tokenizer the estimate errs on the long side, so trimming stays in the window.
    estimate = RemoteBackend(_remote(server.url)).count_tokens(MESSAGES)
    assert estimate >= exact


async def test_a_service_answers_through_the_server_and_keeps_the_history(
    server: TransformersServer, bundled_dir: Path, tmp_path: Path
) -> None:
    config = dataclasses.replace(
        make_config(bundled_dir, tmp_path, backend="remote", max_new_tokens=6),
        remote=_remote(server.url),
    )
    async with build_service(config) as service:
        reply = MemoryAdapter(service).send("Hi, can you help me?")
        text = await reply.wait()
        assert text.strip() and not reply.failed
        turns = await service.store.history(MemoryAdapter(service).event("x").key)
        assert [t.role for t in turns] == ["user", "assistant"]
        assert turns[1].content == text


async def test_closing_a_stream_closes_its_http_connection(server: TransformersServer) -> None:
    async with _backend(_remote(server.url)) as backend:
        long = GenerationParams(max_new_tokens=200, temperature=0.0)
        async with contextlib.aclosing(backend.stream(MESSAGES, long)) as deltas:
            async for _ in deltas:
                assert _connections_to(server.url)
                break
        assert backend.in_flight == 0
        assert await _settled(lambda: not _connections_to(server.url))
        # The server is free for the next reply (it is not still writing the abandoned one).
        assert "".join([d async for d in backend.stream(MESSAGES, SHORT)]).strip()


async def test_a_server_killed_mid_reply_is_a_clear_error_and_the_part_is_kept(
    bundled_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    doomed = TransformersServer(bundled_dir)
    await asyncio.to_thread(doomed.start)
    try:
        config = dataclasses.replace(
            make_config(bundled_dir, tmp_path, backend="remote", max_new_tokens=200),
            remote=_remote(doomed.url),
        )
        async with build_service(config) as service:
            adapter = MemoryAdapter(service)
            reply = _Watched()
            event = adapter.event("Write a long story about a cat.")
            answering = asyncio.create_task(service.handle(event, reply))
            # The first text on screen, then the crash.
            await asyncio.wait_for(reply.shown.wait(), 120)
            doomed.kill()
            await answering
            text = await reply.wait()
            assert reply.failed and APOLOGY in text
            turns = await service.store.history(adapter.event("x").key)
            assert [(t.role, t.status) for t in turns] == [
                ("user", "complete"),
                ("assistant", "failed"),
            ]
            assert turns[1].content and text.startswith(turns[1].content)
        assert f"inference server {doomed.url}: connection lost mid-reply" in caplog.text
    finally:
        doomed.stop()


async def test_doctor_names_each_mistake_in_one_line(
    server: TransformersServer, bundled_dir: Path, tmp_path: Path
) -> None:
    base = make_config(bundled_dir, tmp_path, backend="remote")

    async def check(remote: RemoteConfig) -> str:
        lines = [str(c) for c in await run_checks(dataclasses.replace(base, remote=remote))]
        assert len(lines) == 2 and lines[1].startswith("ok    store sqlite ")
        return lines[0]

    assert await check(_remote(server.url)) == (
        f"ok    backend {server.url}: serves model '{server.model}'"
    )
    dead = _unused_url()
    assert (await check(_remote(dead))).startswith(f"FAIL  backend {dead}: cannot connect")
    assert "no OpenAI-compatible API at this base URL" in await check(_remote(server.url + "/x"))
    assert f"the server does not have model 'gpt-4o'; it serves: {server.model}" in await check(
        _remote(server.url, model="gpt-4o")
    )


def test_parley_doctor_exits_non_zero_on_a_problem(
    server: TransformersServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "parley.toml"
    path.write_text(
        f'[model]\nbackend = "remote"\n[remote]\nbase_urls = ["{server.url}"]\nmodel = "nope"\n'
        f'[store]\npath = "{tmp_path / "p.db"}"\n'
    )
    assert main(["--config", str(path), "doctor"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FAIL  backend") and "does not have model 'nope'" in out[0]
    assert out[1].startswith("ok    store")


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
