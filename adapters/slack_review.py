"""Staff's buttons on Slack. Drafts (policy ``autonomy = "draft"``) wait in
``slack.review_channel`` as Block Kit, the draft above Approve, Edit and Reject buttons; Edit
opens a modal holding the answer to change. A handoff's Claim button lets one staff member
take the conversation.

The buttons carry the draft's id, so a click on a draft posted before a restart (or by another
replica) is still decided: who may decide, and what a decision does, is the core's
(``bot.core.review``). The review message then loses its buttons and says who did what; a
refusal is shown to the one who clicked only.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.markdown import escape_mrkdwn, to_mrkdwn
from adapters.slack_reply import CLAIM_ACTION, claim_blocks
from bot.core.review import Action, Decided, Draft
from bot.core.service import Service
from bot.core.wording import DRAFT_GONE, NOT_STAFF

__all__ = ["SlackReview", "blocks"]

log = logging.getLogger(__name__)

ACTIONS = re.compile(r"parley_draft_(approve|edit|reject)")
EDIT_VIEW = "parley_edit"
_FIELD = "answer"
# Slack's limits: a section's text, a plain-text input's initial value.
_SECTION_LIMIT = 3000
_INPUT_LIMIT = 3000

Ack = Callable[..., Awaitable[None]]


def describe(draft: Draft) -> str:
    """The review message's text: who asked what, where, and the answer the bot would give."""
    event = draft.event
    who = escape_mrkdwn(event.user_name or event.user) if event else "a customer"
    where = f" in <#{event.channel}>" if event and event.channel else ""
    question = "\n".join("&gt; " + escape_mrkdwn(line) for line in draft.question[:300].split("\n"))
    head = f"*Draft answer* for {who}{where}:\n{question}\n\n"
    answer = to_mrkdwn(draft.answer)
    room = _SECTION_LIMIT - len(head) - 200  # the decision is appended later
    return head + (answer if len(answer) <= room else answer[: room - 1] + "…")


def blocks(draft: Draft, decision: str = "") -> list[dict[str, Any]]:
    """The review message: the draft, then its buttons, or once decided, who did what."""
    shown = [{"type": "section", "text": {"type": "mrkdwn", "text": describe(draft)}}]
    if decision:
        return [*shown, {"type": "context", "elements": [{"type": "mrkdwn", "text": decision}]}]
    buttons = [
        {
            "type": "button",
            "action_id": f"parley_draft_{action}",
            "text": {"type": "plain_text", "text": label},
            "value": draft.id,
            **({"style": style} if style else {}),
        }
        for action, label, style in (
            ("approve", "Approve", "primary"),
            ("edit", "Edit", ""),
            ("reject", "Reject", "danger"),
        )
    ]
    return [*shown, {"type": "actions", "block_id": "parley_draft", "elements": buttons}]


class SlackReview:
    def __init__(
        self, app: AsyncApp, client: AsyncWebClient, service: Service, channel: str
    ) -> None:
        self.client = client
        self.service = service
        self.channel = channel
        app.action(ACTIONS)(self.on_action)
        app.view(EDIT_VIEW)(self.on_edit)
        app.action(CLAIM_ACTION)(self.on_claim)

    async def post(self, draft: Draft) -> None:
        await self.client.chat_postMessage(
            channel=self.channel, text=f"Draft answer: {draft.question[:200]}", blocks=blocks(draft)
        )

    async def on_action(self, ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        match = ACTIONS.fullmatch(str(action.get("action_id", "")))
        if match is None:
            return
        kind: Any = match.group(1)
        draft_id = str(action.get("value", ""))
        user = str((body.get("user") or {}).get("id", ""))
        where = {
            "channel": str((body.get("channel") or {}).get("id", "")),
            "ts": str((body.get("message") or {}).get("ts", "")),
        }
        if kind == "edit":
            await self._open_editor(body, draft_id, user, where)
            return
        await self._show(await self._decide(body, draft_id, kind), where, user)

    async def on_claim(self, ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        """A staff member takes a handed-off conversation: the ping in the customer's thread
        names them and loses its button."""
        await ack()
        who = body.get("user") or {}
        user = str(who.get("id", ""))
        name = str(who.get("name") or who.get("username") or user)
        conversation = str(action.get("value", ""))
        taken, line = await self.service.claim(conversation, user, (), name)
        channel = str((body.get("channel") or {}).get("id", ""))
        message = body.get("message") or {}
        try:
            if taken:
                ping = str(message.get("text") or "")
                note = escape_mrkdwn(line)
                await self.client.chat_update(
                    channel=channel,
                    ts=str(message.get("ts", "")),
                    text=f"{ping}\n{note}",
                    blocks=claim_blocks(ping, conversation, f"*{note}*"),
                )
            else:
                await self.client.chat_postEphemeral(
                    channel=channel, user=user, text=escape_mrkdwn(line)
                )
        except SlackApiError as exc:
            log.warning("Slack: cannot show who took a conversation: %s", exc)

    async def _open_editor(
        self, body: dict[str, Any], draft_id: str, user: str, where: dict[str, str]
    ) -> None:
        draft = await self.service.draft(draft_id) if self.service.is_staff(user) else None
        if draft is None:
            problem = NOT_STAFF if not self.service.is_staff(user) else DRAFT_GONE
            await self._show(Decided(False, problem), where, user)
            return
        field = {
            "type": "plain_text_input",
            "action_id": _FIELD,
            "multiline": True,
            "initial_value": draft.answer[:_INPUT_LIMIT],
        }
        await self.client.views_open(
            trigger_id=str(body.get("trigger_id", "")),
            view={
                "type": "modal",
                "callback_id": EDIT_VIEW,
                "private_metadata": json.dumps({"draft": draft_id, **where}),
                "title": {"type": "plain_text", "text": "Edit the answer"},
                "submit": {"type": "plain_text", "text": "Post"},
                "close": {"type": "plain_text", "text": "Cancel"},
                "blocks": [
                    {
                        "type": "input",
                        "block_id": _FIELD,
                        "label": {"type": "plain_text", "text": "Answer"},
                        "element": field,
                    }
                ],
            },
        )

    async def on_edit(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()
        meta = json.loads(view.get("private_metadata") or "{}")
        values = (view.get("state") or {}).get("values") or {}
        text = str(((values.get(_FIELD) or {}).get(_FIELD) or {}).get("value") or "")
        user = str((body.get("user") or {}).get("id", ""))
        where = {"channel": str(meta.get("channel", "")), "ts": str(meta.get("ts", ""))}
        decided = await self._decide(body, str(meta.get("draft", "")), "edit", text)
        await self._show(decided, where, user)

    async def _decide(
        self, body: dict[str, Any], draft_id: str, action: Action, text: str = ""
    ) -> Decided:
        who = body.get("user") or {}
        user = str(who.get("id", ""))
        name = str(who.get("name") or who.get("username") or user)
        return await self.service.decide(draft_id, action, user, (), text, name)

    async def _show(self, decided: Decided, where: dict[str, str], user: str) -> None:
        """A decision marks the review message; a refusal goes to the clicker alone."""
        try:
            if decided.ok and decided.draft is not None and where["ts"]:
                note = escape_mrkdwn(decided.message)
                await self.client.chat_update(
                    channel=where["channel"],
                    ts=where["ts"],
                    text=note,
                    blocks=blocks(decided.draft, f"*{note}*"),
                )
            else:
                await self.client.chat_postEphemeral(
                    channel=where["channel"], user=user, text=escape_mrkdwn(decided.message)
                )
        except SlackApiError as exc:
            log.warning("Slack: cannot show a draft's decision: %s", exc)
