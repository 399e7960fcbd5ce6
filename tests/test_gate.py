"""The gate's checks, each on its own (bot/core/gate.py), and the order an event walks them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.memory import MemoryReply
from bot.config import HandoffConfig, PolicyConfig
from bot.core.gate import (
    Addressed,
    BotLoop,
    Command,
    Duplicate,
    Gate,
    HandedOff,
    Lease,
    MessageCap,
    Outcome,
    Permitted,
    Quota,
    RateLimit,
    TakenIn,
    Ticket,
    usable_input,
)
from bot.core.handoff import Handoffs
from bot.core.metrics import Metrics
from bot.core.policy import Policy
from bot.core.ratelimit import RateLimiter
from bot.core.wording import EMPTY_HINT, HANDOFF, QUOTA, RESET_DONE, RESUMED
from bot.events import Event
from bot.storage.sqlite import SQLiteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "gate.db")
    await store.open()
    yield store
    await store.close()


def event(text: str = "where is my parcel?", **fields: object) -> Event:
    values: dict[str, object] = {
        "platform": "discord",
        "channel": "C1",
        "user": "U1",
        "workspace": "G1",
        "message_id": "m1",
        **fields,
    }
    return Event(text=text, **values)  # type: ignore[arg-type]


def ticket(text: str = "where is my parcel?", **fields: object) -> Ticket:
    decision = Policy(PolicyConfig(quota=1)).decide(event(text), bot_in_thread=False)
    return Ticket(event(text, **fields), decision=decision, reply=MemoryReply())


async def record(write: Awaitable[None]) -> None:
    await write


async def test_an_event_walks_the_checks_in_order_and_stops_at_the_first_that_stops_it() -> None:
    walked: list[str] = []

    def check(name: str, stops: bool):  # type: ignore[no-untyped-def]
        async def run(ticket: Ticket) -> Outcome | None:
            walked.append(name)
            return Outcome.DENIED if stops else None

        return run

    gate = Gate([("a", check("a", False)), ("b", check("b", True)), ("c", check("c", False))])
    walking = Ticket(event())
    assert await gate.walk(walking) is Outcome.DENIED
    assert walked == ["a", "b"] and walking.stopped_by == "b"
    assert gate.names == ["a", "b", "c"]


async def test_addressed_ignores_other_bots_and_what_the_trigger_leaves(
    store: SQLiteStore,
) -> None:
    policy = Policy(PolicyConfig())
    addressed = Addressed(
        lambda e, t: policy.decide(e, bot_in_thread=t), store, ["B2"], history_turns=4
    )
    assert await addressed(Ticket(event(user="B1", from_bot=True))) is Outcome.IGNORED
    assert await addressed(Ticket(event(addressed=False))) is Outcome.IGNORED
    allowed = Ticket(event(user="B2", from_bot=True))
    assert await addressed(allowed) is None and allowed.decision is not None


async def test_permitted_stops_a_denied_user_in_silence() -> None:
    policy = Policy(PolicyConfig(deny_users=["U1"]))
    denied = Ticket(event(), decision=policy.decide(event(), bot_in_thread=False))
    metrics = Metrics()
    assert await Permitted(metrics)(denied) is Outcome.DENIED
    welcome = Ticket(event(user="U2"), decision=policy.decide(event(user="U2"), False))
    assert await Permitted(metrics)(welcome) is None


async def test_taken_in_keeps_only_a_resumable_platforms_events(store: SQLiteStore) -> None:
    taken_in = TakenIn(store, {"discord"}.__contains__, record)
    durable = Ticket(event())
    assert await taken_in(durable) is None and durable.durable
    web = Ticket(Event("web", "C1", "U1", "hi", message_id="m2"))
    assert await taken_in(web) is None and not web.durable
    assert [w.event.marker for w in await store.inbox_waiting()] == [event().marker]


async def test_a_second_delivery_is_a_duplicate_unless_it_is_the_recovery(
    store: SQLiteStore,
) -> None:
    duplicate = Duplicate(store)
    assert await duplicate(Ticket(event())) is None
    assert await duplicate(Ticket(event())) is Outcome.DUPLICATE
    assert await duplicate(Ticket(event(), recovered=True)) is None
    assert await duplicate(Ticket(event(message_id=""))) is None


async def test_bots_answering_each_other_are_stopped_after_some_turns(
    store: SQLiteStore,
) -> None:
    loop = BotLoop(2, store, record)
    bot = event(user="B1", from_bot=True)
    assert [await loop(Ticket(bot)) for _ in range(3)] == [None, None, Outcome.LOOP_STOPPED]
    assert await loop(Ticket(event())) is None  # a person speaks: the count starts again
    assert await loop(Ticket(bot)) is None


async def test_a_lease_held_elsewhere_makes_a_durable_event_a_duplicate() -> None:
    held = {"discord/G1/C1/m1"}
    answering: set[str] = set()

    async def take(marker: str) -> bool:
        return marker not in held

    lease = Lease(take, answering)
    assert await lease(Ticket(event(), durable=True)) is Outcome.DUPLICATE
    assert await lease(Ticket(event(), durable=True, recovered=True)) is None
    assert answering == {"discord/G1/C1/m1"}
    assert await lease(Ticket(event(message_id="m9"))) is None  # not durable: no lease


async def test_a_handed_off_conversation_stays_quiet_until_staff_resume(
    store: SQLiteStore,
) -> None:
    handoffs = Handoffs(HandoffConfig(staff_users=["S1"]), store, Metrics())
    handed_off = HandedOff(handoffs)
    assert await handed_off(ticket()) is None
    await store.start_handoff(event().key, "asked")
    quiet = ticket()
    assert await handed_off(quiet) is Outcome.HANDED_OFF
    assert quiet.answer_to.text is None  # type: ignore[attr-defined]
    staff = ticket("resume", user="S1")
    assert await handed_off(staff) is Outcome.COMMAND
    assert staff.answer_to.text == RESUMED  # type: ignore[attr-defined]
    assert await handed_off(ticket()) is None


async def test_the_rate_limit_says_so_once_then_stays_silent() -> None:
    limit = RateLimit(RateLimiter(1, 1, 0, 0, 0))
    first, second, third = ticket(), ticket(), ticket()
    assert await limit(first) is None
    assert await limit(second) is Outcome.RATE_LIMITED
    assert "faster than I can answer" in (second.answer_to.text or "")  # type: ignore[attr-defined]
    assert await limit(third) is Outcome.RATE_LIMITED
    assert third.answer_to.text is None  # type: ignore[attr-defined]


async def test_nothing_left_to_read_gets_a_hint() -> None:
    empty = ticket("   ")
    assert await usable_input(empty) is Outcome.HINTED
    assert empty.answer_to.text == EMPTY_HINT  # type: ignore[attr-defined]
    assert await usable_input(ticket()) is None


async def test_commands_reset_help_and_bring_in_a_person(store: SQLiteStore) -> None:
    reset: list[object] = []

    async def forget(key: object) -> None:
        reset.append(key)

    handoffs = Handoffs(HandoffConfig(), store, Metrics())
    command = Command(handoffs, forget, lambda: "how to use me")
    said = ticket("!reset")
    assert await command(said) is Outcome.COMMAND and reset == [event().key]
    assert said.answer_to.text == RESET_DONE  # type: ignore[attr-defined]
    helped = ticket("help")
    assert await command(helped) is Outcome.COMMAND
    assert helped.answer_to.text == "how to use me"  # type: ignore[attr-defined]
    person = ticket("human")
    assert await command(person) is Outcome.HANDED_OFF
    assert person.answer_to.handed_off  # type: ignore[attr-defined]
    assert HANDOFF in (person.answer_to.text or "")  # type: ignore[attr-defined]
    assert await store.handoff_since(event().key) is not None
    assert await command(ticket("yes")) is None  # no offer of a person before it


async def test_the_daily_quota_is_told_once_and_resets_the_next_day(
    store: SQLiteStore,
) -> None:
    today = datetime.now(UTC)
    now = [today]
    quota = Quota(store, lambda: now[0])
    await store.append(event().key, "user", "first", user="U1")
    over = ticket()
    assert await quota(over) is Outcome.QUOTA
    assert over.answer_to.text == QUOTA.format(quota=1)  # type: ignore[attr-defined]
    again = ticket()
    assert await quota(again) is Outcome.QUOTA and again.answer_to.text is None  # type: ignore[attr-defined]
    now[0] = today + timedelta(days=1)
    assert await quota(ticket()) is None


async def test_past_the_bots_own_message_cap_it_says_nothing() -> None:
    cap = MessageCap(RateLimiter(0, 0, 0, 0, 1))
    assert await cap(ticket()) is None
    capped = ticket()
    assert await cap(capped) is Outcome.RATE_LIMITED
    assert capped.answer_to.text is None  # type: ignore[attr-defined]


def test_the_service_walks_the_stretches_in_the_documented_order(tmp_path: Path) -> None:
    from bot.core.service import Service
    from tests.conftest import make_config
    from tests.scripted import ScriptedBackend

    service = Service(
        make_config(tmp_path, tmp_path), ScriptedBackend(), SQLiteStore(tmp_path / "s.db")
    )
    assert service.admission.names == [
        "addressed",
        "permitted",
        "taken in",
        "duplicate",
        "bot loop",
        "lease",
    ]
    assert service.gate.names == [
        "handed off",
        "rate limit",
        "clean input",
        "command",
        "quota",
        "message cap",
    ]
