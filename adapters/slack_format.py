"""Slack's text formats at the edge: incoming markup as plain text, outgoing text made inert.

Slack sends text already encoded: mentions as ``<@U…>``, broadcasts as ``<!here>``, links as
``<url|label>``, and a typed ``<`` as ``&lt;``. Everything the bot posts has ``&``, ``<`` and
``>`` escaped first, so neither a user's words nor the model's can become a ``<!channel>`` or
``<@U…>`` ping; the only markup added afterwards is the mrkdwn the answer's Markdown becomes
(``adapters.markdown``) and the handoff's staff mention, built by the reply itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from adapters.markdown import escape_mrkdwn as escape
from adapters.markdown import to_mrkdwn

__all__ = ["USER_MENTION", "escape", "leading_user", "readable", "to_mrkdwn"]

_ANGLE = re.compile(r"<([^<>]*)>")
_SPACES = re.compile(r"[ \t]{2,}")
#: A user mention as Slack sends it: <@U…> or <@U…|name>.
USER_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def readable(text: str, bot_user: str, user_name: Callable[[str], str]) -> str:
    """Slack message text as plain text: the bot's mention removed, others as @name / #name,
    links as their label and address."""

    def swap(match: re.Match[str]) -> str:
        inner = match.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            ident = target[1:]
            return "" if ident == bot_user else "@" + (label or user_name(ident))
        if target.startswith("#"):
            return "#" + (label or "channel")
        if target.startswith("!subteam^"):
            return label or "@group"
        if target.startswith("!"):
            # <!here>, <!channel>, <!everyone>, <!date^…|fallback>
            return label or "@" + target[1:].split("^")[0]
        if label and label != target:
            return f"{label} ({target})"
        return target

    text = _unescape(_ANGLE.sub(swap, text))
    return "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n")).strip()


def leading_user(text: str) -> str | None:
    """The user a message opens by mentioning, if any."""
    match = USER_MENTION.match(text.lstrip())
    return match.group(1) if match else None
