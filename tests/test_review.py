"""Staff in the loop: how far the bot acts on its own, channel by channel (policy ``autonomy``).

``shadow``: the bot writes its answer for the team to read in ``parley report`` and posts
nothing, so a team can watch what it would say before letting it answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.memory import MemoryAdapter
from bot.app.commands.report import build_report, format_report
from bot.app.wiring import load
from bot.config import Config, LimitsConfig, PolicyConfig, PolicyOverride, StoreConfig
from bot.core.gate import Outcome
from bot.core.service import Service
from bot.errors import ConfigError
from bot.events import ConversationKey
from bot.storage import build_store
from tests.scripted import ScriptedBackend

ANSWER = "Open Settings, then Billing."
WATCHED = PolicyOverride(name="watched", channel="c-new", autonomy="shadow")


def _config(store: StoreConfig, policy: PolicyConfig) -> Config:
    no_limits = LimitsConfig(
        user_per_minute=0, channel_per_minute=0, bot_messages_per_channel_minute=0
    )
    return Config(store=store, limits=no_limits, policy=policy)


async def test_a_shadow_channel_keeps_the_answer_for_the_team_and_shows_nothing(
    store_config: StoreConfig,
) -> None:
    config = _config(store_config, PolicyConfig(overrides=[WATCHED]))
    backend = ScriptedBackend(ANSWER)
    async with Service(config, backend, build_store(config)) as service:
        chat = MemoryAdapter(service)
        watched = chat.send("Where are my invoices?", channel="c-new")
        await chat.drain()
        answered = chat.send("Where are my invoices?", channel="c-live")
        assert await answered.wait() == ANSWER

        # Nothing reached the customer in the watched channel: no message, no typing.
        assert watched.outcome is Outcome.SHADOWED
        assert not watched.started and watched.updates == [] and watched.text is None
        # The question is in the conversation; the unseen answer is not (the next prompt
        # must not claim the bot said it).
        history = await service.history(ConversationKey("memory", "", "c-new"))
        assert [(t.role, t.content) for t in history] == [("user", "Where are my invoices?")]
        (draft,) = await service.store.drafts()
        assert (draft.question, draft.answer, draft.state) == (
            "Where are my invoices?",
            ANSWER,
            "shadow",
        )
        assert draft.conversation == str(ConversationKey("memory", "", "c-new"))
        report = await build_report(service.store, days=1)
    assert report.shadowed == 1
    text = format_report(report)
    assert "Answers written in shadow, not posted (1" in text
    assert f"A: {ANSWER}" in text and "Q: Where are my invoices?" in text


async def test_shadow_by_default_with_one_channel_live(tmp_path: Path) -> None:
    live = PolicyOverride(name="live", channel="c-live", autonomy="auto")
    policy = PolicyConfig(autonomy="shadow", overrides=[live])
    config = _config(StoreConfig(path=str(tmp_path / "parley.db")), policy)
    async with Service(config, ScriptedBackend(ANSWER), build_store(config)) as service:
        chat = MemoryAdapter(service)
        quiet = chat.send("Hello?", channel="c-other")
        posted = chat.send("Hello?", channel="c-live")
        assert await posted.wait() == ANSWER
        await chat.drain()
        assert quiet.outcome is Outcome.SHADOWED and quiet.text is None
        assert len(await service.store.drafts()) == 1


def test_an_unknown_autonomy_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "parley.toml"
    path.write_text('[policy]\nautonomy = "yolo"\n')
    with pytest.raises(ConfigError, match=r"'policy\.autonomy' must be 'auto' or 'shadow'"):
        load(path)
