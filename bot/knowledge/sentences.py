"""A passage cut into the pieces an answer can quote: sentences, list items and table rows.

An answer is composed of the knowledge base's own sentences, so each piece must read on its
own: a list item keeps the sentence that introduces its list as context, and a table row is
written out with its column names ("Personal — storage: 200 GB; price: $4 a month"), since a
bare row of cells means nothing outside its table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["Unit", "split_sentences", "units"]

Kind = Literal["sentence", "item", "row"]

#: A sentence ends at . ! or ? (a closing quote or bracket may follow) before a space and a
#: capital, a digit or an opening quote; words such as "e.g." do not end one.
_END = re.compile(r"(?<=[.!?])([\"”’)]?)\s+(?=[\"“(]?[A-Z0-9$€£])")
_ABBREVIATIONS = frozenset(
    [
        "e.g.",
        "i.e.",
        "etc.",
        "vs.",
        "approx.",
        "incl.",
        "no.",
        "nr.",
        "mr.",
        "mrs.",
        "ms.",
        "dr.",
        "st.",
        "inc.",
        "ltd.",
        "co.",
        "a.m.",
        "p.m.",
        "u.s.",
        "u.k.",
        "min.",
        "max.",
        "dept.",
        "tel.",
    ]
)
_ITEM = re.compile(r"^(?:[-*+]|\d+[.)])\s+")


@dataclass(frozen=True, slots=True)
class Unit:
    """One quotable piece of a passage.

    ``text`` is what an answer shows, verbatim but for a table row's rendering; ``lead`` the
    sentence that introduces a list item's list ("" otherwise), which an answer shows before
    the item and the embedding reads with it.
    """

    text: str
    kind: Kind = "sentence"
    lead: str = ""
    #: a list item's marker as the article writes it ("1." keeps a list of steps numbered)
    marker: str = ""


def split_sentences(paragraph: str) -> list[str]:
    """``paragraph`` cut at its sentence ends."""
    pieces: list[str] = []
    start = 0
    for match in _END.finditer(paragraph):
        end = match.start() + len(match.group(1))
        candidate = paragraph[start:end].strip()
        last = candidate.rsplit(None, 1)[-1].lower() if candidate else ""
        if last in _ABBREVIATIONS:
            continue
        pieces.append(candidate)
        start = match.end()
    rest = paragraph[start:].strip()
    if rest:
        pieces.append(rest)
    return [p for p in pieces if p]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _is_rule(line: str) -> bool:
    return bool(line) and set(line.replace("|", "").strip()) <= set(":- ")


def _table(lines: list[str]) -> list[Unit]:
    header = _cells(lines[0])
    rows = [_cells(line) for line in lines[1:] if not _is_rule(line)]
    found: list[Unit] = []
    for cells in rows:
        if not any(cells):
            continue
        first, *rest = cells
        parts = [
            f"{name}: {value}" if name else value
            for name, value in zip(header[1:], rest, strict=False)
            if value
        ]
        found.append(Unit(f"{first} — {'; '.join(parts)}" if parts else first, "row"))
    return found


def units(text: str) -> list[Unit]:
    """Every quotable piece of a passage's text (as :mod:`bot.knowledge.ingest` tidies it:
    paragraphs apart, each list item and table row on a line of its own)."""
    found: list[Unit] = []
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line.strip()]
        table: list[str] = []
        lead = ""
        for line in lines:
            if line.startswith("|"):
                table.append(line)
                continue
            if table:
                found.extend(_table(table))
                table = []
            item = _ITEM.match(line)
            if item:
                marker = item.group().strip()
                found.append(Unit(line[item.end() :].strip(), "item", lead, marker))
                continue
            sentences = split_sentences(line)
            found.extend(Unit(s) for s in sentences)
            # A line ending in a colon introduces the list that follows it.
            lead = sentences[-1] if sentences and sentences[-1].endswith(":") else ""
        if table:
            found.extend(_table(table))
    return found
