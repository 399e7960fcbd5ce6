"""Splitting a long answer into Discord messages of at most 2,000 characters.

Cuts fall at the last paragraph break that leaves the piece at least half full, else a line
break, a sentence end, a space, and only as a last resort mid-word. A cut inside a code fence
closes the fence at the end of the piece and reopens it (with its language) at the start of the
next, so each message renders on its own; where a fence is open, markdown-it-py says
(``adapters.markdown``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from adapters.markdown import open_fence

__all__ = ["LIMIT", "split_message"]

LIMIT = 2000
_SENTENCE_END = re.compile(r"[.!?…][)\"'”’]*\s")
_BACKTICKS = re.compile(r"`+\w*")
_STARTS_WITH_BACKTICK = re.compile(r"\s*`")
# A language tag longer than this is not one; reopen the fence plain.
_MAX_LANG = 20


def split_message(text: str, limit: int = LIMIT) -> list[str]:
    """``text`` as pieces of at most ``limit`` characters, none leaving a code fence open (a
    reply cut short mid-code, or still being written, shows its code as code)."""
    pieces: list[str] = []
    carry = ""
    rest = text
    while True:
        body = carry + rest
        if len(body) <= limit:
            fence = _open_fence(body)
            if fence is None:
                pieces.append(body)
                return pieces
            if len(body.rstrip()) + 1 + len(fence[0]) <= limit:
                pieces.append(body.rstrip() + "\n" + fence[0])
                return pieces
        # Leave room to close a fence the cut may fall inside (a longer marker: more room).
        reserve = len("\n```")
        while True:
            cut = _cut_point(body, limit - reserve, len(carry) + 1)
            head, rest = body[:cut], body[cut:]
            fence = _open_fence(head)
            close = "\n" + fence[0] if fence is not None else ""
            if len(head.rstrip()) + len(close) <= limit or reserve >= limit // 2:
                break
            reserve = len(close)
        head = head.rstrip()
        if fence is None:
            carry = ""
            rest = rest.lstrip()
        else:
            head += close
            carry = fence[1] + "\n"
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


def _open_fence(text: str) -> tuple[str, str] | None:
    """How to close the code fence left open at the end of ``text`` (its marker, indented as
    its opener) and how to reopen it at the top of the next piece (with its language, unless
    the tag is too long to be one); None when every fence is closed."""
    fence = open_fence(text)
    if fence is None:
        return None
    lang = fence.info if len(fence.info) <= _MAX_LANG and " " not in fence.info else ""
    return fence.indent + fence.marker, fence.marker + lang
