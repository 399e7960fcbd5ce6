"""The overview's figures over a period, read through the store (SQLite or Redis alike):
questions a day by platform, what became of them, and how customers rated the answers."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from bot.storage.base import Store

__all__ = ["OUTCOMES", "Overview", "build_overview", "percentile", "period_start"]

#: A stored answer's status as the console names it.
OUTCOMES = {
    "complete": "answered",
    "dont_know": "don't know",
    "partial": "failed",
    "failed": "failed",
}


#: Events counted apart (``Store.count_outcome``): no answer of theirs is in a transcript.
UNANSWERED = {"busy": "busy", "rate_limited": "rate-limited"}


@dataclass
class Overview:
    days: int
    since: datetime
    #: Questions per day (UTC) and platform.
    per_day: dict[date, Counter[str]] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    handoffs: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    #: Each timed answer's seconds to its first text and to the whole answer, by day.
    first_text: dict[date, list[float]] = field(default_factory=dict)
    whole_answer: dict[date, list[float]] = field(default_factory=dict)

    @property
    def questions(self) -> int:
        return sum(sum(day.values()) for day in self.per_day.values())

    @property
    def platforms(self) -> list[str]:
        return sorted({p for day in self.per_day.values() for p in day})

    def latency(self, which: str, q: float) -> float | None:
        """The ``q`` percentile (0-100) of ``which`` ("first_text" or "whole_answer") over the
        period; None without a timed answer."""
        values = [v for day in getattr(self, which).values() for v in day]
        return percentile(values, q) if values else None

    @property
    def positive(self) -> float | None:
        rated = self.thumbs_up + self.thumbs_down
        return self.thumbs_up / rated if rated else None


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: a value some answer really took."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


def period_start(now: datetime, days: int) -> datetime:
    """The start (UTC midnight) of the last ``days`` days, today included."""
    first = (now - timedelta(days=days - 1)).date()
    return datetime(first.year, first.month, first.day, tzinfo=UTC)


async def build_overview(store: Store, days: int, now: datetime | None = None) -> Overview:
    """The last ``days`` days (today included) of what ``store`` holds."""
    since = period_start(now or datetime.now(UTC), days)
    overview = Overview(days, since)
    overview.per_day = {since.date() + timedelta(days=i): Counter() for i in range(days)}
    for transcript in await store.transcripts():
        platform = transcript.conversation.split("/", 1)[0]
        for turn in transcript.turns:
            if turn.created_at < since:
                continue
            if turn.role == "user":
                overview.per_day.setdefault(turn.created_at.date(), Counter())[platform] += 1
            elif turn.role == "assistant":
                overview.outcomes[OUTCOMES.get(turn.status, "failed")] += 1
                if turn.timing is not None:
                    day = turn.created_at.date()
                    overview.first_text.setdefault(day, []).append(turn.timing.first_text_s)
                    overview.whole_answer.setdefault(day, []).append(turn.timing.answer_s)
    overview.handoffs = sum(when >= since for when in await store.handoffs_started())
    overview.outcomes["handed off"] = overview.handoffs
    for _day, _platform, outcome, count in await store.outcome_counts(since.date()):
        overview.outcomes[UNANSWERED.get(outcome, outcome)] += count
    for rated in await store.ratings():
        if rated.created_at >= since:
            overview.thumbs_up += rated.rating == "up"
            overview.thumbs_down += rated.rating == "down"
    return overview
