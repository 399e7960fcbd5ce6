"""How an answer appears on Discord: typing, then a reply edited as the text grows.

``DiscordReply`` implements ``bot.core.reply.Reply`` on ``ThrottledReply``: at most one edit per
``interval``, the final edit continuing in further messages past 2,000 characters. Every send and
edit carries ``AllowedMentions.none()``, whatever the text says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import discord

from adapters.discord_split import LIMIT, split_message
from adapters.throttled import ThrottledReply

__all__ = [
    "CLAIM_PREFIX",
    "NO_PINGS",
    "DiscordReply",
    "InteractionSink",
    "MessageSink",
    "ResumedSink",
    "Sink",
    "claim_button",
]

log = logging.getLogger(__name__)

NO_PINGS = discord.AllowedMentions.none()
# Discord shows "typing…" for about 10 seconds after each trigger.
TYPING_REFRESH = 8.0


#: A Claim button's custom id: this and the conversation's key.
CLAIM_PREFIX = "parley:claim:"


def claim_button(conversation: str) -> discord.ui.View:
    """The handoff's button: a staff member takes the conversation (and is named to the
    customer)."""
    view = discord.ui.View(timeout=None)
    view.add_item(
        discord.ui.Button(
            label="Claim",
            style=discord.ButtonStyle.primary,
            custom_id=CLAIM_PREFIX + conversation,
        )
    )
    return view


class Sink(Protocol):
    """Where a reply's messages go: the first one and the continuations."""

    async def post(self, text: str, first: bool, allowed: discord.AllowedMentions) -> Any:
        """Post a message and return it (anything with ``id``, ``edit`` and ``delete``)."""
        ...

    async def typing(self) -> None: ...


class MessageSink:
    """Replies to a user's message, in its channel or thread."""

    def __init__(self, message: discord.Message) -> None:
        self.message = message

    async def post(
        self, text: str, first: bool, allowed: discord.AllowedMentions = NO_PINGS
    ) -> Any:
        channel = self.message.channel
        if first:
            # Still answer if the question was deleted meanwhile.
            reference = self.message.to_reference(fail_if_not_exists=False)
            return await channel.send(
                text, reference=reference, mention_author=False, allowed_mentions=allowed
            )
        return await channel.send(text, allowed_mentions=allowed)

    async def typing(self) -> None:
        await self.message.channel.typing()


class ResumedSink:
    """Answers, after a restart, a message taken in before it: a reply to it in its channel or
    thread, known by ids alone (nothing is fetched)."""

    def __init__(self, channel: discord.PartialMessageable, message_id: int) -> None:
        self.channel = channel
        self.message_id = message_id

    async def post(
        self, text: str, first: bool, allowed: discord.AllowedMentions = NO_PINGS
    ) -> Any:
        if first:
            reference = discord.MessageReference(
                message_id=self.message_id, channel_id=self.channel.id, fail_if_not_exists=False
            )
            return await self.channel.send(
                text, reference=reference, mention_author=False, allowed_mentions=allowed
            )
        return await self.channel.send(text, allowed_mentions=allowed)

    async def typing(self) -> None:
        await self.channel.typing()


class InteractionSink:
    """Answers a slash command: the interaction response, then follow-ups."""

    def __init__(self, interaction: discord.Interaction[Any]) -> None:
        self.interaction = interaction

    async def post(
        self, text: str, first: bool, allowed: discord.AllowedMentions = NO_PINGS
    ) -> Any:
        interaction = self.interaction
        if not first:
            return await interaction.followup.send(text, allowed_mentions=allowed, wait=True)
        if interaction.response.is_done():
            # Deferred ("thinking…"): the answer replaces the placeholder.
            return await interaction.edit_original_response(content=text, allowed_mentions=allowed)
        sent = await interaction.response.send_message(text, allowed_mentions=allowed)
        if isinstance(sent.resource, discord.InteractionMessage):
            return sent.resource
        return await interaction.original_response()

    async def typing(self) -> None:
        # A deferred interaction already shows "thinking…".
        pass

    async def settle(self, notice: str) -> None:
        """End an interaction that gets no answer: remove the "thinking…" placeholder, or tell
        the user alone that there is no answer here."""
        interaction = self.interaction
        try:
            if interaction.response.is_done():
                await interaction.delete_original_response()
            else:
                await interaction.response.send_message(
                    notice, ephemeral=True, allowed_mentions=NO_PINGS
                )
        except discord.HTTPException as exc:
            log.debug("could not close interaction %s: %s", interaction.id, exc)


class DiscordReply(ThrottledReply):
    """Typing, then a reply edited as the text grows, continuing in further messages past
    2,000 characters. ``staff_roles``: the role ids a handoff mentions, the only mention the
    bot ever makes."""

    platform = "discord"

    def __init__(
        self,
        sink: Sink,
        interval: float = 1.0,
        limit: int = LIMIT,
        staff_roles: tuple[int, ...] = (),
    ) -> None:
        super().__init__(interval)
        self.sink = sink
        self.limit = limit
        self.staff_roles = staff_roles

    async def start(self) -> None:
        if not self._helpers and not self._done.is_set():
            self._helpers.append(asyncio.create_task(self._type(), name="discord typing"))

    async def handoff(self, text: str, conversation: str) -> None:
        """Finish with ``text`` and a mention of the support team's roles, pinging only them,
        and a Claim button for the one who takes the conversation."""
        if not self.staff_roles:
            await self.finish(text)
        else:
            await self._stop()
            mentions = " ".join(f"<@&{role}>" for role in self.staff_roles)
            allowed = discord.AllowedMentions(
                everyone=False,
                users=False,
                roles=[discord.Object(id=role) for role in self.staff_roles],
                replied_user=False,
            )
            async with self._lock:
                await self._show(f"{text}\n\n{mentions}", final=True, allowed=allowed)
        if self.posted:
            try:
                await self.posted[-1].edit(view=claim_button(conversation))
            except discord.HTTPException as exc:
                log.warning("cannot add the Claim button to a handoff: %s", exc)

    @property
    def message_id(self) -> str:
        """The id of the reply's first message, which ratings (reactions) refer to."""
        return str(self.posted[0].id) if self.posted else ""

    async def _type(self) -> None:
        while not self._done.is_set():
            try:
                await self.sink.typing()
            except Exception as exc:
                log.debug("typing indicator failed: %s", exc)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), TYPING_REFRESH)

    async def _show(
        self, text: str, final: bool, allowed: discord.AllowedMentions = NO_PINGS
    ) -> None:
        pieces = split_message(text, self.limit) if text.strip() else []
        await self._show_pieces(
            pieces,
            final,
            edit=lambda message, piece: message.edit(content=piece, allowed_mentions=allowed),
            post=lambda index, piece: self.sink.post(piece, index == 0, allowed),
            delete=_delete,
        )


async def _delete(message: Any) -> None:
    with contextlib.suppress(discord.HTTPException):
        await message.delete()
