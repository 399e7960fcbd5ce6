"""Whether the knowledge base answers a question at all, or the bot should say it doesn't know.

One cosine threshold does not hold on a new knowledge base: a question about the company that
no article answers ("who is your CEO?", "is there wifi on board?") shares its words with the
articles and lands as close to them as many a real one. So the decision weighs three signals:

- **similarity**: the question's cosine similarity to the closest passage;
- **margin**: that less its similarity to the closest *off-topic example*, the kinds of request
  a support bot gets and a help centre never answers (a task such as a poem or a script,
  general knowledge, the company itself, another company, directions, advice), written once
  here and extended per company with ``knowledge.off_topic``; the closest one names the kind;
- **coverage**: the share of the question's words (stemmed, typos corrected, stop words left
  out) that the sentences the answer would quote contain.

A logistic regression over them (``knowledge.decision``: a weight each and a bias, fitted on
the sample's golden set by ``parley eval --tune``, which fits a team's own the same way) gives
the log-odds that the articles answer the question; below 0, or below ``knowledge.min_score``
similarity, the bot says it doesn't know. Each signal is measured from a reference point, so
the sign of its term says which way it voted.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from bot.config import DecisionConfig

__all__ = [
    "OFF_TOPIC",
    "REFERENCE",
    "SIGNALS",
    "Judgement",
    "Scope",
    "Signals",
    "coverage",
    "off_topic_examples",
]

#: The off-topic examples by the kind of request they stand for.
OFF_TOPIC: dict[str, tuple[str, ...]] = {
    "a task": (
        "write me a poem",
        "write a song or a story for me",
        "tell me a joke",
        "write me a python script",
        "write some code that does this for me",
        "help me with my homework",
        "give me a recipe",
        "translate this sentence into Spanish",
    ),
    "general knowledge": (
        "what's the weather like tomorrow",
        "will it rain this weekend",
        "what is the capital of France",
        "who won the game last night",
        "what's in the news today",
        "recommend a good movie or restaurant",
        "what is the meaning of life",
    ),
    "the company itself": (
        "who is the CEO of your company",
        "who founded the company and who owns it",
        "are you hiring, do you have job openings",
        "how do I apply for a job with you",
        "can I open a franchise or become a reseller",
        "I want to partner with your company",
        "what's your stock price, can I buy shares",
    ),
    "another company": ("is your competitor cheaper or better than you",),
    "directions": (
        "how do I get to your office, give me directions",
        "where is the nearest train station",
    ),
    "advice": (
        "what medicine should I take for my symptoms",
        "can I sue someone, I need legal advice",
    ),
    "small talk": ("how old are you, are you a robot",),
}
#: The same kinds of question with the company's name: a name every article repeats pulls such
#: a question towards the articles.
COMPANY_OFF_TOPIC: dict[str, tuple[str, ...]] = {
    "the company itself": (
        "who is the CEO of {company}",
        "who runs {company}",
        "is {company} hiring",
        "what is {company}'s stock price",
        "can I open a {company} franchise",
    ),
    "another company": ("is another company cheaper than {company}",),
}
EXTRA_KIND = "configured off-topic"

SIGNALS = ("similarity", "margin", "coverage")
#: Where each signal is neutral: its term in the log-odds is its weight times its distance from
#: here, so the term's sign is the signal's vote. (About the middle of each signal's range on
#: the golden sets; the bias absorbs the rest.)
REFERENCE = {"similarity": 0.40, "margin": 0.10, "coverage": 0.50}


def off_topic_examples(company: str, extra: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(kind, example): the built-in examples, those naming ``company`` (when known), and
    ``extra``."""
    found = [(kind, text) for kind, texts in OFF_TOPIC.items() for text in texts]
    if company.strip():
        found += [
            (kind, text.format(company=company))
            for kind, texts in COMPANY_OFF_TOPIC.items()
            for text in texts
        ]
    return [*found, *((EXTRA_KIND, text) for text in extra)]


def coverage(question: Collection[str], evidence: Collection[str]) -> float:
    """The share of the question's terms the evidence contains; neutral for a question with
    no term of its own ("how do I do that?")."""
    if not question:
        return REFERENCE["coverage"]
    return sum(term in evidence for term in question) / len(question)


@dataclass(frozen=True, slots=True)
class Signals:
    similarity: float  # of the closest passage
    off_topic: float  # of the closest off-topic example
    example: str  # that example
    kind: str  # its kind of request
    coverage: float

    @property
    def margin(self) -> float:
        return self.similarity - self.off_topic

    def values(self) -> dict[str, float]:
        return {"similarity": self.similarity, "margin": self.margin, "coverage": self.coverage}


@dataclass(frozen=True, slots=True)
class Judgement:
    signals: Signals
    decision: DecisionConfig
    min_score: float

    def terms(self) -> dict[str, float]:
        """Each signal's term in the log-odds: positive votes for answering."""
        values = self.signals.values()
        return {
            name: getattr(self.decision, name) * (values[name] - REFERENCE[name])
            for name in SIGNALS
        }

    @property
    def log_odds(self) -> float:
        return self.decision.bias + sum(self.terms().values())

    @property
    def answerable(self) -> bool:
        return self.signals.similarity >= self.min_score and self.log_odds >= 0

    def votes(self) -> list[str]:
        """One line per signal: its value, its term, and which way it voted."""
        values = self.signals.values()
        lines = []
        for name, term in self.terms().items():
            way = "answer" if term >= 0 else "don't know"
            lines.append(f"{name:<10} {values[name]:>5.2f}  {term:>+6.2f}  {way}")
        return lines

    @property
    def why(self) -> str:
        signals = self.signals
        if signals.similarity < self.min_score:
            return f"closest passage {signals.similarity:.2f} < min_score {self.min_score:.2f}"
        closest = (
            f"; closest off-topic request: {signals.kind}, {signals.example!r}"
            if signals.example
            else ""
        )
        return (
            f"log-odds {self.log_odds:+.2f} (similarity {signals.similarity:.2f}, margin"
            f" {signals.margin:+.2f}, coverage {signals.coverage:.2f}){closest}"
        )


class Scope:
    """The off-topic examples' vectors, and the decision that weighs a question against them."""

    def __init__(self, examples: Sequence[tuple[str, str]], vectors: np.ndarray) -> None:
        self.examples = list(examples)
        self.vectors = vectors

    def signals(self, query_vector: np.ndarray, similarity: float, covered: float) -> Signals:
        """``similarity``: the question's to the closest passage; ``covered``: the share of
        its terms the evidence contains."""
        off_topic, kind, example = -1.0, "", ""
        if self.examples:
            scores = self.vectors @ query_vector.astype(np.float32)
            best = int(np.argmax(scores))
            off_topic = float(scores[best])
            kind, example = self.examples[best]
        return Signals(similarity, off_topic, example, kind, covered)
