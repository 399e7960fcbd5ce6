"""Parley's remote backend against real vLLM OpenAI servers (vLLM's CPU build in its own venv,
``.ci/install-vllm``), two of them serving the bundled model, and two Parley replicas sharing
one Redis in front of them, as "Running at scale" in the README sets it up.

The servers take a minute or two to start (vLLM compiles the model), so the module starts both
at once and shares them; the test that kills one runs last."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from adapters.memory import MemoryAdapter, MemoryReply
from bot.app.cli import main
from bot.app.commands.doctor import run_checks
from bot.app.wiring import build_service
from bot.config import Config, RemoteConfig, StoreConfig
from bot.core.service import Outcome, Service
from bot.core.wording import APOLOGY
from bot.events import Event
from bot.generation.base import ChatMessage, GenerationParams
from bot.generation.models import PromptFormat
from bot.generation.remote import RemoteBackend
from bot.storage import build_store
from tests.conftest import make_config
from tests.servers import VllmServer, free_port

pytestmark = [pytest.mark.bundled, pytest.mark.timeout(600)]

MESSAGES = [
    ChatMessage("system", "You are a helpful support assistant."),
    ChatMessage("user", "How do I reset my password?"),
]
SHORT = GenerationParams(max_new_tokens=6, temperature=0.0)


@pytest.fixture(scope="module")
def servers(bundled_dir: Path) -> Iterator[list[VllmServer]]:
    """Two vLLM servers, each on a core of its own where there are two."""
    cores = os.cpu_count() or 1
    pair = [VllmServer(bundled_dir, cpus=str(n % cores)) for n in range(2)]
    with ThreadPoolExecutor(len(pair)) as pool:
        started = [pool.submit(server.start, 480.0) for server in pair]
        failed = [f.exception() for f in started if f.exception() is not None]
    if failed:
        for server in pair:
            server.stop()
        raise failed[0]  # type: ignore[misc]
    yield pair
    for server in pair:
        server.stop()


def _remote(*servers: VllmServer, **changes: object) -> RemoteConfig:
    urls = [server.url for server in servers]
    return dataclasses.replace(RemoteConfig(base_urls=urls), **changes)  # type: ignore[arg-type]


def _config(tmp_path: Path, bundled_dir: Path, remote: RemoteConfig, **model: object) -> Config:
    base = make_config(bundled_dir, tmp_path, backend="remote", **model)
    return dataclasses.replace(base, remote=remote)


@dataclasses.dataclass(eq=False)
class _Watched(MemoryReply):
    shown: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def update(self, text: str) -> None:
        await super().update(text)
        self.shown.set()


async def _long_answer(
    service: Service, story: str
) -> tuple[Event, _Watched, asyncio.Task[Outcome]]:
    """A long answer under way, its first text shown: the event, its reply, and the task."""
    event = MemoryAdapter(service).event(f"Write a very long story about {story}.")
    reply = _Watched()
    answering = asyncio.create_task(service.handle(event, reply))
    await asyncio.wait_for(reply.shown.wait(), 120)
    return event, reply, answering


async def _until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    async with asyncio.timeout(seconds):
        while not await asyncio.to_thread(condition):  # noqa: ASYNC110 - a server's metric
            await asyncio.sleep(0.2)


async def test_streams_in_pieces_with_exact_token_counts(
    servers: list[VllmServer], bundled_dir: Path
) -> None:
    backend = RemoteBackend(_remote(servers[0], tokenizer=str(bundled_dir)))
    await backend.start()
    try:
        assert backend.model == VllmServer.SERVED  # "" takes the one model the server lists
        deltas = [d async for d in backend.stream(MESSAGES, SHORT)]
        assert len(deltas) >= 2 and "".join(deltas).strip()
        assert backend.in_flight == 0

        from transformers import AutoTokenizer

        exact = len(PromptFormat(AutoTokenizer.from_pretrained(str(bundled_dir))).encode(MESSAGES))
        assert backend.count_tokens(MESSAGES) == exact
    finally:
        await backend.close()


async def test_a_conversation_is_answered_the_same_in_process_and_through_vllm(
    servers: list[VllmServer], bundled_dir: Path, tmp_path: Path
) -> None:
    """Greedy decoding of the same weights in float32: the same words, turn after turn. (The
    repetition penalty is the local engine's own, not sent to a server: off here.)"""
    questions = ["How do I reset my password?", "And if I no longer have that email address?"]
    answers: dict[str, list[str]] = {}
    for where in ("local", "remote"):
        config = make_config(
            bundled_dir, tmp_path / where, backend=where, max_new_tokens=20, repetition_penalty=1.0
        )
        config = dataclasses.replace(config, remote=_remote(*servers))
        (tmp_path / where).mkdir()
        async with build_service(config) as service:
            chat = MemoryAdapter(service)
            answers[where] = [await chat.send(question).wait() for question in questions]
    assert answers["remote"] == answers["local"]
    assert all(answer.strip() for answer in answers["local"])


async def test_an_answer_streams_into_the_reply_and_joins_the_history(
    servers: list[VllmServer], bundled_dir: Path, tmp_path: Path
) -> None:
    config = _config(tmp_path, bundled_dir, _remote(*servers), max_new_tokens=24)
    async with build_service(config) as service:
        chat = MemoryAdapter(service)
        reply = chat.send("Hi, can you help me with my account?")
        text = await reply.wait()
        assert not reply.failed and len(reply.updates) >= 2 and text == reply.updates[-1]
        turns = await service.store.history(chat.event("x").key)
        assert [(t.role, t.content) for t in turns] == [
            ("user", "Hi, can you help me with my account?"),
            ("assistant", text),
        ]


async def test_a_cancelled_answer_frees_its_sequence_on_the_server(
    servers: list[VllmServer], bundled_dir: Path, tmp_path: Path
) -> None:
    server = servers[0]
    config = _config(tmp_path, bundled_dir, _remote(server), max_new_tokens=1500)
    async with build_service(config) as service:
        event, reply, answering = await _long_answer(service, "a cat who travels the world")
        assert await asyncio.to_thread(server.running) == 1
        # The reader went away (a closed web page): the answer stops, on the server too.
        assert service.cancel(event.key)
        await _until(lambda: server.running() == 0)
        await asyncio.gather(answering, return_exceptions=True)  # cancelled with its answer
        turns = await service.store.history(event.key)
        assert turns[-1].status == "partial" and reply.updates[-1].startswith(turns[-1].content)


async def test_two_replicas_on_one_redis_answer_each_question_once(
    servers: list[VllmServer], bundled_dir: Path, tmp_path: Path, redis_url: str
) -> None:
    config = _config(tmp_path, bundled_dir, _remote(*servers), max_new_tokens=8)
    config = dataclasses.replace(
        config, store=StoreConfig(path=str(tmp_path / "x.db"), url=redis_url)
    )
    replicas = []
    for _ in range(2):
        replica = Service(config, RemoteBackend(config.remote, config.model), build_store(config))
        await replica.start()
        replicas.append(replica)
    try:
        questions = ["How do I reset my password?", "Can I pay by bank transfer?", "Hello!"]
        events = [
            Event(
                platform="slack",
                workspace="T1",
                channel="C1",
                thread=f"17000000{n}.000100",
                user="U1",
                text=question,
                message_id=f"17000000{n}.000100",
            )
            for n, question in enumerate(questions)
        ]
        # Every delivery reaches both replicas at once (a retry, a load balancer's double).
        replies = [(MemoryReply(), MemoryReply()) for _ in events]
        outcomes = await asyncio.gather(
            *(
                replica.handle(event, reply)
                for event, pair in zip(events, replies, strict=True)
                for replica, reply in zip(replicas, pair, strict=True)
            )
        )
        for n, event in enumerate(events):
            pair = sorted(o.value for o in outcomes[2 * n : 2 * n + 2])
            assert pair == [Outcome.ANSWERED.value, Outcome.DUPLICATE.value]
            answered = [r for r in replies[n] if r.text is not None]
            assert len(answered) == 1 and answered[0].text and not answered[0].failed
            turns = await replicas[0].store.history(event.key)
            assert [(t.role, t.content) for t in turns] == [
                ("user", event.text),
                ("assistant", answered[0].text),
            ]
    finally:
        for replica in replicas:
            await replica.close()


async def test_doctor_names_each_mistake_in_one_line(
    servers: list[VllmServer], bundled_dir: Path, tmp_path: Path
) -> None:
    server = servers[0]
    base = make_config(bundled_dir, tmp_path, backend="remote")

    async def check(remote: RemoteConfig) -> str:
        lines = [str(c) for c in await run_checks(dataclasses.replace(base, remote=remote))]
        assert len(lines) == 2 and lines[1].startswith("ok    store sqlite ")
        return lines[0]

    assert await check(_remote(server)) == (
        f"ok    backend {server.url}: serves model '{VllmServer.SERVED}'"
    )
    dead = f"http://127.0.0.1:{free_port()}"
    assert (await check(RemoteConfig(base_urls=[dead]))).startswith(
        f"FAIL  backend {dead}: cannot connect"
    )
    assert "no OpenAI-compatible API at this base URL" in await check(
        RemoteConfig(base_urls=[server.url + "/x"])
    )
    assert f"does not have model 'gpt-4o'; it serves: {VllmServer.SERVED}" in await check(
        _remote(server, model="gpt-4o")
    )
    path = tmp_path / "parley.toml"
    path.write_text(
        f'[model]\nbackend = "remote"\n[remote]\nbase_urls = ["{server.url}"]\nmodel = "nope"\n'
        f'[store]\npath = "{tmp_path / "p.db"}"\n'
    )
    assert await asyncio.to_thread(main, ["--config", str(path), "doctor"]) == 1


async def test_a_server_dying_mid_answer_gets_the_apology_and_the_other_takes_the_next(
    servers: list[VllmServer], bundled_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Last in this module: it kills one of the servers."""
    config = _config(tmp_path, bundled_dir, _remote(*servers), max_new_tokens=1500)
    async with build_service(config) as service:
        event, reply, answering = await _long_answer(service, "a dog who learns to sail")
        chat = MemoryAdapter(service)
        running = [await asyncio.to_thread(server.running) for server in servers]
        doomed, other = (servers[0], servers[1]) if running[0] else (servers[1], servers[0])
        doomed.kill()
        await answering
        text = await reply.wait()
        assert reply.failed and APOLOGY in text
        turns = await service.store.history(event.key)
        assert [(t.role, t.status) for t in turns] == [
            ("user", "complete"),
            ("assistant", "failed"),
        ]
        assert turns[1].content and text.startswith(turns[1].content)
        assert f"inference server {doomed.url}: connection lost mid-reply" in caplog.text

        before = await asyncio.to_thread(other.finished)
        after = chat.send("Thanks. How do I change my email address?")
        assert (await after.wait()).strip() and not after.failed
        assert await asyncio.to_thread(other.finished) == before + 1
