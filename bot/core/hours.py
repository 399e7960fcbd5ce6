"""Support hours: whether people answer now, and when they next do, in the team's time zone."""

from __future__ import annotations

import zoneinfo
from datetime import datetime, time, timedelta

from bot.config import WEEKDAYS, HandoffConfig

__all__ = ["next_opening"]


def next_opening(config: HandoffConfig, now: datetime) -> datetime | None:
    """When people next answer, in the team's time zone; None when they answer now (or the
    team keeps no hours)."""
    if not config.hours:
        return None
    zone = zoneinfo.ZoneInfo(config.timezone)
    local = now.astimezone(zone)
    start_text, end_text = config.hours.split("-")
    start, end = _clock(start_text), _clock(end_text)
    open_days = {WEEKDAYS.index(day) for day in config.days}
    if local.weekday() in open_days and start <= local.time() < end:
        return None
    for ahead in range(8):
        day = local.date() + timedelta(days=ahead)
        opening = datetime.combine(day, start, tzinfo=zone)
        if day.weekday() in open_days and opening > local:
            return opening
    return None  # no open days at all


def _clock(text: str) -> time:
    hours, minutes = (int(part) for part in text.split(":"))
    return time.max if hours == 24 else time(hours, minutes)
