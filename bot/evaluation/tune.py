"""``parley eval --tune``: the don't-know thresholds that suit a knowledge base.

From each golden question's two signals (the closest passage's similarity, and that less the
closest off-topic example's: :mod:`bot.knowledge.scope`), every pair of thresholds on a grid is
tried. The pair chosen catches the largest share of out-of-scope questions less the share of
answerable ones refused, refusing at most ``max_refused`` of those; among pairs that do equally
well, the one in the middle of them, so that a question a little off either threshold is judged
the same.

Figures on the questions the thresholds were chosen on flatter them, so the set is also cut in
two (alternate questions): thresholds chosen on each half are measured on the other
(:func:`cross_validate`), which is what a team can expect on questions it did not tune on.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.evaluation.run import Result

__all__ = ["Tuning", "cross_validate", "refusals", "tune"]

SCORES = np.round(np.arange(0.10, 0.701, 0.01), 2)
MARGINS = np.round(np.arange(-0.30, 0.301, 0.01), 2)


@dataclass(frozen=True, slots=True)
class Tuning:
    min_score: float
    min_margin: float
    dont_know_recall: float  # on the golden set, with these thresholds
    refused: float

    def config_lines(self) -> str:
        return f"[knowledge]\nmin_score = {self.min_score:.2f}\nmin_margin = {self.min_margin:.2f}"


def refusals(results: Sequence[Result], min_score: float, min_margin: float) -> tuple[float, float]:
    """(out-of-scope questions caught, answerable ones refused) under these thresholds."""

    def refuses(r: Result) -> bool:
        return r.similarity < min_score or r.similarity - r.off_topic < min_margin

    inside = [refuses(r) for r in results if not r.item.out_of_scope]
    outside = [refuses(r) for r in results if r.item.out_of_scope]
    return (
        float(np.mean(outside)) if outside else 0.0,
        float(np.mean(inside)) if inside else 0.0,
    )


def tune(results: Sequence[Result], max_refused: float = 0.05) -> Tuning | None:
    """The thresholds for these results; None without both kinds of question."""
    inside = [r for r in results if not r.item.out_of_scope]
    outside = [r for r in results if r.item.out_of_scope]
    if not inside or not outside:
        return None
    similarity_in = np.array([r.similarity for r in inside])
    margin_in = similarity_in - np.array([r.off_topic for r in inside])
    similarity_out = np.array([r.similarity for r in outside])
    margin_out = similarity_out - np.array([r.off_topic for r in outside])
    best: tuple[float, float] | None = None
    ties: list[tuple[float, float, float, float]] = []
    for score in SCORES:
        for margin in MARGINS:
            refused = float(np.mean((similarity_in < score) | (margin_in < margin)))
            if refused > max_refused + 1e-9:
                continue
            caught = float(np.mean((similarity_out < score) | (margin_out < margin)))
            key = (caught - refused, -refused)
            if best is None or key > best:
                best, ties = key, []
            if key == best:
                ties.append((float(score), float(margin), caught, refused))
    if not ties:
        return None
    middle = (statistics.median(t[0] for t in ties), statistics.median(t[1] for t in ties))
    chosen = min(ties, key=lambda t: (t[0] - middle[0]) ** 2 + (t[1] - middle[1]) ** 2)
    return Tuning(*chosen)


def cross_validate(
    results: Sequence[Result], max_refused: float = 0.05
) -> tuple[float, float] | None:
    """(don't-know recall, answerable refused) with thresholds tuned on one half of the set
    and measured on the other, averaged over both ways round; None when a half cannot be
    tuned."""
    halves = (list(results[0::2]), list(results[1::2]))
    measured = []
    for tuned_on, measured_on in (halves, halves[::-1]):
        tuning = tune(tuned_on, max_refused)
        if tuning is None:
            return None
        measured.append(refusals(measured_on, tuning.min_score, tuning.min_margin))
    return statistics.fmean(m[0] for m in measured), statistics.fmean(m[1] for m in measured)
