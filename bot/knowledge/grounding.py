"""Evidence at the level of sentences, and the answer composed of it.

Retrieval finds sections; a section holds several facts, and a small model given a whole
section (or four) picks the wrong one or makes one up. So the sentences of the retrieved
sections (list items and table rows count as sentences, :mod:`bot.knowledge.sentences`) are
scored against the question, each read with its document's title and section's heading: the
embedder's cosine similarity plus BM25 overlap among the candidates. A question of several parts
("how much is it and can I pause it?") gets the best sentence of each part.

:func:`compose` writes the chosen sentences as the answer, verbatim, in the article's reading
order: every specific in it is the knowledge base's own. A sentence that refers back ("It
costs…") brings the sentence before it; a list item brings the line that introduces its list
and, for steps, the whole list, numbered as in the article.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.knowledge.bm25 import Bm25Index
from bot.knowledge.index import Passage, Source
from bot.knowledge.sentences import Unit, units

__all__ = [
    "Extract",
    "Sentence",
    "SentenceScorer",
    "choose",
    "compose",
    "question_parts",
    "section_anchor",
]

#: How much BM25 overlap (scaled to 0..1 among the candidates) adds to the cosine similarity.
LEXICAL_WEIGHT = 0.1
#: How much the similarity of a sentence's whole section adds: a sentence is read in its
#: section, and the section ranking finds the right document more often than a lone sentence.
PASSAGE_WEIGHT = 2.5
#: Further sentences of the best document are quoted while they score about as well as the best.
MARGIN = 0.25
#: A list quoted whole (steps) is cut after this many items.
MAX_LIST_ITEMS = 10

_REFERS_BACK = re.compile(
    r"^(?:it|its|it's|this|that|these|those|they|their|there|then|he|she|such|both|either|"
    r"the same)\b",
    re.IGNORECASE,
)
_QUESTION_WORD = (
    r"(?:how|what|what's|whats|when|where|can|could|do|does|did|is|are|will|why|which|who|"
    r"should|would|may|i|im|i'm|my|also)\b"
)
_PARTS = re.compile(
    rf"\?+\s*(?=\S)|[.;!]\s+(?={_QUESTION_WORD})|,?\s+(?:and|also|plus)\s+(?={_QUESTION_WORD})",
    re.IGNORECASE,
)


def question_parts(question: str) -> list[str]:
    """The separate questions in ``question``: "how much is it and can I pause it?" is two."""
    parts = [p.strip(" ?.,;!") for p in _PARTS.split(question)]
    parts = [p for p in parts if len(p.split()) >= 2]
    return parts if len(parts) > 1 else [question.strip()]


@dataclass(frozen=True, slots=True)
class Sentence:
    """One quotable unit of a retrieved passage, scored against the question."""

    unit: Unit
    passage: Passage
    position: int  # the unit's place in its passage
    score: float

    @property
    def source(self) -> Source:
        return self.passage.source


@dataclass(frozen=True, slots=True)
class Extract:
    """The sentences an answer quotes, best first, and the passages' units for context."""

    sentences: tuple[Sentence, ...]
    context: dict[int, list[Unit]]  # passage id -> its units

    @property
    def sources(self) -> tuple[Source, ...]:
        return tuple(dict.fromkeys(s.source for s in self.sentences))

    @property
    def sections(self) -> tuple[tuple[Source, str], ...]:
        """(document, heading) of each section quoted, best first."""
        return tuple(dict.fromkeys((s.source, s.passage.heading) for s in self.sentences))


class SentenceScorer:
    """Cuts passages into units and embeds them once per passage (cached by passage id)."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray]) -> None:
        self._encode = encode
        self._units: dict[int, list[Unit]] = {}
        self._vectors: dict[int, np.ndarray] = {}

    def units(self, passage: Passage) -> list[Unit]:
        if passage.id not in self._units:
            self._units[passage.id] = units(passage.text)
        return self._units[passage.id]

    def _prepare(self, passages: Sequence[Passage]) -> None:
        missing = [p for p in passages if p.id not in self._vectors]
        texts = [_read_as(p, u) for p in missing for u in self.units(p)]
        vectors = self._encode(texts) if texts else np.zeros((0, 0), dtype=np.float32)
        start = 0
        for passage in missing:
            count = len(self.units(passage))
            self._vectors[passage.id] = vectors[start : start + count]
            start += count

    def score(
        self,
        passages: Sequence[Passage],
        parts: Sequence[str],
        part_vectors: np.ndarray,
        priors: Sequence[float] = (),
    ) -> list[list[Sentence]]:
        """For each question part, every unit of ``passages`` scored against it, best first;
        ``priors`` (one a passage) is added to each of its units' scores."""
        self._prepare(passages)
        pieces = [(p, n, u) for p in passages for n, u in enumerate(self.units(p))]
        if not pieces:
            return [[] for _ in parts]
        matrix = np.concatenate([self._vectors[p.id] for p in passages if self.units(p)])
        prior = np.array(
            [
                PASSAGE_WEIGHT * (priors[i] if i < len(priors) else 0.0)
                for i, p in enumerate(passages)
                for _ in self.units(p)
            ],
            dtype=np.float32,
        )
        keywords = Bm25Index([f"{p.heading} {u.lead} {u.text}" for p, _, u in pieces])
        ranked = []
        for part, vector in zip(parts, part_vectors, strict=True):
            cosine = matrix @ vector.astype(np.float32)
            lexical = keywords.scores(part)
            if lexical.max() > 0:
                lexical = lexical / lexical.max()
            total = cosine + LEXICAL_WEIGHT * lexical + prior
            order = np.argsort(-total, kind="stable")
            ranked.append(
                [Sentence(pieces[i][2], pieces[i][0], pieces[i][1], float(total[i])) for i in order]
            )
        return ranked

    def forget(self) -> None:
        self._units.clear()
        self._vectors.clear()


def _read_as(passage: Passage, unit: Unit) -> str:
    """What the embedder reads of a unit: with its title, heading and list lead-in."""
    head = " — ".join(part for part in (passage.source.title, passage.heading) if part)
    return f"{head}: {unit.lead} {unit.text}".replace(":  ", ": ")


def choose(
    ranked: Sequence[Sequence[Sentence]],
    max_sentences: int,
    units_of: Callable[[Passage], list[Unit]],
    second: Sentence | None = None,
) -> Extract:
    """The sentences to quote. ``ranked[0]`` scores them against the whole question: its best
    document's best ``max_sentences`` (those about as good as its best) are quoted, and the
    ``second`` document's best sentence, if given. Further rankings are the question's parts:
    each adds its best sentence instead (the whole question's choice mixes the parts)."""
    if not ranked or not ranked[0] or max_sentences <= 0:
        return Extract((), {})
    chosen: list[Sentence] = []
    if len(ranked) == 1:
        best = ranked[0][0]
        near = [s for s in ranked[0] if s.source == best.source and s.score >= best.score - MARGIN]
        chosen = near[:max_sentences]
        if second is not None and second.source not in {s.source for s in chosen}:
            chosen.append(second)
    for part in ranked[1:]:
        if part and part[0] not in chosen:
            chosen.append(part[0])
    context = {s.passage.id: units_of(s.passage) for s in chosen}
    return Extract(tuple(chosen), context)


def _list_around(units: list[Unit], position: int) -> range:
    """The positions of the whole list the item (or list lead-in) at ``position`` belongs to."""
    lead = units[position].lead if units[position].kind == "item" else units[position].text
    members = [n for n, u in enumerate(units) if u.kind == "item" and u.lead == lead]
    if not members:
        return range(position, position + 1)
    start = members[0] - 1 if members[0] > 0 and units[members[0] - 1].text == lead else members[0]
    return range(start, min(members[-1], members[0] + MAX_LIST_ITEMS - 1) + 1)


def compose(found: Extract) -> str:
    """The answer's text: per section, the chosen units with the context they need, in
    reading order; sections in the order of their best sentence."""
    shown: dict[int, set[int]] = {}
    for sentence in found.sentences:
        units = found.context[sentence.passage.id]
        taken = shown.setdefault(sentence.passage.id, set())
        n = sentence.position
        unit = units[n]
        steps = unit.kind == "item" or (unit.text.endswith(":") and n + 1 < len(units))
        if steps:
            taken.update(_list_around(units, n))
        else:
            taken.add(n)
            if n > 0 and _REFERS_BACK.match(unit.text) and units[n - 1].kind == "sentence":
                taken.add(n - 1)
    blocks = []
    for passage_id, taken in shown.items():
        units = found.context[passage_id]
        lines: list[tuple[str, str]] = []  # (kind, text)
        for n in sorted(taken):
            unit = units[n]
            if unit.kind == "item":
                marker = unit.marker if unit.marker[:1].isdigit() else "-"
                lines.append(("item", f"{marker} {unit.text}"))
            elif unit.kind == "row":
                lines.append(("row", f"- {unit.text}"))
            elif lines and lines[-1][0] == "sentence" and not lines[-1][1].endswith(":"):
                lines[-1] = ("sentence", f"{lines[-1][1]} {unit.text}")
            else:
                lines.append(("sentence", unit.text))
        blocks.append("\n".join(text for _, text in lines))
    return "\n\n".join(block for block in blocks if block)


def section_anchor(heading: str) -> str:
    """The fragment a help centre gives a heading, GitHub's way: "Getting a reset link" is
    ``getting-a-reset-link``."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return re.sub(r"\s", "-", slug)
