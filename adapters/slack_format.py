"""Slack's text formats at the edge: incoming markup as plain text, outgoing text made inert.

Slack sends text already encoded: mentions as ``<@U…>``, broadcasts as ``<!here>``, links as
``<url|label>``, and a typed ``<`` as ``&lt;``. Everything the bot posts has ``&``, ``<`` and
``>`` escaped first, so neither a user's words nor the model's can become a ``<!channel>`` or
``<@U…>`` ping; the only markup added afterwards is links built here (mrkdwn) and the handoff's
staff mention, built by the reply itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable

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


def escape(text: str) -> str:
    """``text`` with Slack's three control characters escaped: it can ping no one."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_FENCE = re.compile(r"(```.*?(?:```|\Z))", re.DOTALL)
_INLINE_CODE = re.compile(r"(`[^`\n]+`)")
_LINK = re.compile(r"\[([^\]\n]+)\]\(((?:https?|mailto):[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.MULTILINE)
# Placeholders for bold while italics are converted: Slack's bold is Markdown's italic marker.
_B = "\x00"


def _inline(text: str) -> str:
    """Markdown spans outside code as mrkdwn; ``text`` is already escaped."""
    text = _LINK.sub(lambda m: f"<{m.group(2)}|{m.group(1).replace('|', '/')}>", text)
    text = _BOLD.sub(lambda m: f"{_B}{m.group(1) or m.group(2)}{_B}", text)
    text = _ITALIC.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    text = _HEADING.sub(lambda m: f"{_B}{m.group(1)}{_B}", text)
    text = _BULLET.sub(r"\1• ", text)
    return text.replace(_B, "*")


def to_mrkdwn(markdown: str) -> str:
    """The model's Markdown as Slack mrkdwn, escaped: code kept verbatim, **bold** as *bold*,
    *italic* as _italic_, ~~strike~~ as ~strike~, [label](url) as <url|label>, headings bold,
    list bullets as •."""
    out: list[str] = []
    for block in _FENCE.split(escape(markdown.replace(_B, ""))):
        if block.startswith("```"):
            out.append(block)
            continue
        for span in _INLINE_CODE.split(block):
            out.append(span if span.startswith("`") and len(span) > 1 else _inline(span))
    return "".join(out)
