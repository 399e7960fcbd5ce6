"""The overview's figures over a period, read through the store (SQLite or Redis alike):
questions a day by platform, what became of them, and how customers rated the answers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from bot.storage.base import Store

__all__ = ["OUTCOMES", "Overview", "build_overview", "period_start"]

#: A stored answer's status as the console names it.
OUTCOMES = {
    "complete": "answered",
    "dont_know": "don't know",
    "partial": "failed",
    "failed": "failed",
}


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

    @property
    def questions(self) -> int:
        return sum(sum(day.values()) for day in self.per_day.values())

    @property
    def platforms(self) -> list[str]:
        return sorted({p for day in self.per_day.values() for p in day})

    @property
    def positive(self) -> float | None:
        rated = self.thumbs_up + self.thumbs_down
        return self.thumbs_up / rated if rated else None


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
    overview.handoffs = sum(when >= since for when in await store.handoffs_started())
    overview.outcomes["handed off"] = overview.handoffs
    for rated in await store.ratings():
        if rated.created_at >= since:
            overview.thumbs_up += rated.rating == "up"
            overview.thumbs_down += rated.rating == "down"
    return overview
