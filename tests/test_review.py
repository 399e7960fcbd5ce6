"""Staff in the loop: how far the bot acts on its own, channel by channel (policy ``autonomy``).

``shadow``: the bot writes its answer for the team to read in ``parley report`` and posts
nothing, so a team can watch what it would say before letting it answer."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from adapters.memory import MemoryAdapter, MemoryReply
from bot.app.commands.report import build_report, format_report
from bot.app.wiring import load
from bot.config import (
    Config,
    HandoffConfig,
    LimitsConfig,
    PolicyConfig,
    PolicyOverride,
    ReviewConfig,
    StoreConfig,
)
from bot.core.gate import Outcome
from bot.core.service import Service
from bot.core.wording import (
    EMPTY_EDIT,
    HANDOFF,
    NOT_HANDED_OFF,
    NOT_STAFF,
    NOT_STAFF_CLAIM,
    RESUMED,
)
from bot.errors import ConfigError
from bot.events import ConversationKey
from bot.storage import build_store
from bot.storage.base import Draft
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
        assert await service.store.pending_drafts() == []  # a shadow answer waits for no one
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
    expected = r"'policy\.autonomy' must be 'auto' or 'draft' or 'shadow'"
    with pytest.raises(ConfigError, match=expected):
        load(path)


# -- draft: staff approve, edit or reject before the customer sees the answer ---------------
STAFF = "staff-1"
DRAFTING = PolicyConfig(autonomy="draft")


def _drafting(store: StoreConfig, **review: object) -> Config:
    config = _config(store, DRAFTING)
    return dataclasses.replace(
        config,
        handoff=HandoffConfig(staff_users=[STAFF], staff_roles=["support"]),
        review=dataclasses.replace(ReviewConfig(), **review),  # type: ignore[arg-type]
    )


class StaffChannel:
    """What an adapter's review channel would show: the drafts posted for review."""

    def __init__(self, service: Service) -> None:
        self.posted: list[Draft] = []
        self.arrived = asyncio.Event()
        service.reviewing("memory", self.post)

    async def post(self, draft: Draft) -> None:
        self.posted.append(draft)
        self.arrived.set()


async def _asked(
    service: Service, staff: StaffChannel, question: str
) -> tuple[MemoryAdapter, Draft]:
    chat = MemoryAdapter(service, durable=True)
    note = chat.send(question)
    assert await note.wait() == ReviewConfig().note
    await chat.drain()
    assert note.outcome is Outcome.DRAFTED
    (draft,) = staff.posted
    return chat, draft


async def test_a_draft_approved_by_staff_is_posted_where_the_customer_asked(
    store_config: StoreConfig,
) -> None:
    config = _drafting(store_config)
    async with Service(config, ScriptedBackend(ANSWER), build_store(config)) as service:
        staff = StaffChannel(service)
        chat, draft = await _asked(service, staff, "Where are my invoices?")
        assert (draft.answer, draft.state, draft.question) == (
            ANSWER,
            "pending",
            "Where are my invoices?",
        )
        key = ConversationKey("memory", "", "c1")
        # Until staff decide, the conversation holds the question only.
        assert [t.role for t in await service.history(key)] == ["user"]

        refused = await service.decide(draft.id, "approve", "someone-else", ["customers"])
        assert not refused.ok and refused.message == NOT_STAFF
        assert not chat.resumed

        assert [d.id for d in await service.store.pending_drafts()] == [draft.id]
        done = await service.decide(draft.id, "approve", STAFF)
        assert done.ok and done.message == f"Approved by {STAFF} and posted."
        assert await service.store.pending_drafts() == []
        ((event, reply),) = chat.resumed
        assert event.text == "Where are my invoices?" and await reply.wait() == ANSWER
        assert [(t.role, t.content) for t in await service.history(key)] == [
            ("user", "Where are my invoices?"),
            ("assistant", ANSWER),
        ]
        # A second click (another staff member, another replica) changes nothing.
        again = await service.decide(draft.id, "reject", "staff-2", ["support"])
        assert not again.ok and again.message == f"This answer was already approved by {STAFF}."
        assert len(chat.resumed) == 1
        decided = await service.store.draft(draft.id)
        assert decided is not None and (decided.state, decided.decided_by) == ("approved", STAFF)
        # Staff's work shows in the report: what became of the drafts, and how fast.
        report = await build_report(service.store, days=1)
        assert report.drafts == {"approved": 1} and report.decision_seconds is not None
        assert "drafts for staff     1 approved, 0 edited, 0 rejected, 0 expired, 0 pending" in (
            format_report(report)
        )


async def test_an_edited_draft_posts_the_edit(tmp_path: Path) -> None:
    config = _drafting(StoreConfig(path=str(tmp_path / "parley.db")))
    async with Service(config, ScriptedBackend(ANSWER), build_store(config)) as service:
        staff = StaffChannel(service)
        chat, draft = await _asked(service, staff, "Where are my invoices?")
        assert (await service.decide(draft.id, "edit", "x", ["support"], "  ")).message == (
            EMPTY_EDIT
        )
        edited = "Billing > Invoices, top right."
        assert (await service.decide(draft.id, "edit", "x", ["support"], edited)).ok
        ((_, reply),) = chat.resumed
        assert await reply.wait() == edited
        stored = await service.store.draft(draft.id)
        assert stored is not None and (stored.state, stored.posted) == ("edited", edited)


async def test_a_rejected_draft_hands_the_customer_to_a_person(tmp_path: Path) -> None:
    config = _drafting(StoreConfig(path=str(tmp_path / "parley.db")))
    async with Service(config, ScriptedBackend(ANSWER), build_store(config)) as service:
        staff = StaffChannel(service)
        chat, draft = await _asked(service, staff, "Can I get a refund?")
        assert (await service.decide(draft.id, "reject", STAFF)).ok
        ((_, reply),) = chat.resumed
        assert await reply.wait() == HANDOFF and reply.handed_off
        assert await service.store.handoff_since(ConversationKey("memory", "", "c1"))
        # The rejected answer was never said.
        history = await service.history(ConversationKey("memory", "", "c1"))
        assert ANSWER not in [t.content for t in history]


async def test_a_draft_nobody_decides_on_is_handed_off(tmp_path: Path) -> None:
    config = _drafting(StoreConfig(path=str(tmp_path / "parley.db")), expire_minutes=0)
    async with Service(config, ScriptedBackend(ANSWER), build_store(config)) as service:
        staff = StaffChannel(service)
        chat, draft = await _asked(service, staff, "Can I get a refund?")
        assert await service.reviews.expire("memory") == 1
        ((_, reply),) = chat.resumed
        assert await reply.wait() == HANDOFF
        late = await service.decide(draft.id, "approve", STAFF)
        assert not late.ok and "already expired" in late.message


async def test_a_draft_is_decided_after_a_restart(store_config: StoreConfig) -> None:
    config = _drafting(store_config)
    async with Service(config, ScriptedBackend(ANSWER), build_store(config)) as service:
        _, draft = await _asked(service, StaffChannel(service), "Where are my invoices?")
    # Another process (a restart, or another replica) takes the click.
    async with Service(config, ScriptedBackend("unused"), build_store(config)) as service:
        chat = MemoryAdapter(service, durable=True)
        assert (await service.decide(draft.id, "approve", STAFF)).ok
        ((event, reply),) = chat.resumed
        assert draft.event is not None and event.message_id == draft.event.message_id
        assert await reply.wait() == ANSWER


async def test_without_a_review_channel_drafts_are_kept_not_posted(tmp_path: Path) -> None:
    config = _drafting(StoreConfig(path=str(tmp_path / "parley.db")))
    async with Service(config, ScriptedBackend(ANSWER), build_store(config)) as service:
        chat = MemoryAdapter(service, durable=True)
        reply = chat.send("Where are my invoices?")
        await chat.drain()
        assert reply.outcome is Outcome.SHADOWED and reply.text is None
        (kept,) = await service.store.drafts()
        assert kept.state == "shadow"


# -- a handoff claimed by a staff member -----------------------------------------------------
async def test_one_staff_member_claims_a_handoff(store_config: StoreConfig) -> None:
    config = _drafting(store_config)
    key = ConversationKey("memory", "", "c1")
    async with Service(config, ScriptedBackend(ANSWER), build_store(config)) as service:
        assert await service.claim(str(key), STAFF, name="Sam") == (False, NOT_HANDED_OFF)
        handed = MemoryAdapter(service).send("talk to a human")
        await handed.wait()
        assert handed.handed_off
        assert await service.claim(str(key), "customer") == (False, NOT_STAFF_CLAIM)
        taken = await service.claim(str(key), STAFF, name="Sam")
        assert taken == (True, "Sam from the support team has taken this conversation.")
        again = await service.claim(str(key), "staff-2", ["support"], name="Kim")
        assert again == (False, "Sam has already taken this conversation.")
        report = await build_report(service.store, days=1)
        assert report.claimed == 1 and report.claim_seconds is not None
        assert "(1 claimed, median" in format_report(report)


async def test_only_staff_resolve_a_handoff(tmp_path: Path) -> None:
    config = _drafting(StoreConfig(path=str(tmp_path / "parley.db")))
    key = ConversationKey("memory", "", "c1")
    async with Service(config, ScriptedBackend(ANSWER), build_store(config)) as service:
        handed = MemoryAdapter(service).send("talk to a human")
        await handed.wait()
        customer = MemoryReply()
        assert not await service.resolve(key, "customer", (), customer)
        assert customer.text is None and await service.store.handoff_since(key)
        staff = MemoryReply()
        assert await service.resolve(key, "x", ["support"], staff)
        assert staff.text == RESUMED and await service.store.handoff_since(key) is None
        # Nothing to resolve any more: nothing is said.
        assert not await service.resolve(key, STAFF, (), MemoryReply())
