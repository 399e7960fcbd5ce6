"""The claim check, and the sentences answers are made of: what a customer reads must be in
the sources. Pure text, no model: each case is a sentence a small model wrote (or could)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.knowledge.claims import Evidence, StreamCheck, check
from bot.knowledge.sentences import Unit, split_sentences, units

SAMPLE = Path(__file__).resolve().parent.parent / "config" / "knowledge"


@pytest.fixture(scope="module")
def evidence() -> Evidence:
    articles = ["resetting-your-password.md", "contacting-support.md", "shipping.md"]
    texts = [(SAMPLE / name).read_text(encoding="utf-8") for name in articles]
    return Evidence([*texts, "How do I reset my password?", "Parley", "Acme Cloud"])


@pytest.mark.parametrize(
    ("sentence", "invented"),
    [
        # The sample's own example: a menu path the article never gives.
        ("To reset it, click on Settings, then Security, then Reset Password.", "Reset Password"),
        ("The reset link works for 60 days.", "60 days"),  # the article: 60 minutes
        ("Call us on +1 800 555 0199 at any time.", "+1 800 555 0199"),
        ("Write to help@acme.example for a new link.", "help@acme.example"),
        ("Visit www.acmecloud.com/reset to start.", "www.acmecloud.com/reset"),
        ("Express delivery to Canada costs $35.", "$35"),
        ('Choose "Recover my account" on the sign-in page.', "Recover my account"),
        ("The weight limit for a cargo bike is 10,256 kilograms.", "10,256 kilograms"),
        ("Our Premium plan includes priority support.", "Premium"),
        ("Save 35% on express delivery.", "35%"),
    ],
)
def test_a_sentence_with_an_invented_specific_is_dropped(
    evidence: Evidence, sentence: str, invented: str
) -> None:
    checked = check(f"Happy to help. {sentence}", evidence)
    assert checked.text == "Happy to help."
    [(dropped, missing)] = checked.dropped
    assert dropped == sentence
    assert invented in [s.text for s in missing]


@pytest.mark.parametrize(
    "sentence",
    [
        'On the sign-in page choose "Forgot password?" and enter your email address.',
        "The link works for 60 minutes and only once.",
        "Reset emails usually arrive within 5 minutes.",  # "five minutes" in the article
        "Reset emails come from no-reply@acmecloud.example.",
        "A new password needs at least 12 characters.",
        "I'm Parley from Acme Cloud, and I can help with that.",
    ],
)
def test_a_sentence_whose_specifics_are_in_the_sources_is_kept(
    evidence: Evidence, sentence: str
) -> None:
    checked = check(sentence, evidence)
    assert (checked.text, checked.dropped) == (sentence, ())


def test_lists_keep_their_shape_and_their_checked_items(evidence: Evidence) -> None:
    answer = (
        "To reset it:\n1. Open the sign-in page.\n2. Call +1 800 555 0199.\n"
        '3. Choose "Forgot password?".\n\nThe link works for 60 minutes.'
    )
    checked = check(answer, evidence)
    assert checked.text == (
        'To reset it:\n1. Open the sign-in page.\n3. Choose "Forgot password?".\n\n'
        "The link works for 60 minutes."
    )


def test_a_streamed_reply_shows_only_finished_checked_sentences(evidence: Evidence) -> None:
    stream = StreamCheck(evidence)
    assert stream.update("Reset emails arrive within five") == ""
    assert stream.update("Reset emails arrive within five minutes. Call +1 800 5") == (
        "Reset emails arrive within five minutes."
    )
    # The invented number is never shown, not even for a moment.
    text = "Reset emails arrive within five minutes. Call +1 800 555 0199. Check your spam"
    assert stream.update(text) == "Reset emails arrive within five minutes."
    final = stream.final(text + " folder.")
    assert final.text == "Reset emails arrive within five minutes. Check your spam folder."
    assert [s for s, _ in final.dropped] == ["Call +1 800 555 0199."]


def test_sentences_end_at_their_stops_but_not_at_abbreviations() -> None:
    text = (
        'Choose "Forgot password?" and enter your email. Files, e.g. photos, sync at once.'
        " It costs $4.50 a month! Really? Yes."
    )
    assert split_sentences(text) == [
        'Choose "Forgot password?" and enter your email.',
        "Files, e.g. photos, sync at once.",
        "It costs $4.50 a month!",
        "Really?",
        "Yes.",
    ]


def test_passages_become_units_that_read_on_their_own() -> None:
    text = (
        "| plan | storage | price |\n|---|---|---|\n| Free | 5 GB | free |\n"
        "| Personal | 200 GB | $4 a month |\n\n"
        "To cancel:\n1. open Settings\n2. choose Plan\n\nThat is all. Done."
    )
    assert units(text) == [
        Unit("Free — storage: 5 GB; price: free", "row"),
        Unit("Personal — storage: 200 GB; price: $4 a month", "row"),
        Unit("To cancel:"),
        Unit("open Settings", "item", "To cancel:", "1."),
        Unit("choose Plan", "item", "To cancel:", "2."),
        Unit("That is all."),
        Unit("Done."),
    ]


def test_a_section_without_sentence_ends_or_of_50_kb_is_cut_without_trouble() -> None:
    assert units("no stop at all just words") == [Unit("no stop at all just words")]
    assert units("") == []
    big = "The link works for 60 minutes. " * 1700
    assert len(units(big)) == 1700
