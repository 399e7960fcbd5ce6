"""Cleaning text on its way in (from users) and out (from the model), once each, in the core.

Platform markup (Discord mentions, Slack's ``<!here>``) is neutralised by each adapter at its
edge; this module removes what no platform should ever show.
"""

from __future__ import annotations

import re

__all__ = ["clean_input", "clean_output", "cut"]

# Control characters except tab and newline, plus invisible direction overrides that can make
# text read differently from what it says.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
# The model's own chat markup (ChatML, Llama 3, Gemma) must never reach a user.
_ROLE_MARKER = re.compile(r"<\|[a-z_]+\|>|<(?:start|end)_of_turn>|</?s>")
_BLANK_RUN = re.compile(r"\n{3,}")
# Platform mention syntax a model might write (it knows no real ids, so none is meant):
# Discord users, roles, channels; Slack users, broadcasts and user groups.
_PLATFORM_MENTIONS = (
    (re.compile(r"<@!?\d+>"), "@user"),
    (re.compile(r"<@&\d+>"), "@role"),
    (re.compile(r"<#\d+>"), "#channel"),
    (re.compile(r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>"), "@user"),
    (re.compile(r"<!subteam\^[A-Za-z0-9]+(?:\|[^>]*)?>"), "@group"),
    (re.compile(r"<!(here|channel|everyone)(?:\|[^>]*)?>"), r"@\1"),
)
# A zero-width space after the @ keeps the word readable and pings no one anywhere.
_MASS_MENTION = re.compile(r"@(everyone|here|channel)\b", re.IGNORECASE)
ZWSP = "\u200b"
MAX_REPEATED_LINES = 2
MAX_LINE_CHARS = 1000


def _valid_unicode(text: str) -> str:
    # Lone surrogates (from broken clients) cannot be encoded, stored or sent anywhere.
    return text.encode("utf-8", "replace").decode("utf-8")


def clean_input(text: str) -> str:
    """What a user sent, safe to store and to put in a prompt."""
    text = _valid_unicode(text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    # Chat-template markers in user text would let it forge a system turn.
    text = _ROLE_MARKER.sub("", text)
    return _BLANK_RUN.sub("\n\n", text).strip()


def clean_output(text: str) -> str:
    """What the model wrote, safe to show: no control characters or role markers, no platform
    mention syntax or mass mention, no runaway repetition of a line, no endless line."""
    text = _CONTROL.sub("", _valid_unicode(text).replace("\r", ""))
    text = _ROLE_MARKER.sub("", text)
    for pattern, readable in _PLATFORM_MENTIONS:
        text = pattern.sub(readable, text)
    kept: list[str] = []
    repeats = 0
    for line in text.split("\n"):
        if kept and line.strip() and line == kept[-1]:
            repeats += 1
            if repeats >= MAX_REPEATED_LINES:
                continue
        else:
            repeats = 0
        kept.append(line[:MAX_LINE_CHARS])
    text = _BLANK_RUN.sub("\n\n", "\n".join(kept)).strip()
    return _MASS_MENTION.sub(lambda m: f"@{ZWSP}{m.group(1)}", text)


def cut(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to at most ``limit`` characters at a word boundary if one is near."""
    if len(text) <= limit:
        return text, False
    head = text[:limit]
    space = head.rfind(" ", int(limit * 0.9))
    return (head[:space] if space > 0 else head).rstrip(), True
