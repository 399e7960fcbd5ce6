"""Token buckets per user and per channel, and a cap on the bot's own messages per channel.

A limited sender gets one polite notice per window, then silence until the bucket refills, so
a flood never turns into a flood of notices. The buckets live in this process, or, with
``shared`` (the Redis store), in Redis, so that they hold across replicas; should Redis fail,
this process's own buckets stand in.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from bot.errors import StoreError

__all__ = ["Limit", "RateLimiter", "SharedBuckets", "TokenBucket"]

log = logging.getLogger(__name__)

_MAX_TRACKED = 100_000


@dataclass
class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst``."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def seconds_until_one(self) -> float:
        return max(0.0, (1.0 - self.tokens) / self.rate) if self.rate > 0 else float("inf")


class Limit(Enum):
    OK = "ok"
    NOTIFY = "notify"  # limited: tell the sender once
    SILENT = "silent"  # limited, and already told


class SharedBuckets(Protocol):
    async def take_token(
        self, bucket: str, per_second: float, burst: float
    ) -> tuple[bool, float, bool]:
        """Take a token from ``bucket``: (taken, seconds until one is there, whether this is
        the first refusal of the window)."""
        ...


class _Buckets:
    def __init__(self, per_minute: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(1.0, burst)
        self.clock = clock
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self._told: dict[Hashable, float] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: Hashable) -> Limit:
        if not self.enabled:
            return Limit.OK
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > _MAX_TRACKED:
                old, _ = self._buckets.popitem(last=False)
                self._told.pop(old, None)
        self._buckets.move_to_end(key)
        if bucket.take(now):
            self._told.pop(key, None)
            return Limit.OK
        if self._told.get(key, -1.0) >= now:
            return Limit.SILENT
        # Quiet until the bucket has a token again: one notice per window.
        self._told[key] = now + bucket.seconds_until_one()
        return Limit.NOTIFY

    def wait_hint(self, key: Hashable) -> float:
        bucket = self._buckets.get(key)
        return bucket.seconds_until_one() if bucket else 0.0


class RateLimiter:
    def __init__(
        self,
        user_per_minute: float,
        user_burst: float,
        channel_per_minute: float,
        channel_burst: float,
        bot_messages_per_channel_minute: float,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedBuckets | None = None,
    ) -> None:
        self.users = _Buckets(user_per_minute, user_burst, clock)
        self.channels = _Buckets(channel_per_minute, channel_burst, clock)
        self.bot_output = _Buckets(
            bot_messages_per_channel_minute, bot_messages_per_channel_minute, clock
        )
        self.shared = shared

    async def admit(self, user: Hashable, channel: Hashable) -> tuple[Limit, float]:
        """Whether a message may be answered, and when the sender may try again."""
        for name, buckets, key in (("user", self.users, user), ("channel", self.channels, channel)):
            verdict, wait = await self._take(name, buckets, key)
            if verdict is not Limit.OK:
                return verdict, wait
        return Limit.OK, 0.0

    async def may_post(self, channel: Hashable) -> bool:
        """Counts one bot message in ``channel``; False past the per-minute cap."""
        verdict, _ = await self._take("posts", self.bot_output, channel)
        return verdict is Limit.OK

    async def _take(self, name: str, buckets: _Buckets, key: Hashable) -> tuple[Limit, float]:
        if not buckets.enabled:
            return Limit.OK, 0.0
        if self.shared is not None:
            bucket = "/".join(map(str, key)) if isinstance(key, tuple) else str(key)
            try:
                taken, wait, first = await self.shared.take_token(
                    f"{name}:{bucket}", buckets.rate, buckets.burst
                )
            except StoreError as exc:
                log.warning("shared rate limits unavailable, this replica's own apply: %s", exc)
            else:
                if taken:
                    return Limit.OK, 0.0
                return (Limit.NOTIFY if first else Limit.SILENT), wait
        verdict = buckets.take(key)
        return verdict, buckets.wait_hint(key) if verdict is not Limit.OK else 0.0
