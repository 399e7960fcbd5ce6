"""``parley eval --tune``: the don't-know decision that suits a knowledge base.

The decision (:mod:`bot.knowledge.scope`) is a logistic regression over three signals. From each
golden question's signals and whether it is answerable, scikit-learn fits the weights and the
bias, the two kinds of question weighted equally however many of each the set has: the boundary
is where a question is as likely answerable as not. When that refuses more than ``max_refused``
of the answerable questions, the bias is raised until it does not.

Figures on the questions the decision was fitted on flatter it, so the set is also cut in two
(alternate questions): a decision fitted on each half is measured on the other
(:func:`cross_validate`), which is what a team can expect on questions it did not tune on.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.config import DecisionConfig
from bot.evaluation.run import Result
from bot.knowledge.scope import REFERENCE, SIGNALS, Judgement

__all__ = ["Tuning", "cross_validate", "refusals", "tune"]

#: How much the weights are held back (scikit-learn's C: larger fits the set more closely).
#: Chosen on the sample's golden set; a golden set of a hundred questions needs the restraint.
REGULARISATION = 10.0
#: A bias beyond which every question is answered: no decision meets ``max_refused``.
MAX_BIAS = 10.0


@dataclass(frozen=True, slots=True)
class Tuning:
    decision: DecisionConfig
    dont_know_recall: float  # on the golden set, with this decision
    refused: float

    def config_lines(self) -> str:
        values = [f"{name} = {getattr(self.decision, name):.2f}" for name in (*SIGNALS, "bias")]
        return "\n".join(["[knowledge.decision]", *values])


def _refuses(result: Result, decision: DecisionConfig, min_score: float) -> bool:
    if result.signals is None:  # nothing retrieved at all
        return True
    return not Judgement(result.signals, decision, min_score).answerable


def refusals(
    results: Sequence[Result], decision: DecisionConfig, min_score: float
) -> tuple[float, float]:
    """(out-of-scope questions caught, answerable ones refused) under this decision."""
    inside = [_refuses(r, decision, min_score) for r in results if not r.item.out_of_scope]
    outside = [_refuses(r, decision, min_score) for r in results if r.item.out_of_scope]
    return (
        float(np.mean(outside)) if outside else 0.0,
        float(np.mean(inside)) if inside else 0.0,
    )


def tune(results: Sequence[Result], min_score: float, max_refused: float = 0.10) -> Tuning | None:
    """The decision for these results; None without both kinds of question, or when no bias
    refuses at most ``max_refused`` of the answerable ones."""
    from sklearn.linear_model import LogisticRegression  # only --tune needs it

    found = [(r.item.out_of_scope, r.signals) for r in results if r.signals is not None]
    answerable = np.array([not out_of_scope for out_of_scope, _ in found])
    if answerable.all() or not answerable.any():
        return None
    centred = np.array([[s.values()[name] - REFERENCE[name] for name in SIGNALS] for _, s in found])
    model = LogisticRegression(C=REGULARISATION, class_weight="balanced", max_iter=1000)
    model.fit(centred, answerable)
    # Rounded as printed, so that the lines pasted decide exactly as measured here.
    weights = np.round(model.coef_[0], 2)
    floor = np.array([s.similarity >= min_score for _, s in found])
    terms = centred @ weights

    def refused_at(bias: float) -> float:
        return float(np.mean(~(floor & (terms + bias >= 0))[answerable]))

    # The regression's own boundary (a question as likely answerable as not, the two kinds
    # weighted equally), raised until it refuses at most max_refused of the answerable ones.
    bias = round(float(model.intercept_[0]), 2)
    while refused_at(bias) > max_refused + 1e-9:
        if bias >= MAX_BIAS:
            return None
        bias = round(bias + 0.01, 2)
    decision = DecisionConfig(**dict(zip(SIGNALS, map(float, weights), strict=True)), bias=bias)
    # Measured on every result (those with nothing retrieved are refused either way).
    caught, refused = refusals(results, decision, min_score)
    return Tuning(decision, caught, refused)


def cross_validate(
    results: Sequence[Result], min_score: float, max_refused: float = 0.10
) -> tuple[float, float] | None:
    """(don't-know recall, answerable refused) with a decision fitted on one half of the set
    and measured on the other, averaged over both ways round; None when a half cannot be
    tuned."""
    halves = (list(results[0::2]), list(results[1::2]))
    measured = []
    for tuned_on, measured_on in (halves, halves[::-1]):
        tuning = tune(tuned_on, min_score, max_refused)
        if tuning is None:
            return None
        measured.append(refusals(measured_on, tuning.decision, min_score))
    return statistics.fmean(m[0] for m in measured), statistics.fmean(m[1] for m in measured)
