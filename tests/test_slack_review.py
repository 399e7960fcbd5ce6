"""Drafts on Slack, with the unmodified slack-bolt client against the fake: Block Kit buttons
over Socket Mode and signed HTTP, the Edit modal, staff-only decisions, a restart between."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from adapters.markdown import to_mrkdwn
from adapters.slack import SlackAdapter, create
from bot.config import HandoffConfig, PolicyConfig, ReviewConfig
from bot.core.service import Service
from bot.core.wording import HANDOFF, NOT_STAFF, NOT_STAFF_SNIPPET, RESUMED
from bot.events import ConversationKey
from bot.storage.sqlite import SQLiteStore
from tests import test_slack
from tests.fakes.slack import (
    ALICE,
    BOB,
    BOT_USER,
    CHANNEL,
    SIGNING_SECRET,
    TEAM,
    FakeSlack,
    Message,
    block_action,
    new_ts,
    signed_headers,
    view_submission,
)
from tests.harness import connected
from tests.scripted import ScriptedBackend
from tests.test_learning import learning_config, learning_service
from tests.test_slack import MENTION, config_for, deliver, mention, post_event

#: The fake Slack each test talks to (test_slack's fixture).
fake = test_slack.fake

ANSWER = "Open **Settings**, then Billing, then Invoices."
NOTE = ReviewConfig().note
REVIEWS = "C0000RVW1"


@contextlib.asynccontextmanager
async def drafting(
    fake: FakeSlack, tmp_path: Path, backend: Any, **slack: Any
) -> AsyncIterator[SlackAdapter]:
    config = dataclasses.replace(
        config_for(fake, tmp_path, review_channel=REVIEWS, **slack),
        policy=PolicyConfig(autonomy="draft"),
        handoff=HandoffConfig(staff_users=[BOB]),
    )
    service = Service(config, backend, SQLiteStore(tmp_path / "parley.db"))
    await service.start()
    adapter = create(config, service)
    try:
        async with connected(adapter):
            yield adapter
            # Let the client acknowledge what it was sent before the socket goes.
            with contextlib.suppress(TimeoutError):
                await fake.wait_for(lambda: set(fake.sent_envelopes) <= fake.acked, within=5)
    finally:
        await service.close()


async def _drafted(fake: FakeSlack, question: str) -> tuple[dict[str, Any], Message]:
    """Ask over Socket Mode; returns the question's event and the review message."""
    asked = mention(f"{MENTION} {question}")
    await deliver(fake, asked)
    await fake.wait_for(
        lambda: [m for m in fake.thread(CHANNEL, asked["ts"]) if m.body == NOTE] or None
    )
    review = await fake.wait_for(
        lambda: next(
            (m for m in fake.messages.values() if m.channel == REVIEWS and question in m.text),
            None,
        )
    )
    return asked, review


def claim_action(ping: Message, user: str) -> dict[str, Any]:
    """A click on the Claim button of the staff ping."""
    payload = block_action(ping, "parley_claim", user)
    payload["actions"][0]["block_id"] = "parley_claim"
    return payload


async def _handed_off(fake: FakeSlack) -> tuple[dict[str, Any], Message]:
    """Ask for a person; returns the question's event and the staff ping in its thread."""
    asked = mention(f"{MENTION} talk to a human")
    await deliver(fake, asked)
    ping = await fake.wait_for(
        lambda: next((m for m in fake.thread(CHANNEL, asked["ts"]) if m.blocks and m.text), None)
    )
    return asked, ping


def _buttons(review: Message) -> list[str]:
    return [
        element["action_id"]
        for block in review.blocks
        if block["type"] == "actions"
        for element in block["elements"]
    ]


async def test_staff_edit_a_draft_in_a_modal_over_socket_mode(
    fake: FakeSlack, tmp_path: Path
) -> None:
    async with drafting(fake, tmp_path, ScriptedBackend(ANSWER)):
        asked, review = await _drafted(fake, "where are my invoices?")
        assert _buttons(review) == [
            "parley_draft_approve",
            "parley_draft_edit",
            "parley_draft_reject",
        ]
        assert to_mrkdwn(ANSWER) in review.blocks[0]["text"]["text"]

        # A customer pressing Approve is told no, privately; the draft stays.
        await fake.send_envelope("interactive", block_action(review, "parley_draft_approve"))
        refusal = await fake.wait_for(
            lambda: next((m for m in fake.messages.values() if m.ephemeral), None)
        )
        assert refusal.text == NOT_STAFF and refusal.channel == REVIEWS
        assert [m.body for m in fake.thread(CHANNEL, asked["ts"])] == [NOTE]

        await fake.send_envelope("interactive", block_action(review, "parley_draft_edit", BOB))
        view = await fake.wait_for(lambda: fake.views[0] if fake.views else None)
        (field,) = view["blocks"]
        assert field["element"]["initial_value"] == ANSWER
        edited = "Billing > Invoices, top right."
        await fake.send_envelope(
            "interactive", view_submission(view, {field["block_id"]: edited}, BOB)
        )
        # The customer gets the edit in the thread; the review loses its buttons.
        await fake.wait_for(
            lambda: (
                [m for m in fake.thread(CHANNEL, asked["ts"]) if m.body == to_mrkdwn(edited)]
                or None
            )
        )
        await fake.wait_for(lambda: "Edited by bob and posted." in json.dumps(review.blocks))
        assert _buttons(review) == []


async def test_a_signed_http_click_rejects_a_draft_posted_before_a_restart(
    fake: FakeSlack, tmp_path: Path
) -> None:
    async with drafting(fake, tmp_path, ScriptedBackend(ANSWER)):
        asked, review = await _drafted(fake, "can I get a refund?")
    async with drafting(fake, tmp_path, ScriptedBackend("unused"), mode="http") as adapter:
        payload = block_action(review, "parley_draft_reject", BOB)
        body = urlencode({"payload": json.dumps(payload)})
        headers = {
            **signed_headers(SIGNING_SECRET, body),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        # Unsigned, it is refused and nothing happens.
        assert (
            await post_event(
                adapter,
                body,
                {"Content-Type": headers["Content-Type"], "X-Slack-Request-Timestamp": "1"},
            )
            == 401
        )
        assert await post_event(adapter, body, headers) == 200
        await fake.wait_for(
            lambda: [m for m in fake.thread(CHANNEL, asked["ts"]) if HANDOFF in m.body] or None
        )
        await fake.wait_for(lambda: "Rejected by bob" in json.dumps(review.blocks))
        assert _buttons(review) == []


async def test_a_staff_member_claims_a_handoff_in_the_thread(
    fake: FakeSlack, tmp_path: Path
) -> None:
    async with drafting(fake, tmp_path, ScriptedBackend(ANSWER)):
        asked, ping = await _handed_off(fake)
        assert any(HANDOFF in m.body for m in fake.thread(CHANNEL, asked["ts"]))
        await fake.send_envelope("interactive", claim_action(ping, ALICE))
        await fake.wait_for(lambda: next((m for m in fake.messages.values() if m.ephemeral), None))
        await fake.send_envelope("interactive", claim_action(ping, BOB))
        taken = "bob from the support team has taken this conversation."
        await fake.wait_for(lambda: taken in json.dumps(ping.blocks) or None)
        assert not [b for b in ping.blocks if b["type"] == "actions"]


async def test_a_staff_check_mark_gives_a_handed_off_thread_back(
    fake: FakeSlack, tmp_path: Path
) -> None:
    async with drafting(fake, tmp_path, ScriptedBackend(ANSWER)):
        asked, ping = await _handed_off(fake)
        for user in (ALICE, BOB):  # the customer's ✅ does nothing, staff's ends the handoff
            await deliver(
                fake,
                {
                    "type": "reaction_added",
                    "user": user,
                    "reaction": "white_check_mark",
                    "item": {"type": "message", "channel": CHANNEL, "ts": ping.ts},
                    "item_user": BOT_USER,
                    "ts": new_ts(),
                },
            )
        await fake.wait_for(
            lambda: [m for m in fake.thread(CHANNEL, asked["ts"]) if m.body == RESUMED] or None
        )
        assert len([m for m in fake.thread(CHANNEL, asked["ts"]) if m.body == RESUMED]) == 1


# -- what resolved threads teach ----------------------------------------------------------------
TRAILER = "Hi Alice! A trailer up to 3 m long travels on night sailings for £18 each way."


async def test_a_staff_answer_in_a_resolved_thread_is_edited_and_learned(
    fake: FakeSlack, tmp_path: Path
) -> None:
    config = dataclasses.replace(
        learning_config(tmp_path, config_for(fake, tmp_path, review_channel=REVIEWS)),
        handoff=HandoffConfig(staff_users=[BOB]),
    )
    service = await learning_service(config)
    adapter = create(config, service)
    try:
        async with connected(adapter):
            asked = mention(f"{MENTION} can I bring a small trailer on the overnight crossing?")
            await deliver(fake, asked)
            await fake.wait_for(lambda: fake.thread(CHANNEL, asked["ts"]) or None)
            await deliver(fake, mention(f"{MENTION} talk to a human", thread_ts=asked["ts"]))
            ping = await fake.wait_for(
                lambda: next(
                    (m for m in fake.thread(CHANNEL, asked["ts"]) if HANDOFF in m.body), None
                )
            )
            await deliver(
                fake,
                {
                    "type": "message",
                    "user": BOB,
                    "text": TRAILER,
                    "ts": new_ts(),
                    "thread_ts": asked["ts"],
                    "channel": CHANNEL,
                    "channel_type": "channel",
                },
            )
            # The staff answer is in the transcript before the ✅.
            key = ConversationKey("slack", TEAM, CHANNEL, asked["ts"])
            async with asyncio.timeout(20):
                while not any(  # noqa: ASYNC110 - the store has no event to wait on
                    "[staff" in t.content for t in await service.store.history(key)
                ):
                    await asyncio.sleep(0.05)
            await deliver(
                fake,
                {
                    "type": "reaction_added",
                    "user": BOB,
                    "reaction": "white_check_mark",
                    "item": {"type": "message", "channel": CHANNEL, "ts": ping.ts},
                    "item_user": BOT_USER,
                    "ts": new_ts(),
                },
            )
            review = await fake.wait_for(
                lambda: next(
                    (m for m in fake.messages.values() if m.channel == REVIEWS and m.blocks), None
                )
            )
            shown = review.blocks[0]["text"]["text"]
            assert "*Learn this?*" in shown and "£18 each way" in shown and "Alice" not in shown
            assert f"https://app.slack.com/client/{TEAM}/{CHANNEL}/thread/" in shown
            assert _buttons(review) == [
                "parley_snippet_approve",
                "parley_snippet_edit",
                "parley_snippet_reject",
            ]
            await fake.send_envelope("interactive", block_action(review, "parley_snippet_approve"))
            refusal = await fake.wait_for(
                lambda: next((m for m in fake.messages.values() if m.ephemeral), None)
            )
            assert refusal.text == NOT_STAFF_SNIPPET
            await fake.send_envelope(
                "interactive", block_action(review, "parley_snippet_edit", BOB)
            )
            view = await fake.wait_for(lambda: fake.views[0] if fake.views else None)
            (field,) = view["blocks"]
            edited = "A trailer up to 3 m travels on night sailings for £18 each way."
            await fake.send_envelope(
                "interactive", view_submission(view, {field["block_id"]: edited}, BOB)
            )
            await fake.wait_for(lambda: "edited by bob" in json.dumps(review.blocks) or None)
            assert _buttons(review) == []
            again = mention(f"{MENTION} what's the price for a trailer at night?")
            await deliver(fake, again)
            answer = await fake.wait_for(
                lambda: next(
                    (m for m in fake.thread(CHANNEL, again["ts"]) if edited in m.body), None
                )
            )
            assert f"/thread/{CHANNEL}-{asked['ts']})" in answer.body
            with contextlib.suppress(TimeoutError):
                await fake.wait_for(lambda: set(fake.sent_envelopes) <= fake.acked, within=5)
    finally:
        await service.close()
