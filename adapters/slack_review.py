"""Staff's buttons on Slack. Drafts (policy ``autonomy = "draft"``) and the snippets resolved
conversations teach (bot/core/learning.py) wait in ``slack.review_channel`` as Block Kit, the
answer above Approve, Edit and Reject buttons; Edit opens a modal holding the answer to
change. A handoff's Claim button lets one staff member take the conversation.

The buttons carry the record's id, so a click on a draft or snippet posted before a restart (or
by another replica) is still decided: who may decide, and what a decision does, is the core's
(``bot.core.review``, ``bot.core.learning``). The review message then loses its buttons and
says who did what; a refusal is shown to the one who clicked only.
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
from bot.core.learning import Snippet
from bot.core.review import Action, Decided, Draft
from bot.core.service import Service
from bot.core.wording import DRAFT_GONE, NOT_STAFF
from bot.events import ConversationKey

__all__ = ["SlackReview", "blocks", "describe_snippet", "link_to"]

log = logging.getLogger(__name__)

ACTIONS = re.compile(r"parley_(draft|snippet)_(approve|edit|reject)")
#: A draft's edit modal, a snippet's.
EDIT_VIEWS = {"draft": "parley_edit", "snippet": "parley_snippet_edit"}
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


def describe_snippet(snippet: Snippet) -> str:
    """A snippet's review message: where it was learned, the question, the staff answer, and
    the article it contradicts."""
    where = f" from <{snippet.link}|the conversation>" if snippet.link else ""
    question = "\n".join(
        "&gt; " + escape_mrkdwn(line) for line in snippet.question[:300].split("\n")
    )
    check = f"\n\n:warning: {escape_mrkdwn(snippet.note)}" if snippet.note else ""
    head = f"*Learn this?* A staff answer{where}:\n{question}\n\n"
    answer = escape_mrkdwn(snippet.answer)
    room = _SECTION_LIMIT - len(head) - len(check) - 200
    return head + (answer if len(answer) <= room else answer[: room - 1] + "…") + check


def link_to(key: ConversationKey) -> str:
    """The conversation's thread in Slack's app."""
    thread = f"/thread/{key.channel}-{key.thread}" if key.thread else ""
    return f"https://app.slack.com/client/{key.workspace}/{key.channel}{thread}"


def blocks(record: Draft | Snippet, decision: str = "") -> list[dict[str, Any]]:
    """The review message: the answer, then its buttons, or once decided, who did what."""
    kind = "draft" if isinstance(record, Draft) else "snippet"
    text = describe(record) if isinstance(record, Draft) else describe_snippet(record)
    shown = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if decision:
        return [*shown, {"type": "context", "elements": [{"type": "mrkdwn", "text": decision}]}]
    buttons = [
        {
            "type": "button",
            "action_id": f"parley_{kind}_{action}",
            "text": {"type": "plain_text", "text": label},
            "value": record.id,
            **({"style": style} if style else {}),
        }
        for action, label, style in (
            ("approve", "Approve", "primary"),
            ("edit", "Edit", ""),
            ("reject", "Reject", "danger"),
        )
    ]
    return [*shown, {"type": "actions", "block_id": f"parley_{kind}", "elements": buttons}]


class SlackReview:
    def __init__(
        self, app: AsyncApp, client: AsyncWebClient, service: Service, channel: str
    ) -> None:
        self.client = client
        self.service = service
        self.channel = channel
        app.action(ACTIONS)(self.on_action)
        for view in EDIT_VIEWS.values():
            app.view(view)(self.on_edit)
        app.action(CLAIM_ACTION)(self.on_claim)

    async def post(self, draft: Draft) -> None:
        await self.client.chat_postMessage(
            channel=self.channel, text=f"Draft answer: {draft.question[:200]}", blocks=blocks(draft)
        )

    async def post_snippet(self, snippet: Snippet) -> None:
        await self.client.chat_postMessage(
            channel=self.channel,
            text=f"Learn this? {snippet.question[:200]}",
            blocks=blocks(snippet),
        )

    async def on_action(self, ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        match = ACTIONS.fullmatch(str(action.get("action_id", "")))
        if match is None:
            return
        record, kind = match.group(1), match.group(2)
        ident = str(action.get("value", ""))
        user = str((body.get("user") or {}).get("id", ""))
        where = {
            "channel": str((body.get("channel") or {}).get("id", "")),
            "ts": str((body.get("message") or {}).get("ts", "")),
        }
        if kind == "edit":
            await self._open_editor(body, record, ident, user, where)
            return
        await self._show(*await self._decide(body, record, ident, kind), where, user)  # type: ignore[arg-type]

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
        self, body: dict[str, Any], record: str, ident: str, user: str, where: dict[str, str]
    ) -> None:
        found = await self._record(record, ident) if self.service.is_staff(user) else None
        if found is None:
            problem = NOT_STAFF if not self.service.is_staff(user) else DRAFT_GONE
            await self._show(Decided(False, problem), None, where, user)
            return
        field = {
            "type": "plain_text_input",
            "action_id": _FIELD,
            "multiline": True,
            "initial_value": found.answer[:_INPUT_LIMIT],
        }
        await self.client.views_open(
            trigger_id=str(body.get("trigger_id", "")),
            view={
                "type": "modal",
                "callback_id": EDIT_VIEWS[record],
                "private_metadata": json.dumps({record: ident, **where}),
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
        record = "draft" if "draft" in meta else "snippet"
        decided = await self._decide(body, record, str(meta.get(record, "")), "edit", text)
        await self._show(*decided, where, user)

    async def _record(self, record: str, ident: str) -> Draft | Snippet | None:
        if record == "draft":
            return await self.service.draft(ident)
        return await self.service.snippet(ident)

    async def _decide(
        self, body: dict[str, Any], record: str, ident: str, action: Action, text: str = ""
    ) -> tuple[Decided, Draft | Snippet | None]:
        """The decision, and the record as it now stands (to show it decided)."""
        who = body.get("user") or {}
        user = str(who.get("id", ""))
        name = str(who.get("name") or who.get("username") or user)
        if record == "draft":
            decided = await self.service.decide(ident, action, user, (), text, name)
            return decided, decided.draft
        done, line = await self.service.decide_snippet(ident, action, user, (), text, name)
        return Decided(done, line), await self.service.snippet(ident) if done else None

    async def _show(
        self,
        decided: Decided,
        record: Draft | Snippet | None,
        where: dict[str, str],
        user: str,
    ) -> None:
        """A decision marks the review message (``record`` as decided); a refusal goes to the
        clicker alone."""
        try:
            if decided.ok and record is not None and where["ts"]:
                note = escape_mrkdwn(decided.message)
                await self.client.chat_update(
                    channel=where["channel"],
                    ts=where["ts"],
                    text=note,
                    blocks=blocks(record, f"*{note}*"),
                )
            else:
                await self.client.chat_postEphemeral(
                    channel=where["channel"], user=user, text=escape_mrkdwn(decided.message)
                )
        except SlackApiError as exc:
            log.warning("Slack: cannot show a draft's decision: %s", exc)
