"""Staff's buttons on Discord. Drafts (policy ``autonomy = "draft"``) and the snippets resolved
conversations teach (bot/core/learning.py) wait in ``discord.review_channel`` with Approve,
Edit and Reject; Edit opens a modal holding the answer to change. A handoff's Claim button lets
one staff member take the conversation.

Clicks and modal submits are taken from ``on_interaction`` by their custom ids, not from a view
kept in memory, so a draft or snippet posted before a restart (or by another replica) is still
decided. Who may decide, and what a decision does, is the core's (``bot.core.review``,
``bot.core.learning``); this module
shows the outcome: the review message loses its buttons and says who did what, and a refusal
is shown to the one who clicked only.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord

from adapters.discord_reply import CLAIM_PREFIX, NO_PINGS
from bot.core.learning import Snippet
from bot.core.review import Action, Decided, Draft
from bot.core.service import Service
from bot.core.wording import DRAFT_GONE, NOT_STAFF
from bot.events import ConversationKey

__all__ = ["DiscordReview", "buttons", "describe", "describe_snippet", "link_to"]

log = logging.getLogger(__name__)

_BUTTON = re.compile(r"parley:(draft|snippet):(approve|edit|reject):([0-9a-f]{12,32})")
#: A draft's modal, a snippet's.
_EDIT = re.compile(r"parley:(edit|snippet-edit):([0-9a-f]{12,32})")
_MODALS = {"draft": "edit", "snippet": "snippet-edit"}
_ANSWER_FIELD = "answer"
_LIMIT = 2000
# A modal's text input holds at most this much.
_INPUT_LIMIT = 4000


def describe(draft: Draft) -> str:
    """The review message: who asked what, where, and the answer the bot would give."""
    event = draft.event
    where = f" in <#{event.thread or event.channel}>" if event and event.channel else ""
    who = (event.user_name or event.user) if event else "a customer"
    question = "\n".join("> " + line for line in draft.question[:300].split("\n"))
    head = f"**Draft answer** for {who}{where}:\n{question}\n\n"
    room = _LIMIT - len(head) - 200  # the decision is appended later
    answer = draft.answer if len(draft.answer) <= room else draft.answer[: room - 1] + "…"
    return head + answer


def describe_snippet(snippet: Snippet) -> str:
    """A snippet's review message: where it was learned, the question, the staff answer, and
    the article it contradicts."""
    where = f" from {snippet.link}" if snippet.link else ""
    question = "\n".join("> " + line for line in snippet.question[:300].split("\n"))
    check = f"\n\n:warning: {snippet.note}" if snippet.note else ""
    head = f"**Learn this?** A staff answer{where}:\n{question}\n\n"
    room = _LIMIT - len(head) - len(check) - 200
    answer = snippet.answer if len(snippet.answer) <= room else snippet.answer[: room - 1] + "…"
    return head + answer + check


def link_to(key: ConversationKey) -> str:
    """The conversation's address in Discord's app."""
    return f"https://discord.com/channels/{key.workspace or '@me'}/{key.thread or key.channel}"


def buttons(record_id: str, kind: str = "draft") -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action, label, style in (
        ("approve", "Approve", discord.ButtonStyle.success),
        ("edit", "Edit", discord.ButtonStyle.primary),
        ("reject", "Reject", discord.ButtonStyle.danger),
    ):
        view.add_item(
            discord.ui.Button(
                label=label, style=style, custom_id=f"parley:{kind}:{action}:{record_id}"
            )
        )
    return view


class DiscordReview:
    def __init__(self, client: discord.Client, service: Service, channel_id: int = 0) -> None:
        self.client = client
        self.service = service
        #: Where drafts wait for staff (0: nowhere; only handoffs' Claim buttons are handled).
        self.channel_id = channel_id

    async def post(self, draft: Draft) -> None:
        channel = self.client.get_channel(self.channel_id) or await self.client.fetch_channel(
            self.channel_id
        )
        assert isinstance(channel, discord.abc.Messageable)
        await channel.send(describe(draft), view=buttons(draft.id), allowed_mentions=NO_PINGS)

    async def post_snippet(self, snippet: Snippet) -> None:
        channel = self.client.get_channel(self.channel_id) or await self.client.fetch_channel(
            self.channel_id
        )
        assert isinstance(channel, discord.abc.Messageable)
        view = buttons(snippet.id, "snippet")
        await channel.send(describe_snippet(snippet), view=view, allowed_mentions=NO_PINGS)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        data: Any = interaction.data or {}
        custom_id = str(data.get("custom_id", ""))
        kind = interaction.type
        if kind is discord.InteractionType.component and custom_id.startswith(CLAIM_PREFIX):
            await self._claim(interaction, custom_id.removeprefix(CLAIM_PREFIX))
        elif kind is discord.InteractionType.component and (match := _BUTTON.fullmatch(custom_id)):
            record, action, ident = match.groups()
            await self._clicked(interaction, record, action, ident)  # type: ignore[arg-type]
        elif kind is discord.InteractionType.modal_submit and (match := _EDIT.fullmatch(custom_id)):
            record = "draft" if match.group(1) == "edit" else "snippet"
            text = _field(data, _ANSWER_FIELD)
            decided = await self._decide(interaction, record, match.group(2), "edit", text)
            await self._show(interaction, decided)

    async def _clicked(
        self, interaction: discord.Interaction, record: str, action: Action, ident: str
    ) -> None:
        user, roles = _who(interaction)
        if action != "edit":
            await self._show(interaction, await self._decide(interaction, record, ident, action))
            return
        if not self.service.is_staff(user, roles):
            await self._show(interaction, Decided(False, NOT_STAFF))
            return
        found: Draft | Snippet | None = (
            await self.service.draft(ident)
            if record == "draft"
            else await self.service.snippet(ident)
        )
        if found is None:
            await self._show(interaction, Decided(False, DRAFT_GONE))
            return
        modal = discord.ui.Modal(
            title="Edit the answer", custom_id=f"parley:{_MODALS[record]}:{ident}"
        )
        modal.add_item(
            discord.ui.TextInput(
                label="Answer",
                style=discord.TextStyle.long,
                custom_id=_ANSWER_FIELD,
                default=found.answer[:_INPUT_LIMIT],
                max_length=_INPUT_LIMIT,
            )
        )
        await interaction.response.send_modal(modal)

    async def _claim(self, interaction: discord.Interaction, conversation: str) -> None:
        """A staff member takes a handed-off conversation: the handoff message, which the
        customer sees, names them and loses its button."""
        user, roles = _who(interaction)
        name = interaction.user.display_name
        taken, line = await self.service.claim(conversation, user, roles, name)
        await self._show(interaction, Decided(taken, line))

    async def _decide(
        self,
        interaction: discord.Interaction,
        record: str,
        ident: str,
        action: Action,
        text: str = "",
    ) -> Decided:
        user, roles = _who(interaction)
        name = interaction.user.display_name
        if record == "draft":
            return await self.service.decide(ident, action, user, roles, text, name)
        done, line = await self.service.decide_snippet(ident, action, user, roles, text, name)
        return Decided(done, line)

    async def _show(self, interaction: discord.Interaction, decided: Decided) -> None:
        """A decision marks the review message; a refusal goes to the clicker alone."""
        message = interaction.message
        if decided.ok and message is not None:
            content = f"{message.content}\n\n**{decided.message}**"
            await interaction.response.edit_message(content=content, view=None)
        else:
            await interaction.response.send_message(
                decided.message, ephemeral=True, allowed_mentions=NO_PINGS
            )


def _who(interaction: discord.Interaction) -> tuple[str, list[str]]:
    user = interaction.user
    return str(user.id), [str(role.id) for role in getattr(user, "roles", ())]


def _field(data: Any, custom_id: str) -> str:
    """A modal's submitted value for the text input ``custom_id``."""
    for row in data.get("components", []):
        for item in row.get("components", []):
            if item.get("custom_id") == custom_id:
                return str(item.get("value", ""))
    return ""
