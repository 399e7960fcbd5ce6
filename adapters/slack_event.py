"""A Slack ``message`` or ``app_mention`` event as an ``Event``, and where its answer goes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapters.slack_format import leading_user, readable
from adapters.slack_reply import Place
from bot.events import Event

__all__ = ["PLATFORM", "place", "to_event"]

PLATFORM = "slack"


def to_event(event: dict[str, Any], team: str, bot_user: str, names: dict[str, str]) -> Event:
    """A Slack ``message`` or ``app_mention`` event as an Event; ``names``: user id → name."""
    channel = str(event.get("channel", ""))
    ts = str(event.get("ts", ""))
    text = str(event.get("text") or "")
    user = str(event.get("user") or "")
    is_dm = event.get("channel_type") == "im" or channel.startswith("D")
    other = leading_user(text)
    try:
        received = datetime.fromtimestamp(float(ts), UTC)
    except (ValueError, OverflowError, OSError):
        received = datetime.now(UTC)
    return Event(
        platform=PLATFORM,
        workspace=team,
        channel=channel,
        thread=str(event.get("thread_ts") or ts),
        message_id=ts,
        user=user,
        user_name=names.get(user, ""),
        text=readable(text, bot_user, lambda ident: names.get(ident, "user")),
        addressed=is_dm or f"<@{bot_user}" in text,
        is_dm=is_dm,
        from_bot=bool(event.get("bot_id")) or event.get("subtype") == "bot_message",
        received_at=received,
        mentions_others=other is not None and other != bot_user,
    )


def place(event: Event) -> Place:
    """Where the answer to ``event`` goes: its thread, or one under it."""
    return Place(
        event.workspace, event.channel, event.thread or event.message_id, event.user, event.is_dm
    )
