"""The Redis store against a real redis-server, and two Parley replicas sharing it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from adapters.memory import MemoryAdapter, MemoryReply
from bot.config import Config, KnowledgeConfig, StoreConfig
from bot.core.service import Outcome, Service
from bot.errors import StoreError
from bot.events import ConversationKey, Event
from bot.generation.base import ChatMessage
from bot.storage import build_store
from bot.storage.redis import RedisStore, mask_url
from tests.conftest import make_config
from tests.redis_server import RedisServer
from tests.scripted import ScriptedBackend

KEY = ConversationKey("slack", "T1", "C1", "1700000000.000100")


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_url)
    await store.open()
    yield store
    await store.close()


def _config(tmp_path: Path, url: str) -> Config:
    config = make_config(tmp_path, tmp_path)
    return dataclasses.replace(config, store=StoreConfig(path=str(tmp_path / "x.db"), url=url))


def _echo(messages: Sequence[ChatMessage]) -> str:
    return f"answer to {messages[-1].content}"


@pytest.fixture
async def replicas(tmp_path: Path, redis_url: str) -> AsyncIterator[list[Service]]:
    """Two services sharing one Redis, as two Parley processes behind a load balancer."""
    config = _config(tmp_path, redis_url)
    services = [
        Service(config, ScriptedBackend(_echo, chunk=3, delay=0.001), build_store(config))
        for _ in range(2)
    ]
    for service in services:
        await service.start()
    yield services
    for service in services:
        await service.close()


def _event(text: str, message_id: str) -> Event:
    return Event(
        platform="slack",
        workspace="T1",
        channel="C1",
        thread="1700000000.000100",
        user="U1",
        text=text,
        message_id=message_id,
    )


# -- the store on its own -------------------------------------------------------------------
async def test_history_reset_and_a_second_connection_see_the_same_conversation(
    store: RedisStore, redis_url: str
) -> None:
    await store.append(KEY, "user", "hello", user="U1", message_id="m1")
    await store.append(KEY, "assistant", "hi there", message_id="r1")
    other = RedisStore(redis_url)
    await other.open()
    try:
        turns = await other.history(KEY)
        assert [(t.role, t.content) for t in turns] == [
            ("user", "hello"),
            ("assistant", "hi there"),
        ]
        assert turns[0].created_at.tzinfo is UTC
        await other.reset(KEY)
        await other.append(KEY, "user", "again", user="U1")
        assert [t.content for t in await store.history(KEY)] == ["again"]
        assert [t.content for t in await store.history(KEY, limit=1)] == ["again"]
        assert await store.history(ConversationKey("slack", "T1", "C2")) == []
    finally:
        await other.close()


async def test_history_limit_keeps_the_newest_turns(store: RedisStore) -> None:
    for i in range(5):
        await store.append(KEY, "user", f"q{i}", user="U1")
    assert [t.content for t in await store.history(KEY, limit=2)] == ["q3", "q4"]


async def test_claims_quotas_handoffs_and_feedback(store: RedisStore) -> None:
    assert await store.claim("slack/T1/C1/Ev1", 60)
    assert not await store.claim("slack/T1/C1/Ev1", 60)

    since = datetime.now(UTC) - timedelta(minutes=1)
    await store.append(KEY, "user", "one", user="U1")
    await store.append(KEY, "user", "two", user="U1")
    await store.append(KEY, "user", "other's", user="U2")
    assert await store.count_questions("slack", "T1", "U1", since) == 2
    assert await store.count_questions("slack", "T2", "U1", since) == 0
    assert await store.count_questions("slack", "T1", "U1", datetime.now(UTC)) == 0

    assert await store.handoff_since(KEY) is None
    await store.start_handoff(KEY, "asked for a human")
    started = await store.handoff_since(KEY)
    assert started is not None and started >= since
    await store.end_handoff(KEY)
    assert await store.handoff_since(KEY) is None

    await store.append(KEY, "user", "How do I reset my password?", user="U1")
    await store.append(KEY, "assistant", "Use 'Forgot password'.", message_id="R9")
    # Ratings find the answer from anywhere in its channel (reactions do not name a thread).
    channel = ConversationKey("slack", "T1", "C1")
    assert await store.add_feedback(channel, "R9", "U1", "up")
    assert await store.add_feedback(channel, "R9", "U1", "down")
    assert not await store.add_feedback(channel, "no-such-reply", "U1", "up")
    assert not await store.add_feedback(ConversationKey("slack", "T1", "C2"), "R9", "U1", "up")


async def test_a_stalled_replica_cannot_append_after_losing_the_lock(
    store: RedisStore, redis_url: str
) -> None:
    other = RedisStore(redis_url)
    await other.open()
    raw = aioredis.Redis.from_url(redis_url)
    try:
        async with store.conversation_lock(KEY):
            await store.append(KEY, "user", "first", user="U1")
            # The holder stalls past its TTL: the lock expires and the other replica takes it.
            await raw.delete("parley:lock:" + str(KEY))
            async with other.conversation_lock(KEY):
                await other.append(KEY, "user", "second", user="U1")
                with pytest.raises(StoreError, match="lost the conversation's lock"):
                    await store.append(KEY, "assistant", "late answer to first")
                await other.append(KEY, "assistant", "answer to second")
        assert [t.content for t in await store.history(KEY)] == [
            "first",
            "second",
            "answer to second",
        ]
    finally:
        await raw.aclose()
        await other.close()


async def test_an_unreachable_redis_is_one_clear_error(redis_server: RedisServer) -> None:
    store = RedisStore(f"redis://:hunter2@127.0.0.1:{redis_server.port + 1}/0")
    with pytest.raises(StoreError) as caught:
        await store.open()
    assert "hunter2" not in str(caught.value) and "127.0.0.1" in str(caught.value)
    assert mask_url("redis://:hunter2@h:1/0") == "redis://:***@h:1/0"


# -- two replicas -----------------------------------------------------------------------------
async def test_a_delivery_to_both_replicas_is_answered_once(replicas: list[Service]) -> None:
    event = _event("How do I reset my password?", "Ev100")
    first, second = MemoryReply(), MemoryReply()
    outcomes = await asyncio.gather(
        replicas[0].handle(event, first), replicas[1].handle(event, second)
    )
    assert sorted(o.value for o in outcomes) == [Outcome.ANSWERED.value, Outcome.DUPLICATE.value]
    answered = first if outcomes[0] is Outcome.ANSWERED else second
    assert answered.text == "answer to How do I reset my password?"
    assert (first if answered is second else second).text is None


async def test_a_conversation_continues_on_the_other_replica(replicas: list[Service]) -> None:
    one, two = MemoryReply(), MemoryReply()
    await replicas[0].handle(_event("My upload fails at 99%.", "M1"), one)
    await replicas[1].handle(_event("It's a 7 GB video.", "M2"), two)
    assert two.text == "answer to It's a 7 GB video."
    backend = replicas[1].backend
    assert isinstance(backend, ScriptedBackend)
    prompt = [(m.role, m.content) for m in backend.prompts[-1][1:]]
    assert prompt == [
        ("user", "My upload fails at 99%."),
        ("assistant", "answer to My upload fails at 99%."),
        ("user", "It's a 7 GB video."),
    ]


async def test_order_holds_with_concurrent_messages_on_both_replicas(
    replicas: list[Service],
) -> None:
    texts = [f"question {i}" for i in range(8)]
    replies = [MemoryReply() for _ in texts]
    outcomes = await asyncio.gather(
        *[
            replicas[i % 2].handle(_event(text, f"M{i}"), reply)
            for i, (text, reply) in enumerate(zip(texts, replies, strict=True))
        ]
    )
    assert all(o is Outcome.ANSWERED for o in outcomes)
    assert [r.text for r in replies] == [f"answer to {t}" for t in texts]
    turns = await replicas[0].store.history(KEY)
    # Each answer follows its own question, whichever replica wrote it: no interleaving.
    pairs = [(turns[i], turns[i + 1]) for i in range(0, len(turns), 2)]
    assert len(pairs) == len(texts)
    for question, answer in pairs:
        assert (question.role, answer.role) == ("user", "assistant")
        assert answer.content == f"answer to {question.content}"
    # And each prompt saw every earlier exchange: the history a replica read was complete.
    prompts = [p for s in replicas for p in s.backend.prompts]  # type: ignore[attr-defined]
    assert sorted(len(p) for p in prompts) == [2 + 2 * i for i in range(len(texts))]


async def test_a_question_left_by_a_killed_replica_is_answered_once_by_the_others(
    replicas: list[Service],
) -> None:
    adapters = [MemoryAdapter(service, "slack", durable=True) for service in replicas]
    # What a replica killed mid-answer leaves: the event taken in, its answer's message posted.
    event = _event("where is my parcel?", "m-killed")
    store = replicas[0].store
    await store.inbox_add(event)
    await store.inbox_add(event)  # a redelivery takes nothing in twice
    await store.inbox_mark(event.marker, "answering", "r-partial")
    assert (await store.inbox_count())[0] == 1
    [waiting] = await store.inbox_waiting()
    assert (waiting.event, waiting.state, waiting.reply_id) == (event, "answering", "r-partial")
    # Both replicas start and recover at once: one of them answers it, in the posted message.
    done = await asyncio.gather(*(service.recover("slack") for service in replicas))
    assert sorted(done) == [0, 1]
    [(_, reply)] = [resumed for adapter in adapters for resumed in adapter.resumed]
    assert reply.message_id == "r-partial"
    assert await reply.wait() == "answer to where is my parcel?"
    assert await store.inbox_count() == (0, None)
    assert await store.inbox_waiting() == []


async def test_two_replicas_share_one_rate_limit(tmp_path: Path, redis_url: str) -> None:
    base = _config(tmp_path, redis_url)
    # Two messages at once, then one every 10 s: the third message in a row is one too many,
    # whichever replica it reaches.
    config = dataclasses.replace(
        base, limits=dataclasses.replace(base.limits, user_per_minute=6, user_burst=2)
    )
    services = [Service(config, ScriptedBackend(_echo), build_store(config)) for _ in range(2)]
    for service in services:
        await service.start()
    try:
        outcomes = []
        for n, service in enumerate([*services, *services]):
            outcomes.append(await service.handle(_event(f"question {n}", f"rl-{n}"), MemoryReply()))
        assert outcomes == [
            Outcome.ANSWERED,
            Outcome.ANSWERED,
            Outcome.RATE_LIMITED,  # told to slow down, once
            Outcome.RATE_LIMITED,  # then silence
        ]
        # The notice went to the third message only.
        limited = MemoryReply()
        assert await services[1].handle(_event("again", "rl-x"), limited) == Outcome.RATE_LIMITED
        assert limited.text is None
        # Counted once each, whichever replica, for the console.
        today = datetime.now(UTC).date()
        counted = await services[0].store.outcome_counts(today)
        assert [(outcome, n) for _, _, outcome, n in counted] == [("rate_limited", 3)]
    finally:
        for service in services:
            await service.close()


async def test_the_shared_bucket_refills_on_redis_time(store: RedisStore) -> None:
    assert await store.take_token("user:u", 100.0, 1.0) == (True, 0.0, False)
    taken, wait, first = await store.take_token("user:u", 100.0, 1.0)
    assert (taken, first) == (False, True) and 0 < wait <= 0.01
    assert (await store.take_token("user:u", 100.0, 1.0))[2] is False  # told already
    await asyncio.sleep(0.05)
    assert (await store.take_token("user:u", 100.0, 1.0))[0] is True


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("stage", "reply_id"), [("taken", "resumed-m1"), ("posted", "reply-m1")])
async def test_a_question_taken_in_before_a_kill_is_answered_once_from_redis(
    tmp_path: Path, redis_url: str, stage: str, reply_id: str
) -> None:
    from tests.inbox_child import LEASE
    from tests.test_inbox import ANSWER, LIMITS, kill_at

    await asyncio.to_thread(kill_at, tmp_path / "x.db", stage, redis_url)
    await asyncio.sleep(LEASE + 0.2)  # the killed process's lease lapses
    config = Config(
        store=StoreConfig(path=str(tmp_path / "x.db"), url=redis_url),
        knowledge=KnowledgeConfig(enabled=False),
        limits=LIMITS,
    )
    service = Service(config, ScriptedBackend(ANSWER), build_store(config))
    await service.start()
    chat = MemoryAdapter(service, durable=True)
    assert await service.recover("memory") == 1
    [(event, reply)] = chat.resumed
    assert await reply.wait() == ANSWER and reply.message_id == reply_id
    assert await service.recover("memory") == 0
    turns = await service.store.history(event.key)
    assert [(t.role, t.content) for t in turns] == [
        ("user", "where is my parcel?"),
        ("assistant", ANSWER),
    ]
    await service.close()
