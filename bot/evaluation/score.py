"""The figures of an evaluation run, one question's verdict, and the floors a team gates on."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from bot.errors import ConfigError
from bot.evaluation.run import Result

__all__ = ["LABELS", "LOWER_IS_BETTER", "Figures", "figures", "parse_floors", "short_of", "verdict"]

#: Every figure, in the order the table shows them.
LABELS = {
    "hit_at_1": "retrieval: right document in the top section (hit@1)",
    "hit_at_3": "retrieval: right document in the top 3 sections (hit@3)",
    "cited": "cited right: right document among the answer's sources",
    "fact": "fact in answer: every expected fact in the answer",
    "unsupported": "unsupported specifics: answers with one",
    "dont_know_recall": "out of scope -> don't-know or handoff (recall)",
    "refused": "answerable questions refused",
    "dont_know_precision": "don't-knows that were out of scope (precision)",
    "first_text_p50": "time to first text p50 (s)",
    "first_text_p95": "time to first text p95 (s)",
    "answer_p50": "time to whole answer p50 (s)",
    "answer_p95": "time to whole answer p95 (s)",
}
LOWER_IS_BETTER = frozenset(
    {"unsupported", "refused", "first_text_p50", "first_text_p95", "answer_p50", "answer_p95"}
)


@dataclass(frozen=True, slots=True)
class Figures:
    answerable: int
    out_of_scope: int
    hit_at_1: float
    hit_at_3: float
    cited: float
    fact: float  # over the answerable questions that list facts
    unsupported: float  # over every answer
    dont_know_recall: float
    refused: float
    dont_know_precision: float
    first_text_p50: float
    first_text_p95: float
    answer_p50: float
    answer_p95: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def _share(flags: Sequence[bool]) -> float:
    return statistics.fmean(flags) if flags else 0.0


def _percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))]


def figures(results: Sequence[Result]) -> Figures:
    inside = [r for r in results if not r.item.out_of_scope]
    outside = [r for r in results if r.item.out_of_scope]
    refusals = [r for r in results if r.refused]
    first = [r.first_text for r in results]
    whole = [r.seconds for r in results]
    return Figures(
        answerable=len(inside),
        out_of_scope=len(outside),
        hit_at_1=_share([r.retrieved_within(1) for r in inside]),
        hit_at_3=_share([r.retrieved_within(3) for r in inside]),
        cited=_share([r.cited for r in inside]),
        fact=_share([not r.refused and not r.missing for r in inside if r.item.facts]),
        unsupported=_share([bool(r.unsupported) for r in results]),
        dont_know_recall=_share([r.refused for r in outside]),
        refused=_share([r.refused for r in inside]),
        # With no don't-knows at all, none was wrong.
        dont_know_precision=_share([r.item.out_of_scope for r in refusals]) if refusals else 1.0,
        first_text_p50=_percentile(first, 0.50),
        first_text_p95=_percentile(first, 0.95),
        answer_p50=_percentile(whole, 0.50),
        answer_p95=_percentile(whole, 0.95),
    )


def verdict(result: Result) -> tuple[bool, str]:
    """Whether one question was answered as it should be, and if not, why."""
    item = result.item
    reasons = []
    if result.outcome in ("failed", "busy"):
        reasons.append(f"the answer {result.outcome}")
    if result.unsupported:
        listed = ", ".join(f"{s.text} ({s.kind})" for s in result.unsupported)
        reasons.append(f"unsupported: {listed}")
    if item.out_of_scope:
        if not result.refused:
            reasons.append("answered a question the articles do not answer")
        return not reasons, "; ".join(reasons) or "don't-know, as it should"
    if result.refused:
        reasons.append(f"refused ({result.outcome})")
    else:
        if not result.cited:
            reasons.append(f"did not cite {item.document}")
        if result.missing:
            reasons.append("fact missing: " + ", ".join(repr(f) for f in result.missing))
    return not reasons, "; ".join(reasons) or "facts found, right document cited"


def parse_floors(text: str) -> dict[str, float]:
    """``--min fact=0.6,unsupported=0.05``: a floor per figure (for the lower-is-better
    figures, a ceiling)."""
    floors = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in LABELS:
            raise ConfigError(f"--min: unknown figure {name!r} (one of {', '.join(LABELS)})")
        try:
            floors[name] = float(value)
        except ValueError:
            raise ConfigError(f"--min: {name} needs a number, as in {name}=0.6") from None
    return floors


def short_of(found: Figures, floors: dict[str, float]) -> list[str]:
    """The figures that miss their floor (or ceiling), each as one readable line."""
    values = found.as_dict()
    missed = []
    for name, floor in floors.items():
        value = values[name]
        if name in LOWER_IS_BETTER and value > floor:
            missed.append(f"{name} {value:.2f} is above {floor:.2f}")
        elif name not in LOWER_IS_BETTER and value < floor:
            missed.append(f"{name} {value:.2f} is below {floor:.2f}")
    return missed
