"""What staff taught: approved snippets from resolved conversations, as documents of the
``learned`` collection, and the check a reviewer sees first: does an article say otherwise?

A snippet is a document whose title is the customer's question and whose one section is the
staff answer (so an answer quotes the staff's words, never the question back); it cites the
conversation it came from. Its key, ``learned:<id>``, keeps it apart from files and pages: a
refresh of the configured folders never drops it, a sync with the approved set does.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.knowledge.claims import Evidence, Specific, specifics
from bot.knowledge.ingest import Document, Section
from bot.knowledge.sentences import split_sentences

__all__ = ["LEARNED", "PREFIX", "Learned", "contradiction", "document", "key"]

#: The collection snippets go in (``policy.knowledge`` can leave it out of a channel).
LEARNED = "learned"
PREFIX = "learned:"
#: The kinds of specific two texts can disagree on about the same thing.
_COMPARABLE = ("amount", "percentage", "quantity")
_UNIT = re.compile(r"[$€£%]|[a-z.]+$", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+")
#: Words that say nothing of what a figure is about.
_FILLERS = frozenset(
    [
        "about",
        "after",
        "also",
        "before",
        "each",
        "from",
        "have",
        "into",
        "least",
        "more",
        "most",
        "only",
        "over",
        "per",
        "than",
        "that",
        "then",
        "they",
        "this",
        "those",
        "time",
        "under",
        "week",
        "with",
        "within",
        "year",
        "your",
        "hour",
        "minute",
        "day",
        "month",
        "second",
    ]
)


@dataclass(frozen=True, slots=True)
class Learned:
    id: str
    question: str
    answer: str
    link: str = ""


def key(snippet_id: str) -> str:
    return f"{PREFIX}{snippet_id}"


def document(item: Learned) -> Document:
    digest = hashlib.sha256(f"{item.question}\n{item.answer}\n{item.link}".encode()).hexdigest()
    return Document(key(item.id), item.question, item.link, digest, (Section("", item.answer),))


def _measure(specific: Specific) -> tuple[str, str]:
    """What a specific measures: its kind and its unit or currency ("quantity", "days")."""
    found = _UNIT.findall(specific.text.lower())
    unit = found[-1].rstrip("s.") if found else ""
    return specific.kind, unit


def _words(sentence: str) -> set[str]:
    """The words a sentence is about: long enough, not a unit, not a filler."""
    words = {w.lower() for w in _WORD.findall(sentence)}
    return {w.rstrip("s") for w in words if len(w) >= 4} - _FILLERS


def contradiction(answer: str, articles: Sequence[tuple[str, str]]) -> str:
    """One line for the reviewer when an article's sentence (title, sentence) gives another
    figure than ``answer`` for the same measure (an amount, a percentage, a quantity of the
    same unit) about the same thing (the two sentences share a word that matters); ''."""
    for sentence in split_sentences(" ".join(answer.split())):
        stated = [s for s in specifics(sentence) if s.kind in _COMPARABLE]
        if not stated:
            continue
        about = _words(sentence)
        for title, text in articles:
            if not about & _words(text):
                continue
            evidence = Evidence([text])
            theirs = {_measure(s): s.text for s in specifics(text) if s.kind in _COMPARABLE}
            for specific in stated:
                other = theirs.get(_measure(specific))
                if other is not None and not evidence.supports(specific):
                    return (
                        f'The article "{title}" says {other} where this answer says'
                        f" {specific.text}."
                    )
    return ""
