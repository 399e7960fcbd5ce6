"""Property tests: random Unicode, oversized, empty and malformed input at every way in.

Whatever arrives, no exception escapes an adapter's conversion or the service, and the service
still answers the next ordinary message."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.discord_event import readable
from adapters.memory import MemoryAdapter
from bot.config import Config, KnowledgeConfig, LimitsConfig, StoreConfig
from bot.core.service import Service
from bot.core.text import clean_input, clean_output
from bot.storage.sqlite import SQLiteStore
from tests.scripted import ScriptedBackend
from tests.test_web import Browser, chat_server, web_config

FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Text with the characters that break things: controls, surrogates, direction overrides,
# mention markup, chat-template markers, and sheer length.
NASTY = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=200),
    st.sampled_from(["", " ", "\x00", "\ud800", "\u202e", "<|im_start|>system", "@everyone"]),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=5), st.integers(0, 3000)),
    st.from_regex(r"<(@!?|@&|#|a?:\w+:)\d{0,25}>", fullmatch=True),
)


@FUZZ
@given(content=NASTY, bot_id=st.integers(0, 2**64))
def test_discord_text_conversion_never_raises(content: str, bot_id: int) -> None:
    text = readable(content, bot_id, {1: "alice"}, {2: "mods"}, lambda _: None)
    assert isinstance(text, str)
    assert f"<@{bot_id}>" not in text


@FUZZ
@given(text=NASTY)
def test_cleaning_is_total_and_idempotent(text: str) -> None:
    cleaned = clean_input(text)
    assert clean_input(cleaned) == cleaned
    shown = clean_output(text)
    assert "<|" not in shown and "\x00" not in shown
    shown.encode("utf-8")  # always sendable


def _config(tmp: Path) -> Config:
    return Config(
        store=StoreConfig(path=str(tmp / "parley.db")),
        limits=LimitsConfig(
            user_per_minute=0, channel_per_minute=0, bot_messages_per_channel_minute=0
        ),
        knowledge=KnowledgeConfig(enabled=False),
    )


@FUZZ
@given(
    events=st.lists(
        st.fixed_dictionaries(
            {
                "text": NASTY,
                "channel": st.text(max_size=30),
                "user": st.text(max_size=30),
                "thread": st.one_of(st.none(), st.text(max_size=30)),
                "addressed": st.booleans(),
                "from_bot": st.booleans(),
                "is_dm": st.booleans(),
            }
        ),
        max_size=6,
    )
)
def test_the_service_survives_any_event(
    tmp_path_factory: Any, events: list[dict[str, Any]]
) -> None:
    async def scenario() -> None:
        config = _config(tmp_path_factory.mktemp("fuzz"))
        service = Service(config, ScriptedBackend("fine"), SQLiteStore(config.store.path))
        await service.start()
        chat = MemoryAdapter(service)
        replies = [chat.send(**fields) for fields in events]
        await chat.drain(seconds=60)
        for reply in replies:
            assert reply.outcome is not None
        assert await chat.send("an ordinary question", channel="after").wait() == "fine"
        await service.close()

    asyncio.run(scenario())


FRAME = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=100),
    st.builds(
        json.dumps,
        st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), NASTY),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=8), inner, max_size=3)
            ),
            max_leaves=8,
        ),
    ),
    st.builds(
        lambda kind, text, ident: json.dumps({"type": kind, "text": text, "id": ident}),
        st.sampled_from(["ask", "human", "reset", "rate", "nonsense", ""]),
        NASTY,
        st.one_of(st.text(max_size=80), st.integers()),
    ),
)


@FUZZ
@given(frames=st.lists(FRAME, min_size=1, max_size=5))
def test_the_web_socket_survives_any_frame(
    tmp_path_factory: Any, frames: list[str | bytes]
) -> None:
    async def scenario() -> None:
        config = web_config(tmp_path_factory.mktemp("webfuzz"))
        async with chat_server(config, backend=ScriptedBackend("fine")) as chat:
            mischief = Browser(chat.url)
            try:
                tab = await mischief.open()
                for frame in frames:
                    if tab.ws.closed:
                        break
                    if isinstance(frame, bytes):
                        await tab.ws.send_bytes(frame)
                    else:
                        await tab.ws.send_str(frame)
                await tab.ws.close()
            finally:
                await mischief.close()
            # The server still serves everyone else.
            browser = Browser(chat.url)
            try:
                final, _ = await (await browser.open()).ask("still there?")
                assert final["text"] == "fine"
            finally:
                await browser.close()

    asyncio.run(scenario())
