"""Handing conversations to a human, ratings of answers, and the report built from them."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.memory import MemoryAdapter
from bot.app.commands.report import Gap, Report, build_report, format_report, group
from bot.config import Config, HandoffConfig, LimitsConfig, StoreConfig, load_config
from bot.core.hours import next_opening
from bot.core.service import Outcome, Service
from bot.core.wording import HANDOFF, RESUMED
from bot.errors import ConfigError
from bot.events import ConversationKey
from bot.storage import build_store
from tests.scripted import ScriptedBackend

KEY = ConversationKey("memory", "", "c1")


async def _service(
    tmp_path: Path, store: StoreConfig | None = None, **handoff: object
) -> tuple[Service, ScriptedBackend]:
    config = Config(
        store=store or StoreConfig(path=str(tmp_path / "parley.db")),
        limits=LimitsConfig(
            user_per_minute=0, channel_per_minute=0, bot_messages_per_channel_minute=0
        ),
        handoff=dataclasses.replace(HandoffConfig(staff_roles=["support"]), **handoff),  # type: ignore[arg-type]
    )
    backend = ScriptedBackend("Here is how.")
    service = Service(config, backend, build_store(config))
    await service.start()
    return service, backend


async def test_asking_for_a_person_hands_off_and_the_bot_stays_quiet(tmp_path: Path) -> None:
    service, backend = await _service(tmp_path)
    chat = MemoryAdapter(service)
    ask = chat.send("This is useless, I want to talk to a   Human please")
    assert await ask.wait() == HANDOFF and ask.handed_off
    quiet = chat.send("hello? anyone?")
    staff = chat.send("Hi, I'm Sam from support.", user="sam", roles=("support",))
    await chat.drain()
    assert quiet.outcome is Outcome.HANDED_OFF and quiet.text is None
    assert staff.outcome is Outcome.HANDED_OFF and staff.text is None
    assert backend.prompts == []
    # A customer cannot hand the conversation back; staff can.
    assert chat.send("resume", user="u1") and (await chat.drain()) is None
    assert await chat.send("resume", user="sam", roles=("support",)).wait() == RESUMED
    assert await chat.send("thanks, one more question").wait() == "Here is how."
    # The bot now knows what was said while it was quiet.
    said = [m.content for m in backend.prompts[0] if m.role == "user"]
    assert "hello? anyone?" in said and "[staff sam] Hi, I'm Sam from support." in said
    await service.close()


async def test_the_human_command_and_the_quiet_period(tmp_path: Path) -> None:
    service, _ = await _service(tmp_path, quiet_minutes=0)
    chat = MemoryAdapter(service)
    assert await chat.send("/human").wait() == HANDOFF
    # With no quiet period left, the bot answers again by itself.
    assert await chat.send("still there?").wait() == "Here is how."
    await service.close()


async def test_ordinary_words_do_not_hand_off(tmp_path: Path) -> None:
    service, _ = await _service(tmp_path)
    chat = MemoryAdapter(service)
    assert await chat.send("Is the user agent string logged?").wait() == "Here is how."
    assert await chat.send("How do humans reset passwords?").wait() == "Here is how."
    await service.close()


async def test_ratings_are_stored_with_question_and_answer_and_reported(
    tmp_path: Path, store_config: StoreConfig
) -> None:
    service, _ = await _service(tmp_path, store_config)
    chat = MemoryAdapter(service)
    first = chat.send("How do I get a refund?")
    await first.wait()
    second = chat.send("Where is my parcel?")
    await second.wait()
    assert await service.feedback(KEY, first.message_id, "u1", "up")
    assert await service.feedback(KEY, second.message_id, "u1", "up")
    # Changing one's mind replaces the rating; unknown replies are refused.
    assert await service.feedback(KEY, second.message_id, "u1", "down")
    assert await service.feedback(KEY, second.message_id, "u2", "down")
    assert not await service.feedback(KEY, "no-such-reply", "u1", "up")
    other_channel = ConversationKey("memory", "", "c2")
    assert not await service.feedback(other_channel, first.message_id, "u1", "up")
    await chat.send("talk to a person").wait()
    await service.close()

    store = build_store(Config(store=store_config))
    await store.open()
    try:
        report = await build_report(store, days=1)
        assert (report.conversations, report.questions, report.answers) == (1, 3, 2)
        assert (report.thumbs_up, report.thumbs_down, report.handoffs) == (1, 2, 1)
        assert report.gaps == [Gap("where is my parcel?", 2)]
        # A day later, none of it is in the last day.
        later = await build_report(store, days=0)
        assert (later.questions, later.thumbs_down, later.handoffs, later.gaps) == (0, 0, 0, [])
    finally:
        await store.close()
    text = format_report(report)
    assert "👍 / 👎              1 / 2  (33% positive)" in text
    assert "where is my parcel?" in text

    # `parley report`, as a user runs it, reads the same store (Redis too, not a file).
    config = tmp_path / "parley.toml"
    url = f'url = "{store_config.url}"\n' if store_config.url else ""
    config.write_text(f'[store]\npath = "{store_config.path}"\n{url}')
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot", "--config", str(config), "report", "--days", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "👍 / 👎              1 / 2" in result.stdout
    assert "where is my parcel?" in result.stdout


def test_report_command_on_an_empty_database(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "none.db"}"\n')
    result = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(config), "report", "--days", "30"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "last 30 days" in result.stdout and "conversations        0" in result.stdout


def test_the_report_groups_the_gaps_by_meaning_largest_first() -> None:
    from bot.knowledge.embed import Embedder

    asked = [
        "How do I get a refund?",
        "can i get my money back",
        "refund please",
        "how do i get a refund?",
        "is there wifi on board",
        "Wifi on the ferry?",
        "do you have a lifetime plan",
    ]
    gaps = group(asked, Embedder("bundled").encode)
    assert gaps == [
        Gap("how do i get a refund?", 4, ("can i get my money back", "refund please")),
        Gap("is there wifi on board", 2, ("wifi on the ferry?",)),
        Gap("do you have a lifetime plan", 1),
    ]
    # Without the embedding model, by wording only.
    assert group(asked)[0] == Gap("how do i get a refund?", 2)
    text = format_report(Report(7, gaps=gaps))
    assert "Gaps in the knowledge base" in text
    assert "     4  how do i get a refund?\n        · can i get my money back\n" in text


# -- support hours ---------------------------------------------------------------------------
BERLIN_OFFICE = HandoffConfig(hours="09:00-17:00", timezone="Europe/Berlin")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # A Saturday noon: Monday morning.
        (datetime(2026, 12, 5, 12, 0, tzinfo=UTC), "2026-12-07 09:00"),
        # A Wednesday, 10:00 in Berlin (09:00 UTC): open now.
        (datetime(2026, 12, 9, 9, 0, tzinfo=UTC), None),
        # A Wednesday, 08:30 in Berlin: the same morning.
        (datetime(2026, 12, 9, 7, 30, tzinfo=UTC), "2026-12-09 09:00"),
        # A Friday evening, 17:00 in Berlin: closed (the hours end at 17:00).
        (datetime(2026, 12, 11, 16, 0, tzinfo=UTC), "2026-12-14 09:00"),
    ],
)
def test_when_people_next_answer(now: datetime, expected: str | None) -> None:
    opening = next_opening(BERLIN_OFFICE, now)
    assert (f"{opening:%Y-%m-%d %H:%M}" if opening else None) == expected
    assert next_opening(HandoffConfig(), now) is None  # no hours kept: always "now"


async def test_a_handoff_outside_support_hours_says_when_a_person_can_answer(
    tmp_path: Path,
) -> None:
    service, _ = await _service(tmp_path, hours="09:00-17:00", timezone="Europe/Berlin")
    service.clock = lambda: datetime(2026, 12, 5, 12, 0, tzinfo=UTC)  # a Saturday
    ask = MemoryAdapter(service).send("talk to a human")
    text = await ask.wait()
    assert text.startswith(HANDOFF) and ask.handed_off
    assert "the first person can answer from Monday 09:00 (Europe/Berlin)." in text
    service.clock = lambda: datetime(2026, 12, 9, 9, 0, tzinfo=UTC)  # a Wednesday morning
    other = MemoryAdapter(service).send("talk to a human", channel="c2")
    assert await other.wait() == HANDOFF
    await service.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('hours = "9-5"', "'handoff.hours' must look like \"09:00-17:00\""),
        ('hours = "17:00-09:00"', "(start before end)"),
        ('days = ["monday"]', "'handoff.days' has 'monday'"),
        ('timezone = "Berlin"', "'handoff.timezone' 'Berlin' is not a time zone"),
    ],
)
def test_support_hours_that_cannot_be_read_are_one_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "parley.toml"
    path.write_text(f"[handoff]\n{text}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


async def test_an_answer_is_stored_with_how_long_it_took(
    tmp_path: Path, store_config: StoreConfig
) -> None:
    """Seconds to the first text the customer saw and to the whole answer, for the console."""
    config = Config(store=store_config, limits=LimitsConfig(user_per_minute=0))
    backend = ScriptedBackend("Here is how, one step after another.", chunk=6, delay=0.05)
    service = Service(config, backend, build_store(config))
    await service.start()
    try:
        await MemoryAdapter(service).send("How do I get a refund?").wait()
        (transcript,) = await service.store.transcripts()
    finally:
        await service.close()
    question, answer = transcript.turns
    assert question.timing is None
    assert answer.timing is not None
    assert 0 < answer.timing.first_text_s < answer.timing.answer_s
    assert answer.timing.answer_s >= 5 * 0.05  # six chunks, a pause between each
