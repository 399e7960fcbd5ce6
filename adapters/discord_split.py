"""Splitting a long answer into Discord messages of at most 2,000 characters.

Cuts fall at the last paragraph break that leaves the piece at least half full, else a line
break, a sentence end, a space, and only as a last resort mid-word. A cut inside a code fence
closes the fence at the end of the piece and reopens it (with its language) at the start of the
next, so each message renders on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["LIMIT", "split_message"]

LIMIT = 2000
_CLOSE = "\n```"
_FENCE = re.compile(r"^[ \t]*```([^\s`]*)", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?…][)\"'”’]*\s")
_BACKTICKS = re.compile(r"`+\w*")
_STARTS_WITH_BACKTICK = re.compile(r"\s*`")
# A language tag longer than this is not one; reopen the fence plain.
_MAX_LANG = 20


def split_message(text: str, limit: int = LIMIT) -> list[str]:
    """``text`` as pieces of at most ``limit`` characters, each with balanced code fences."""
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    carry = ""
    rest = text
    while True:
        body = carry + rest
        if len(body) <= limit:
            pieces.append(body)
            return pieces
        # Leave room to close a fence the cut may fall inside.
        window = limit - len(_CLOSE)
        cut = _cut_point(body, window, len(carry) + 1)
        head, rest = body[:cut], body[cut:]
        opener = _open_fence(head)
        head = head.rstrip()
        if opener is None:
            carry = ""
            rest = rest.lstrip()
        else:
            head += _CLOSE
            carry = opener + "\n"
            # Inside code, leading spaces are indentation: drop only the newline we cut at.
            rest = rest.removeprefix("\n")
        pieces.append(head)


def _cut_point(body: str, window: int, low: int) -> int:
    """Where to end a piece: just after the best boundary in ``body[low:window]`` that leaves
    every code fence marker as it was."""
    for cut in _boundaries(body, window, low):
        if _keeps_fences(body, cut):
            return cut
    return window


def _boundaries(body: str, window: int, low: int) -> Iterator[int]:
    """Cut points in order of preference: paragraph, line, sentence, word, character."""
    half = max(low, window // 2)
    for separator in ("\n\n", "\n"):
        at = body.rfind(separator, half, window)
        if at > 0:
            yield at + len(separator)
    yield from reversed([m.end() for m in _SENTENCE_END.finditer(body, half, window)])
    floor = max(low, window // 4)
    at = body.rfind(" ", floor, window)
    while at > 0:
        yield at + 1
        at = body.rfind(" ", floor, at)
    yield from range(window, low, -1)


def _keeps_fences(body: str, cut: int) -> bool:
    """False where the cut would split a run of backticks and its language ("```p" + "y"), or
    bring backticks from the middle of a line to the start of the next piece, where they
    would open or close a code block."""
    if body[cut - 1 : cut] == "\n":
        return True
    run = _BACKTICKS.search(body, max(0, cut - 64), cut + 64)
    while run is not None and run.start() < cut:
        if cut < run.end():
            return False
        run = _BACKTICKS.search(body, run.end(), cut + 64)
    return _STARTS_WITH_BACKTICK.match(body, cut) is None


def _open_fence(text: str) -> str | None:
    """The opening line of a code fence left open at the end of ``text``, or None."""
    opener: str | None = None
    for match in _FENCE.finditer(text):
        if opener is None:
            lang = match.group(1)
            opener = "```" + (lang if len(lang) <= _MAX_LANG else "")
        else:
            opener = None
    return opener
