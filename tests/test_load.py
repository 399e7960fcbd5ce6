"""A burst of traffic on the real local backend (tiny model): answered once each, in order,
with bounded memory and an event loop that keeps breathing."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time

import psutil

from adapters.memory import MemoryAdapter, MemoryReply
from bot.app.wiring import build_service
from bot.config import Config
from bot.core.service import Outcome
from bot.events import ConversationKey

USERS, CONVERSATIONS, MESSAGES = 60, 30, 300


async def _loop_lag(stop: asyncio.Event, worst: list[float]) -> None:
    """How late a 10 ms timer fires: what every other coroutine on the loop would feel."""
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(0.01)
        worst[0] = max(worst[0], time.perf_counter() - start - 0.01)


async def test_a_burst_of_300_messages_is_answered_once_each_in_order(
    tiny_config: Config,
) -> None:
    config = dataclasses.replace(
        tiny_config,
        model=dataclasses.replace(tiny_config.model, max_new_tokens=3, max_batch_size=16),
        bot=dataclasses.replace(tiny_config.bot, max_pending=MESSAGES),
    )
    async with build_service(config) as service:
        chat = MemoryAdapter(service)
        await chat.send("warm up", channel="warm").wait()
        gc.collect()
        process = psutil.Process()
        rss_before = process.memory_info().rss
        stop, worst = asyncio.Event(), [0.0]
        watcher = asyncio.create_task(_loop_lag(stop, worst))
        replies: list[tuple[int, MemoryReply]] = []
        for index in range(MESSAGES):
            conversation = index % CONVERSATIONS
            user = f"user{(index * 7) % USERS}"
            # Every tenth message talks past the bot: it must stay unanswered.
            addressed = index % 10 != 9
            reply = chat.send(
                f"message {index}", channel=f"chan{conversation}", user=user, addressed=addressed
            )
            replies.append((index, reply))
            if index % 20 == 0:
                await asyncio.sleep(0)  # arrivals spread a little, as from a real socket
        await chat.drain(seconds=600)
        stop.set()
        await watcher
        rss_after = process.memory_info().rss

        answered = [i for i, r in replies if r.outcome is Outcome.ANSWERED]
        ignored = [i for i, r in replies if r.outcome is Outcome.IGNORED]
        assert len(answered) == 270 and len(ignored) == 30
        assert all(r.text is not None and not r.failed for i, r in replies if i in answered)
        assert all(r.text is None and not r.started for i, r in replies if i in ignored)
        for conversation in range(CONVERSATIONS):
            turns = await service.store.history(
                ConversationKey("memory", "", f"chan{conversation}"), limit=100
            )
            users = [t.content for t in turns if t.role == "user"]
            expected = [f"message {i}" for i in answered if i % CONVERSATIONS == conversation]
            assert users == expected  # each once, in the order sent
            assert [t.role for t in turns] == ["user", "assistant"] * len(expected)
        assert service.conversations.pending == 0
        # Shown with -s: the figures the reliability notes quote.
        grown = (rss_after - rss_before) / 2**20
        print(f"\n300 messages: worst event-loop lag {worst[0] * 1000:.0f} ms, RSS +{grown:.0f} MB")
        assert worst[0] < 0.1, f"the event loop stalled for {worst[0] * 1000:.0f} ms"
        assert rss_after - rss_before < 300 * 2**20
