"""The golden set: questions a knowledge base must answer (with the facts the answer must
hold) and questions it must not.

JSON Lines, one question a line (blank lines and lines starting with ``#`` are skipped)::

    {"question": "how long does the reset link work?", "document": "resetting-your-password.md",
     "facts": ["60 minutes"]}
    {"question": "is there a student discount", "document": "discounts.md",
     "facts": [["50%", "half price"]]}
    {"question": "and for the family plan?", "history": ["how much is Plus?"],
     "document": "plans-and-prices.md", "facts": ["$10"]}
    {"question": "who is your CEO?", "out_of_scope": true}

``document`` names the article that answers the question (its file name, its path as ingested,
its title or its URL). Every entry of ``facts`` must appear in the answer; an entry that is a
list gives the accepted forms of one fact. ``history`` holds the conversation's earlier turns,
oldest first: a string is the customer's, ``{"role": "assistant", "content": "…"}`` the bot's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bot.errors import ConfigError

__all__ = ["GoldenItem", "Turn", "load_golden", "parse_golden"]

KEYS = frozenset({"question", "document", "facts", "history", "out_of_scope", "note"})


@dataclass(frozen=True, slots=True)
class Turn:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class GoldenItem:
    line: int
    question: str
    document: str = ""
    #: each fact as its accepted forms; the answer must hold one form of every fact
    facts: tuple[tuple[str, ...], ...] = ()
    history: tuple[Turn, ...] = ()
    out_of_scope: bool = False


class _Bad(ValueError):
    """What is wrong with one line, without its place (the caller adds it)."""


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"{what} must be a non-empty string")
    return value.strip()


def _facts(value: object) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, list):
        raise _Bad("'facts' must be a list (of strings, or of lists of accepted forms)")
    facts = []
    for fact in value:
        forms = fact if isinstance(fact, list) else [fact]
        if not forms:
            raise _Bad("a fact's list of accepted forms is empty")
        facts.append(tuple(_text(form, "each fact") for form in forms))
    return tuple(facts)


def _history(value: object) -> tuple[Turn, ...]:
    if not isinstance(value, list):
        raise _Bad("'history' must be a list of earlier turns")
    turns = []
    for turn in value:
        if isinstance(turn, str):
            turns.append(Turn("user", _text(turn, "a turn")))
            continue
        if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
            raise _Bad('a turn is a string or {"role": "user"|"assistant", "content": "…"}')
        role = turn["role"]
        if role not in ("user", "assistant"):
            raise _Bad(f"a turn's role is 'user' or 'assistant', not {role!r}")
        turns.append(Turn(role, _text(turn["content"], "a turn's content")))
    return tuple(turns)


def _item(row: object, line: int) -> GoldenItem:
    if not isinstance(row, dict):
        raise _Bad("expected a JSON object")
    unknown = set(row) - KEYS
    if unknown:
        raise _Bad(
            f"unknown key(s) {', '.join(sorted(unknown))} (expected {', '.join(sorted(KEYS))})"
        )
    question = _text(row.get("question"), "'question'")
    history = _history(row.get("history", []))
    out_of_scope = row.get("out_of_scope", False)
    if not isinstance(out_of_scope, bool):
        raise _Bad("'out_of_scope' must be true or false")
    if out_of_scope:
        if "document" in row or "facts" in row:
            raise _Bad("an out-of-scope question has no 'document' or 'facts'")
        return GoldenItem(line, question, history=history, out_of_scope=True)
    if "document" not in row:
        raise _Bad("give the 'document' that answers the question, or \"out_of_scope\": true")
    document = _text(row["document"], "'document'")
    return GoldenItem(line, question, document, _facts(row.get("facts", [])), history)


def parse_golden(text: str, where: str = "golden set") -> list[GoldenItem]:
    """The golden set in ``text``; a malformed line raises ConfigError naming its number."""
    items: list[GoldenItem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            items.append(_item(json.loads(raw), number))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}:{number}: not JSON ({exc.msg})") from None
        except _Bad as exc:
            raise ConfigError(f"{where}:{number}: {exc}") from None
    if not items:
        raise ConfigError(f"{where}: the golden set has no questions")
    return items


def load_golden(path: str | Path) -> list[GoldenItem]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the golden set: {exc}") from None
    return parse_golden(text, str(path))
