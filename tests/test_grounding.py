"""Answers composed of the knowledge base's own sentences: which sentences, and how they read.
Pure text: the sentences are scored by hand here (the embedder's scoring is exercised through
the service in test_knowledge.py and by the golden sets in test_eval.py)."""

from __future__ import annotations

import pytest

from bot.knowledge.grounding import Sentence, choose, compose, question_parts, section_anchor
from bot.knowledge.index import Passage, Source
from bot.knowledge.sentences import units

RESET = Passage(
    1,
    Source("Resetting a forgotten password", "reset.md"),
    "Getting a reset link",
    'On the sign-in page choose "Forgot password?". It sends a link that works for 60 minutes.'
    " Each new request cancels the earlier links.\n\n"
    "To set a new one:\n1. Open the link.\n2. Type the new password twice.\n3. Choose Save.",
)
PLANS = Passage(
    2,
    Source("Plans and prices", "plans.md"),
    "The plans",
    "| plan | price |\n|---|---|\n| Free | free |\n| Personal | $4 a month |",
)


def _scored(passage: Passage, scores: list[float]) -> list[Sentence]:
    found = [
        Sentence(unit, passage, n, score)
        for n, (unit, score) in enumerate(zip(units(passage.text), scores, strict=True))
    ]
    return sorted(found, key=lambda s: -s.score)


def _units_of(passage: Passage) -> list:  # type: ignore[type-arg]
    return units(passage.text)


@pytest.mark.parametrize(
    ("question", "parts"),
    [
        ("how much is it and can i pause it?", ["how much is it", "can i pause it"]),
        ("How much is Plus? Can I pay by PayPal?", ["How much is Plus", "Can I pay by PayPal"]),
        ("how do i reset my password", ["how do i reset my password"]),
        ("salt and pepper crisps", ["salt and pepper crisps"]),  # "and" between nouns
        ("is there a student discount? thx", ["is there a student discount? thx"]),
    ],
)
def test_a_question_is_cut_into_the_questions_it_asks(question: str, parts: list[str]) -> None:
    assert question_parts(question) == parts


def test_a_sentence_that_refers_back_brings_the_one_before_it() -> None:
    ranked = _scored(RESET, [0.2, 0.9, 0.1, 0.0, 0.0, 0.0, 0.0])
    found = choose([ranked], 1, _units_of)
    assert compose(found) == (
        'On the sign-in page choose "Forgot password?". It sends a link that works for 60 minutes.'
    )
    assert found.sources == (RESET.source,)
    assert found.sections == ((RESET.source, "Getting a reset link"),)


def test_steps_are_quoted_whole_and_numbered_as_in_the_article() -> None:
    ranked = _scored(RESET, [0.1, 0.1, 0.1, 0.5, 0.9, 0.4, 0.3])
    assert compose(choose([ranked], 1, _units_of)) == (
        "To set a new one:\n1. Open the link.\n2. Type the new password twice.\n3. Choose Save."
    )


def test_sentences_far_below_the_best_or_past_the_limit_are_left_out() -> None:
    ranked = _scored(RESET, [0.9, 0.8, 0.1, 0.0, 0.0, 0.0, 0.0])
    text = compose(choose([ranked], 3, _units_of))
    assert "60 minutes" in text and "cancels" not in text
    one = compose(choose([ranked], 1, _units_of))
    assert one == 'On the sign-in page choose "Forgot password?".'


def test_each_part_of_a_question_brings_its_best_sentence_from_its_own_article() -> None:
    whole = sorted(_scored(RESET, [0.5] * 7) + _scored(PLANS, [0.6, 0.6]), key=lambda s: -s.score)
    price = _scored(PLANS, [0.2, 0.9])
    reset = _scored(RESET, [0.9, 0.1, 0.1, 0.0, 0.0, 0.0, 0.0])
    found = choose([whole, price, reset], 3, _units_of)
    assert compose(found) == (
        '- Personal — price: $4 a month\n\nOn the sign-in page choose "Forgot password?".'
    )
    assert found.sources == (PLANS.source, RESET.source)


def test_nothing_to_quote_gives_an_empty_extract() -> None:
    assert choose([[]], 3, _units_of).sentences == ()
    assert compose(choose([], 3, _units_of)) == ""


def test_headings_become_the_anchors_help_centres_give_them() -> None:
    assert section_anchor("Getting a reset link") == "getting-a-reset-link"
    assert section_anchor("Refunds: what & when?") == "refunds-what--when"
