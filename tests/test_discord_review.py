"""Drafts on Discord, with the unmodified discord.py client against the fake: the review
message's buttons, the Edit modal, staff-only decisions, and a decision after a restart."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bot.config import Config, HandoffConfig, PolicyConfig, ReviewConfig
from bot.core.gate import Outcome
from bot.core.wording import HANDOFF, NOT_STAFF, NOT_STAFF_CLAIM, NOT_STAFF_SNIPPET, RESUMED
from tests import test_discord
from tests.fakes.discord import (
    ALICE,
    BOB,
    BOT_ID,
    CHANNEL_A,
    CHANNEL_B,
    GUILD_ID,
    SUPPORT_ROLE,
    THREAD_ID,
    USERS,
    FakeDiscord,
)
from tests.scripted import ScriptedBackend
from tests.test_discord import MENTION, config_for, outcome_of, serving
from tests.test_learning import learning_config, learning_service

#: The fake Discord each test talks to (test_discord's fixture).
fake = test_discord.fake

ANSWER = "Open Settings, then Billing, then Invoices."
NOTE = ReviewConfig().note


def drafting(fake: FakeDiscord, tmp_path: Path) -> Config:
    config = config_for(fake, tmp_path, review_channel=CHANNEL_B)
    return dataclasses.replace(
        config,
        policy=PolicyConfig(autonomy="draft"),
        handoff=HandoffConfig(staff_roles=[SUPPORT_ROLE]),
    )


def staffed(fake: FakeDiscord, tmp_path: Path) -> Config:
    """Answering on its own, with the support role as staff."""
    return dataclasses.replace(
        config_for(fake, tmp_path), handoff=HandoffConfig(staff_roles=[SUPPORT_ROLE])
    )


def buttons_of(message: dict[str, Any]) -> dict[str, str]:
    """A message's buttons: label → custom id."""
    return {
        button["label"]: button["custom_id"]
        for row in message["components"]
        for button in row["components"]
    }


async def _drafted(fake: FakeDiscord, question: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ask; returns the customer's note message and the review message."""
    asked = await fake.send_message(f"{MENTION} {question}", mentions=(BOT_ID,))
    (note,) = await fake.wait_for(
        lambda: [
            m
            for m in fake.sent(CHANNEL_A)
            if m["content"] == NOTE and m["message_reference"]["message_id"] == asked["id"]
        ]
    )
    (review,) = await fake.wait_for(
        lambda: [m for m in fake.sent(CHANNEL_B) if question in m["content"]]
    )
    return note, review


async def test_staff_edit_a_draft_in_a_modal_and_the_customer_gets_the_edit(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with serving(fake, tmp_path, ScriptedBackend(ANSWER), config=drafting(fake, tmp_path)):
        note, review = await _drafted(fake, "where are my invoices?")
        assert "where are my invoices?" in review["content"] and ANSWER in review["content"]
        ids = buttons_of(review)
        assert set(ids) == {"Approve", "Edit", "Reject"}

        # A customer (no support role) pressing Approve is told no, privately; nothing moves.
        await fake.click(review["id"], ids["Approve"], author=ALICE)
        refusal = await fake.wait_for(
            lambda: [m for m in fake.sent(CHANNEL_B) if m["content"] == NOT_STAFF]
        )
        assert refusal[0]["callback"]["data"]["flags"] & 64  # ephemeral
        assert fake.messages[note["id"]]["content"] == NOTE

        await fake.click(review["id"], ids["Edit"], author=BOB, roles=[SUPPORT_ROLE])
        (modal,) = await fake.wait_for(lambda: fake.modals)
        (field,) = modal["components"][0]["components"]
        assert field["value"] == ANSWER  # the draft, to change
        edited = "Billing > Invoices, top right. Each invoice has a PDF button."
        await fake.submit(
            modal["custom_id"],
            {field["custom_id"]: edited},
            author=BOB,
            roles=[SUPPORT_ROLE],
            message_id=review["id"],
        )
        # The note the customer saw becomes the answer; the review says who did what.
        await fake.wait_for(lambda: fake.messages[note["id"]]["content"] == edited)
        await fake.wait_for(
            lambda: "Edited by Bob and posted." in fake.messages[review["id"]]["content"]
        )
        assert fake.messages[review["id"]]["components"] == []


async def test_approve_and_reject_after_a_restart(fake: FakeDiscord, tmp_path: Path) -> None:
    config = drafting(fake, tmp_path)
    async with serving(fake, tmp_path, ScriptedBackend(ANSWER), config=config):
        first_note, first = await _drafted(fake, "where are my invoices?")
        second_note, second = await _drafted(fake, "can I have a refund?")
        first_ids, second_ids = buttons_of(first), buttons_of(second)
    # Another process takes the clicks: the drafts are in the store, not in memory.
    async with serving(fake, tmp_path, ScriptedBackend("unused"), config=config):
        await fake.click(first["id"], first_ids["Approve"], author=BOB, roles=[SUPPORT_ROLE])
        await fake.wait_for(lambda: fake.messages[first_note["id"]]["content"] == ANSWER)
        await fake.click(second["id"], second_ids["Reject"], author=BOB, roles=[SUPPORT_ROLE])
        await fake.wait_for(lambda: HANDOFF in fake.messages[second_note["id"]]["content"])
        await fake.wait_for(lambda: "Rejected by Bob" in fake.messages[second["id"]]["content"])
        # A late second click on a decided draft changes nothing and says so, privately.
        await fake.click(first["id"], first_ids["Reject"], author=BOB, roles=[SUPPORT_ROLE])
        await fake.wait_for(
            lambda: [m for m in fake.sent(CHANNEL_B) if "already approved by Bob" in m["content"]]
        )
        assert fake.messages[first_note["id"]]["content"] == ANSWER


def _reaction(message: dict[str, Any], emoji: str, user: str, roles: list[str]) -> dict[str, Any]:
    return {
        "user_id": user,
        "channel_id": message["channel_id"],
        "message_id": message["id"],
        "guild_id": GUILD_ID,
        "emoji": {"id": None, "name": emoji},
        "member": {
            "user": USERS[user],
            "roles": roles,
            "joined_at": "2026-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
        },
        "type": 0,
        "burst": False,
    }


async def test_staff_resolve_a_handoff_with_a_check_mark(fake: FakeDiscord, tmp_path: Path) -> None:
    config = staffed(fake, tmp_path)
    async with serving(fake, tmp_path, ScriptedBackend(ANSWER), config=config) as (_, _, outcomes):
        await fake.send_message(f"{MENTION} talk to a human", mentions=(BOT_ID,))
        (handoff,) = await fake.wait_for(
            lambda: [m for m in fake.sent(CHANNEL_A) if HANDOFF in m["content"]]
        )
        # A customer's ✅ does nothing: the conversation stays with a person.
        await fake.dispatch("MESSAGE_REACTION_ADD", _reaction(handoff, "✅", ALICE, []))
        quiet = await fake.send_message(f"{MENTION} hello?", mentions=(BOT_ID,))
        assert await fake.wait_for(outcome_of(outcomes, quiet)) == [Outcome.HANDED_OFF]
        # A staff member's gives it back to the bot, which says so there.
        await fake.dispatch("MESSAGE_REACTION_ADD", _reaction(handoff, "✅", BOB, [SUPPORT_ROLE]))
        (back,) = await fake.wait_for(
            lambda: [m for m in fake.sent(CHANNEL_A) if m["content"] == RESUMED]
        )
        assert back["message_reference"]["message_id"] == handoff["id"]
        await fake.send_message(f"{MENTION} where are my invoices?", mentions=(BOT_ID,))
        await fake.wait_for(lambda: [m for m in fake.sent(CHANNEL_A) if m["content"] == ANSWER])


async def test_a_staff_member_claims_a_handoff_and_the_customer_sees_who(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    config = staffed(fake, tmp_path)
    async with serving(fake, tmp_path, ScriptedBackend(ANSWER), config=config):
        await fake.send_message(f"{MENTION} talk to a human", mentions=(BOT_ID,))
        (handoff,) = await fake.wait_for(
            lambda: [m for m in fake.sent(CHANNEL_A) if m["components"]]
        )
        assert HANDOFF in handoff["content"] and f"<@&{SUPPORT_ROLE}>" in handoff["content"]
        (claim,) = buttons_of(handoff).values()
        await fake.click(handoff["id"], claim, author=ALICE)
        await fake.wait_for(
            lambda: [m for m in fake.sent(CHANNEL_A) if m["content"] == NOT_STAFF_CLAIM]
        )
        await fake.click(handoff["id"], claim, author=BOB, roles=[SUPPORT_ROLE])
        taken = "Bob from the support team has taken this conversation."
        await fake.wait_for(lambda: taken in fake.messages[handoff["id"]]["content"])
        assert fake.messages[handoff["id"]]["components"] == []


async def test_staff_resolve_a_handoff_with_the_slash_command(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    config = staffed(fake, tmp_path)
    async with serving(fake, tmp_path, ScriptedBackend(ANSWER), config=config):
        await fake.send_message(f"{MENTION} talk to a human", mentions=(BOT_ID,))
        await fake.wait_for(lambda: [m for m in fake.sent(CHANNEL_A) if m["components"]])
        await fake.interaction("resolved", author=BOB, roles=[SUPPORT_ROLE])
        await fake.wait_for(lambda: [m for m in fake.sent(CHANNEL_A) if m["content"] == RESUMED])


# -- what resolved threads teach ----------------------------------------------------------------
TRAILER = "A trailer up to 3 m long travels on night sailings for £18 each way. Hope this helps!"


async def test_a_staff_answer_in_a_resolved_thread_is_learned_once_staff_approve_it(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    config = dataclasses.replace(
        learning_config(tmp_path, config_for(fake, tmp_path, review_channel=CHANNEL_B)),
        handoff=HandoffConfig(staff_roles=[SUPPORT_ROLE]),
    )
    service = await learning_service(config)
    try:
        async with serving(fake, tmp_path, service=service, config=config) as (_, _, outcomes):
            ask = f"{MENTION} can I bring a small trailer on the overnight crossing?"
            await fake.send_message(ask, channel=THREAD_ID, mentions=(BOT_ID,))
            await fake.wait_for(lambda: fake.sent(THREAD_ID))
            await fake.send_message(
                f"{MENTION} talk to a human", channel=THREAD_ID, mentions=(BOT_ID,)
            )
            (handoff,) = await fake.wait_for(
                lambda: [m for m in fake.sent(THREAD_ID) if HANDOFF in m["content"]]
            )
            # Staff answer in the thread (no mention: the bot is in it), then mark it done.
            staff = await fake.send_message(
                TRAILER, channel=THREAD_ID, author=BOB, roles=(SUPPORT_ROLE,)
            )
            assert await fake.wait_for(outcome_of(outcomes, staff)) == [Outcome.HANDED_OFF]
            await fake.dispatch(
                "MESSAGE_REACTION_ADD", _reaction(handoff, "✅", BOB, [SUPPORT_ROLE])
            )
            (review,) = await fake.wait_for(
                lambda: [m for m in fake.sent(CHANNEL_B) if "Learn this?" in m["content"]]
            )
            assert "small trailer on the overnight crossing" in review["content"]
            assert (
                "£18 each way" in review["content"] and "Hope this helps" not in review["content"]
            )
            assert f"https://discord.com/channels/{GUILD_ID}/{THREAD_ID}" in review["content"]
            approve = buttons_of(review)["Approve"]
            # A customer's click is refused, to them alone; staff's decides.
            await fake.click(review["id"], approve, author=ALICE)
            await fake.wait_for(
                lambda: [m for m in fake.sent(CHANNEL_B) if m["content"] == NOT_STAFF_SNIPPET]
            )
            await fake.click(review["id"], approve, author=BOB, roles=[SUPPORT_ROLE])
            await fake.wait_for(lambda: "approved by Bob" in fake.messages[review["id"]]["content"])
            assert fake.messages[review["id"]]["components"] == []
            # A differently worded question, elsewhere, is answered from it and cites it.
            await fake.send_message(
                f"{MENTION} what's the price for a trailer at night?", mentions=(BOT_ID,)
            )
            (answer,) = await fake.wait_for(
                lambda: [m for m in fake.sent(CHANNEL_A) if "£18 each way" in m["content"]]
            )
            assert f"/channels/{GUILD_ID}/{THREAD_ID})" in answer["content"]
    finally:
        await service.close()
