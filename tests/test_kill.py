"""Parley as a deployment runs it: ``parley run`` in a process of its own, the unmodified
discord.py and slack-bolt clients talking to the loopback fakes, the model behind an
OpenAI-compatible server the test controls (so a kill lands in the middle of an answer every
time). SIGKILLed after taking a question in, or while streaming its answer, it leaves exactly
one complete answer after the restart, with SQLite or Redis; two processes sharing Redis
answer each question once and keep one rate limit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from bench.process import ParleyProcess
from bot.config import Config, StoreConfig
from bot.storage import build_store
from bot.storage.base import Waiting
from tests.fakes import discord, slack
from tests.fakes.inference import FakeInference
from tests.fakes.inference import serving as inference
from tests.fakes.slack import FakeSlack, event_body, new_ts

pytestmark = pytest.mark.timeout(180)

Platform = Literal["discord", "slack"]
PIECES = ("Your parcel", " left our depot", " this morning", " and arrives", " tomorrow.")
ANSWER = "".join(PIECES)
#: The lease a killed process leaves behind lapses this soon, so the restart recovers at once.
LEASE = 1.0
#: Long enough for a second answer to show, were there one.
SETTLE = 2.0


class Deployment:
    """One or more ``parley run`` processes sharing a store, against one platform's fake."""

    def __init__(
        self,
        platform: Platform,
        fake: discord.FakeDiscord | FakeSlack,
        model: FakeInference,
        folder: Path,
        redis_url: str = "",
        user_per_minute: int = 0,
    ) -> None:
        self.platform = platform
        self.fake = fake
        self.store = StoreConfig(path=str(folder / "parley.db"), url=redis_url)
        if isinstance(fake, discord.FakeDiscord):
            section = (
                f'[discord]\nenabled = true\napi_base = "{fake.api_base}"\n'
                f'gateway_url = "{fake.gateway_url}"\nedit_interval = 0.2\n'
                "guild_ready_timeout = 0.5\n"
            )
            env = {"DISCORD_TOKEN": fake.token}
        else:
            section = (
                f'[slack]\nenabled = true\napi_base = "{fake.api_base}"\nedit_interval = 0.2\n'
            )
            env = {"SLACK_BOT_TOKEN": slack.BOT_TOKEN, "SLACK_APP_TOKEN": slack.APP_TOKEN}
        config = folder / "parley.toml"
        config.write_text(
            f'[model]\nbackend = "remote"\n[remote]\nbase_urls = ["{model.url}"]\n'
            "[knowledge]\nenabled = false\n"
            f'[store]\npath = "{self.store.path}"\nurl = "{redis_url}"\nlock_ttl = {LEASE}\n'
            "[web]\nenabled = false\n[ops]\nenabled = false\n"
            f"[limits]\nuser_per_minute = {user_per_minute}\nuser_burst = {user_per_minute}\n"
            "channel_per_minute = 0\n"
            "bot_messages_per_channel_minute = 0\nrecover_per_minute = 0\n" + section,
            encoding="utf-8",
        )
        self.log = (folder / "parley.log").open("a", encoding="utf-8")
        self.config, self.env = config, env
        self.processes: list[ParleyProcess] = []

    def _connections(self) -> int:
        if isinstance(self.fake, discord.FakeDiscord):
            return len(self.fake.identifies)
        return self.fake.connections

    async def start(self, count: int = 1) -> None:
        """Start ``count`` processes and wait until each is connected."""
        before = self._connections()
        self.processes = [ParleyProcess(self.config, self.log, self.env) for _ in range(count)]
        for process in self.processes:
            await process.start()
        await self.fake.wait_for(lambda: self._connections() >= before + count, 60)

    async def kill(self) -> None:
        for process in self.processes:
            await process.kill()
            assert process.process is not None and process.process.returncode == -9

    async def stop(self) -> None:
        for process in self.processes:
            await process.stop()
        self.log.close()

    async def inbox(self) -> list[Waiting]:
        store = build_store(Config(store=self.store))
        await store.open()
        try:
            return await store.inbox_waiting()
        finally:
            await store.close()

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(encoding="utf-8")[-3000:]

    async def ask(self, text: str) -> str:
        """A user addresses the bot; returns the question's id (message id / ts)."""
        if isinstance(self.fake, discord.FakeDiscord):
            sent = await self.fake.send_message(
                f"<@{discord.BOT_ID}> {text}", mentions=(discord.BOT_ID,)
            )
            return str(sent["id"])
        ts = new_ts()
        event = {
            "type": "app_mention",
            "user": slack.ALICE,
            "text": f"<@{slack.BOT_USER}> {text}",
            "ts": ts,
            "channel": slack.CHANNEL,
        }
        await self.fake.send_envelope("events_api", event_body(event))
        return ts

    def replies(self, question: str) -> list[str]:
        """What the bot has posted in answer to ``question``, oldest first."""
        if isinstance(self.fake, discord.FakeDiscord):
            return [
                str(m["content"])
                for m in self.fake.messages.values()
                if m.get("message_reference", {}).get("message_id") == question
            ]
        return [m.body for m in self.fake.thread(slack.CHANNEL, question)]

    async def wait(self, probe: Callable[[], Any], within: float = 60.0) -> None:
        try:
            await self.fake.wait_for(probe, within)
        except TimeoutError:
            raise AssertionError(f"timed out; Parley's log ends:\n{self.tail()}") from None

    async def answered(self, question: str) -> None:
        """Wait until the answer is complete and nothing waits in the inbox, then a moment
        more, so that a second answer would show."""
        await self.wait(lambda: ANSWER in self.replies(question))
        for _ in range(200):
            if not await self.inbox():
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(SETTLE)


@contextlib.asynccontextmanager
async def deployed(
    platform: Platform, folder: Path, redis_url: str = "", **options: Any
) -> AsyncIterator[tuple[Deployment, FakeInference]]:
    fake: discord.FakeDiscord | FakeSlack
    fake = await (discord.FakeDiscord() if platform == "discord" else FakeSlack()).start()
    try:
        async with inference(pieces=PIECES) as model:
            deployment = Deployment(platform, fake, model, folder, redis_url, **options)
            try:
                yield deployment, model
            finally:
                await deployment.stop()
    finally:
        await fake.close()


async def kill_and_restart(
    platform: Platform, stage: str, folder: Path, redis_url: str = ""
) -> None:
    """Kill Parley at ``stage`` of answering one question; after the restart the question has
    exactly one reply, the whole answer, and the inbox is empty."""
    async with deployed(platform, folder, redis_url) as (parley, model):
        model.stall_after = 0 if stage == "taken" else 2
        await parley.start()
        question = await parley.ask("where is my parcel?")
        if stage == "taken":
            # Acknowledged (Slack) and handed to the model, which has written nothing yet.
            await parley.wait(lambda: model.bodies)
            if isinstance(parley.fake, FakeSlack):
                await parley.wait(lambda: set(parley.fake.sent_envelopes) <= parley.fake.acked)
        else:
            # The first words are posted, and the store knows the message they are in.
            await parley.wait(
                lambda: any(r.startswith(PIECES[0]) for r in parley.replies(question))
            )
            for _ in range(100):
                if [w for w in await parley.inbox() if w.reply_id]:
                    break
                await asyncio.sleep(0.05)
        [cut] = await parley.inbox()
        assert cut.state == ("received" if stage == "taken" else "answering")
        assert ANSWER not in parley.replies(question)
        await parley.kill()

        model.release()
        await parley.start()
        await parley.answered(question)
        assert parley.replies(question) == [ANSWER], parley.tail()
        assert await parley.inbox() == []


@pytest.mark.parametrize("platform", ["discord", "slack"])
@pytest.mark.parametrize("stage", ["taken", "streaming"])
async def test_a_kill_leaves_exactly_one_complete_answer(
    platform: Platform, stage: str, tmp_path: Path
) -> None:
    await kill_and_restart(platform, stage, tmp_path)


@pytest.mark.parametrize("platform", ["discord", "slack"])
async def test_a_kill_mid_stream_with_the_redis_store_leaves_one_complete_answer(
    platform: Platform, tmp_path: Path, redis_url: str
) -> None:
    await kill_and_restart(platform, "streaming", tmp_path, redis_url)


async def test_a_slack_question_asked_while_parley_is_down_is_answered_once_it_is_back(
    tmp_path: Path,
) -> None:
    async with deployed("slack", tmp_path) as (parley, _):
        assert isinstance(parley.fake, FakeSlack)
        parley.fake.ack_within = 0.5
        question = await parley.ask("where is my parcel?")
        await asyncio.sleep(1.2)  # Slack retries while nobody is connected
        await parley.start()
        await parley.answered(question)
        assert parley.replies(question) == [ANSWER]
        [envelope] = parley.fake.sent_envelopes
        assert envelope in parley.fake.acked


async def test_two_processes_sharing_redis_answer_each_question_once(
    tmp_path: Path, redis_url: str
) -> None:
    async with deployed("discord", tmp_path, redis_url) as (parley, _):
        await parley.start(count=2)  # Discord sends every message to both
        questions = [await parley.ask(f"where is parcel {n}?") for n in range(6)]
        for question in questions:
            await parley.wait(lambda q=question: ANSWER in parley.replies(q))  # type: ignore[misc]
        await asyncio.sleep(SETTLE)
        assert [parley.replies(q) for q in questions] == [[ANSWER]] * 6, parley.tail()


async def test_two_processes_sharing_redis_keep_one_rate_limit(
    tmp_path: Path, redis_url: str
) -> None:
    async with deployed("slack", tmp_path, redis_url, user_per_minute=3) as (parley, _):
        assert isinstance(parley.fake, FakeSlack)
        await parley.start(count=2)  # Slack hands each envelope to one of the two, in turn
        questions = [await parley.ask(f"where is parcel {n}?") for n in range(6)]
        envelopes = parley.fake.sent_envelopes
        await parley.wait(lambda: set(envelopes) <= parley.fake.acked)
        await parley.wait(lambda: sum(ANSWER in parley.replies(q) for q in questions) >= 3)
        await asyncio.sleep(SETTLE)
        # Each process took three; alone, each would have answered all three.
        assert sum(ANSWER in parley.replies(q) for q in questions) == 3, parley.tail()
        told = [r for q in questions for r in parley.replies(q) if r != ANSWER]
        assert len(told) == 1 and "faster than I can answer" in told[0]
