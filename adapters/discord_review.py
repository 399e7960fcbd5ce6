"""Staff's buttons on Discord. Drafts (policy ``autonomy = "draft"``) wait in
``discord.review_channel`` with Approve, Edit and Reject; Edit opens a modal holding the answer
to change. A handoff's Claim button lets one staff member take the conversation.

Clicks and modal submits are taken from ``on_interaction`` by their custom ids, not from a view
kept in memory, so a draft posted before a restart (or by another replica) is still decided.
Who may decide, and what a decision does, is the core's (``bot.core.review``); this module
shows the outcome: the review message loses its buttons and says who did what, and a refusal
is shown to the one who clicked only.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord

from adapters.discord_reply import CLAIM_PREFIX, NO_PINGS
from bot.core.review import Action, Decided, Draft
from bot.core.service import Service
from bot.core.wording import DRAFT_GONE, NOT_STAFF

__all__ = ["DiscordReview", "buttons", "describe"]

log = logging.getLogger(__name__)

_BUTTON = re.compile(r"parley:draft:(approve|edit|reject):([0-9a-f]{32})")
_EDIT = re.compile(r"parley:edit:([0-9a-f]{32})")
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


def buttons(draft_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action, label, style in (
        ("approve", "Approve", discord.ButtonStyle.success),
        ("edit", "Edit", discord.ButtonStyle.primary),
        ("reject", "Reject", discord.ButtonStyle.danger),
    ):
        view.add_item(
            discord.ui.Button(
                label=label, style=style, custom_id=f"parley:draft:{action}:{draft_id}"
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

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        data: Any = interaction.data or {}
        custom_id = str(data.get("custom_id", ""))
        kind = interaction.type
        if kind is discord.InteractionType.component and custom_id.startswith(CLAIM_PREFIX):
            await self._claim(interaction, custom_id.removeprefix(CLAIM_PREFIX))
        elif kind is discord.InteractionType.component and (match := _BUTTON.fullmatch(custom_id)):
            action: Any = match.group(1)
            await self._clicked(interaction, action, match.group(2))
        elif kind is discord.InteractionType.modal_submit and (match := _EDIT.fullmatch(custom_id)):
            await self._edited(interaction, match.group(1), _field(data, _ANSWER_FIELD))

    async def _clicked(
        self, interaction: discord.Interaction, action: Action, draft_id: str
    ) -> None:
        user, roles = _who(interaction)
        if action != "edit":
            await self._show(interaction, await self._decide(interaction, draft_id, action))
            return
        if not self.service.is_staff(user, roles):
            await self._show(interaction, Decided(False, NOT_STAFF))
            return
        draft = await self.service.draft(draft_id)
        if draft is None:
            await self._show(interaction, Decided(False, DRAFT_GONE))
            return
        modal = discord.ui.Modal(title="Edit the answer", custom_id=f"parley:edit:{draft_id}")
        modal.add_item(
            discord.ui.TextInput(
                label="Answer",
                style=discord.TextStyle.long,
                custom_id=_ANSWER_FIELD,
                default=draft.answer[:_INPUT_LIMIT],
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

    async def _edited(self, interaction: discord.Interaction, draft_id: str, text: str) -> None:
        await self._show(interaction, await self._decide(interaction, draft_id, "edit", text))

    async def _decide(
        self, interaction: discord.Interaction, draft_id: str, action: Action, text: str = ""
    ) -> Decided:
        user, roles = _who(interaction)
        return await self.service.decide(
            draft_id, action, user, roles, text, interaction.user.display_name
        )

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
