"""Whether the knowledge base answers a question at all, or the bot should say it doesn't know.

One cosine threshold does not hold on a new knowledge base: a question about the company that
no article answers ("who is your CEO?") shares its words with the articles and lands as close to
them as many a real one. So a second signal weighs the question against *off-topic examples*:
the kinds of question a support bot is asked and a help centre never answers (the weather, a
poem, some code, jobs, the CEO, competitors, directions, advice), written once here and extended
per company with ``knowledge.off_topic``. A question closer to one of them than to the articles,
by more than ``knowledge.min_margin``, gets the don't-know; one the company's articles do answer
("are you hiring?" with a careers page) is closer to those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["OFF_TOPIC", "Judgement", "Scope", "off_topic_examples"]

OFF_TOPIC = (
    "what's the weather like tomorrow",
    "will it rain this weekend",
    "write me a poem",
    "write a song or a story for me",
    "tell me a joke",
    "write me a python script",
    "write some code that does this for me",
    "help me with my homework",
    "who is the CEO of your company",
    "who founded the company and who owns it",
    "are you hiring, do you have job openings",
    "how do I apply for a job with you",
    "can I open a franchise or become a reseller",
    "I want to partner with your company",
    "is your competitor cheaper or better than you",
    "what's your stock price, can I buy shares",
    "how do I get to your office, give me directions",
    "where is the nearest train station",
    "give me a recipe",
    "what is the capital of France",
    "who won the game last night",
    "what's in the news today",
    "recommend a good movie or restaurant",
    "translate this sentence into Spanish",
    "what medicine should I take for my symptoms",
    "can I sue someone, I need legal advice",
    "what is the meaning of life",
    "how old are you, are you a robot",
)
#: The same kinds of question with the company's name: a name every article repeats pulls such
#: a question towards the articles.
COMPANY_OFF_TOPIC = (
    "who is the CEO of {company}",
    "who runs {company}",
    "is {company} hiring",
    "what is {company}'s stock price",
    "can I open a {company} franchise",
    "is another company cheaper than {company}",
)


def off_topic_examples(company: str, extra: Sequence[str] = ()) -> list[str]:
    """The built-in examples, those naming ``company`` (when known), and ``extra``."""
    named = [t.format(company=company) for t in COMPANY_OFF_TOPIC] if company.strip() else []
    return [*OFF_TOPIC, *named, *extra]


@dataclass(frozen=True, slots=True)
class Judgement:
    answerable: bool
    similarity: float  # of the closest passage
    off_topic: float  # of the closest off-topic example
    example: str  # that example
    min_score: float
    min_margin: float

    @property
    def margin(self) -> float:
        return self.similarity - self.off_topic

    @property
    def why(self) -> str:
        if self.similarity < self.min_score:
            return f"closest passage {self.similarity:.2f} < min_score {self.min_score:.2f}"
        if self.margin < self.min_margin:
            return (
                f"closer to the off-topic example {self.example!r} ({self.off_topic:.2f}) than"
                f" to the articles ({self.similarity:.2f}): margin {self.margin:.2f} <"
                f" min_margin {self.min_margin:.2f}"
            )
        return (
            f"closest passage {self.similarity:.2f} >= min_score {self.min_score:.2f}; margin"
            f" over the off-topic examples {self.margin:.2f} >= min_margin {self.min_margin:.2f}"
        )


class Scope:
    """The off-topic examples' vectors, and the rule that weighs a question against them."""

    def __init__(self, examples: Sequence[str], vectors: np.ndarray) -> None:
        self.examples = list(examples)
        self.vectors = vectors

    def judge(
        self, query_vector: np.ndarray, similarity: float, min_score: float, min_margin: float
    ) -> Judgement:
        """``similarity``: the question's to the closest passage of the knowledge base."""
        off_topic, example = -1.0, ""
        if self.examples:
            scores = self.vectors @ query_vector.astype(np.float32)
            best = int(np.argmax(scores))
            off_topic, example = float(scores[best]), self.examples[best]
        answerable = similarity >= min_score and similarity - off_topic >= min_margin
        return Judgement(answerable, similarity, off_topic, example, min_score, min_margin)
