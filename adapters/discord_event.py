"""A Discord message as an ``Event``: where it was said, who said it, and its text with
Discord's markup (mentions, channels, custom emoji) made readable."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import discord

from bot.events import Event

__all__ = ["PLATFORM", "message_text", "place", "readable", "to_event"]

PLATFORM = "discord"

_MARKUP = re.compile(r"<(@!?|@&|#)(\d+)>|<a?:(\w+):\d+>")
_LEADING_USER = re.compile(r"\s*<@!?(\d+)>")
_SPACES = re.compile(r"[ \t]{2,}")


def readable(
    content: str,
    bot_id: int,
    users: Mapping[int, str],
    roles: Mapping[int, str],
    channel_name: Callable[[int], str | None],
) -> str:
    """``content`` as plain text: the bot's mention removed, other mentions as @name / #name."""

    def swap(match: re.Match[str]) -> str:
        kind, number, emoji = match.group(1), match.group(2), match.group(3)
        if emoji is not None:
            return f":{emoji}:"
        ident = int(number)
        if kind in ("@", "@!"):
            return "" if ident == bot_id else "@" + users.get(ident, "user")
        if kind == "@&":
            return "@" + roles.get(ident, "role")
        return "#" + (channel_name(ident) or "channel")

    text = _MARKUP.sub(swap, content)
    return "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n")).strip()


def message_text(message: discord.Message, bot_id: int) -> str:
    guild = message.guild

    def channel_name(ident: int) -> str | None:
        found = guild.get_channel_or_thread(ident) if guild is not None else None
        return found.name if found is not None else None

    return readable(
        message.content,
        bot_id,
        {user.id: user.display_name for user in message.mentions},
        {role.id: role.name for role in message.role_mentions},
        channel_name,
    )


def place(channel: object, channel_id: int | None) -> tuple[str, str | None, tuple[str, ...]]:
    """(channel, thread, parents) of a conversation. A thread is its own conversation, keyed
    under its parent channel (as Slack threads are), so a channel's rules cover its threads;
    ``parents`` adds the channel's category."""
    if isinstance(channel, discord.Thread):
        parent = channel.parent
        category = getattr(parent, "category_id", None)
        parents = (str(channel.parent_id), *((str(category),) if category else ()))
        return str(channel.parent_id), str(channel.id), parents
    category = getattr(channel, "category_id", None)
    ident = str(getattr(channel, "id", None) or channel_id or "")
    return ident, None, (str(category),) if category else ()


def to_event(message: discord.Message, bot_id: int) -> Event:
    """Convert a message; ``addressed`` says whether it is a DM, mentions the bot, or replies
    to the bot."""
    channel, thread, parents = place(message.channel, message.channel.id)
    replied = message.reference.resolved if message.reference is not None else None
    replied_to = replied if isinstance(replied, discord.Message) else None
    is_dm = message.guild is None
    addressed = (
        is_dm
        or any(user.id == bot_id for user in message.mentions)
        or (replied_to is not None and replied_to.author.id == bot_id)
    )
    context = message_text(replied_to, bot_id) if replied_to is not None else None
    author = message.author
    leading = _LEADING_USER.match(message.content)
    return Event(
        platform=PLATFORM,
        workspace=str(message.guild.id) if message.guild is not None else "",
        channel=channel,
        thread=thread,
        message_id=str(message.id),
        user=str(author.id),
        user_name=author.display_name,
        text=message_text(message, bot_id),
        addressed=addressed,
        is_dm=is_dm,
        from_bot=author.bot,
        received_at=message.created_at,
        context=context or None,
        roles=tuple(str(role.id) for role in getattr(author, "roles", ())),
        parents=parents,
        mentions_others=leading is not None and int(leading.group(1)) != bot_id,
    )
