"""The store in Redis, shared by several Parley replicas (``store.url = "redis://…"``).

Keys, each under ``store.prefix`` (``parley:`` by default; ``{conv}`` is the conversation key):

=============================  =================================================================
``conv:{conv}``                list of turns (JSON), oldest first; a reset appends a marker
``start:{conv}``               index in that list where the context starts (after the last reset)
``lastq:{conv}``               the latest user message, kept with a rated answer as its question
``lock:{conv}``                the replica answering there now; its value is its fencing token
``fence:{conv}``               the last fencing token handed out (only ever grows)
``asked:{platform}/{ws}/{u}``  sorted set of the user's messages by time, two days of them
``seen:{marker}``              a delivery already taken (expires)
``handoff:{conv}``             hash: the open handoff's start and reason
``handoffs``                   list of handoffs started (JSON), for reports
``handoff_claims``             list of handoffs staff claimed, when and by whom (JSON)
``reply:{channel}/{reply_id}`` the answer posted as ``reply_id`` and its question (JSON)
``feedback``                   hash: ``[conv, reply_id, user]`` → rating (JSON)
``drafts``                     hash: draft id → an answer written for the team (JSON)
``drafts:pending``             set of the ids of drafts waiting for staff
``inbox:{marker}``             hash: an event taken in, its state and its reply's message id
``inbox``                      sorted set of the markers not answered yet, by time received
``bucket:{kind}:{who}``        a rate limit's token bucket (tokens, when last counted)
``told:{kind}:{who}``          set while the sender has been told to slow down (expires)
=============================  =================================================================

Ordering across replicas: :meth:`RedisStore.conversation_lock` takes ``lock:{conv}`` for one
message's answer and renews it while held. Taking it increments ``fence:{conv}``; writes made
under the lock carry that token and are refused (``StoreError``) once the fence has moved on, so
a replica that stalled past ``store.lock_ttl`` and lost the lock cannot write out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from bot.errors import StoreError
from bot.events import ConversationKey, Event
from bot.storage.base import (
    INBOX_KEEP,
    InboxState,
    Rating,
    Role,
    Status,
    Timing,
    Turn,
    Waiting,
)
from bot.storage.redis_lua import SCRIPTS
from bot.storage.redis_records import RedisRecords

__all__ = ["RedisStore", "mask_url"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Quotas count today's messages; two days of them is all a count ever needs.
_ASKED_SECONDS = 2 * 86400
_LOCK_POLL_FIRST = 0.02
_LOCK_POLL_MAX = 0.25

#: The fencing tokens of the conversation locks the current task holds, by store and key.
_held: ContextVar[dict[tuple[int, str], str]] = ContextVar("parley_redis_fences", default={})  # noqa: B039


def mask_url(url: str) -> str:
    """``url`` with any password replaced, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisStore(RedisRecords):
    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        prefix: str = "parley:",
        lock_ttl: float = 30.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.lock_ttl = lock_ttl
        self._password = password
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RedisStore({mask_url(self.url)!r})"

    # -- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        if self._client is not None:
            raise RuntimeError("store is already open")
        client = aioredis.Redis.from_url(
            self.url,
            password=self._password,
            decode_responses=True,
            socket_connect_timeout=5,
            socket_timeout=10,
            health_check_interval=30,
        )
        self._scripts = {name: client.register_script(lua) for name, lua in SCRIPTS.items()}
        self._client = client
        try:
            await self._do(client.ping())
        except BaseException:
            self._client = None
            await client.aclose()
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("store is not open")
        return self._client

    async def _do(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except ResponseError as exc:
            if "FENCED" in str(exc):
                raise StoreError(
                    "this replica lost the conversation's lock (it stalled longer than"
                    " store.lock_ttl); its late write was refused"
                ) from exc
            raise StoreError(f"{mask_url(self.url)}: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise StoreError(f"{mask_url(self.url)}: {exc or type(exc).__name__}") from exc

    def _key(self, kind: str, name: str | ConversationKey) -> str:
        return f"{self.prefix}{kind}:{name}"

    def _token(self, key: ConversationKey) -> str:
        """The fencing token this task writes ``key`` with ("" outside the lock: unfenced)."""
        return _held.get().get((id(self), str(key)), "")

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        self._redis()
        return self._do(self._scripts[name](keys=keys, args=args))

    # -- the Store interface ---------------------------------------------------------------
    async def check(self) -> None:
        await self._do(self._redis().set(self._key("health", "checked_at"), time.time()))

    async def append(
        self,
        key: ConversationKey,
        role: Role,
        content: str,
        *,
        status: Status = "complete",
        user: str = "",
        message_id: str = "",
        timing: Timing | None = None,
    ) -> None:
        now = time.time()
        turn: dict[str, Any] = {
            "role": role,
            "content": content,
            "status": status,
            "user": user,
            "message_id": message_id,
            "created_at": now,
        }
        if timing is not None:
            turn["first_text_s"], turn["answer_s"] = timing.first_text_s, timing.answer_s
        channel = "/".join((key.platform, key.workspace, key.channel, ""))
        # The rated-answer record is completed inside the script with the question it answers.
        record = ""
        if role == "assistant" and message_id:
            record = f"[{json.dumps(str(key))}, {json.dumps(content)}, "
        asked = self._key("asked", f"{key.platform}/{key.workspace}/{user}")
        await self._script(
            "append",
            [
                self._key("conv", key),
                self._key("fence", key),
                self._key("lastq", key),
                self._key("reply", channel + message_id),
                asked,
            ],
            [
                self._token(key),
                json.dumps(turn),
                role,
                content,
                record,
                user,
                now,
                f"{now}:{uuid.uuid4().hex[:8]}",
                _ASKED_SECONDS,
            ],
        )

    async def history(self, key: ConversationKey, limit: int = 100) -> list[Turn]:
        redis = self._redis()
        async with redis.pipeline(transaction=True) as pipe:
            pipe.get(self._key("start", key))
            pipe.llen(self._key("conv", key))
            start, length = await self._do(pipe.execute())
        # The list only grows at its end, so these indices stay valid after the snapshot.
        first = max(int(start or 0), length - limit)
        if first >= length:
            return []
        rows = await self._do(redis.lrange(self._key("conv", key), first, length - 1))
        turns = []
        for row in rows:
            data = json.loads(row)
            if data["role"] in ("user", "assistant"):
                created = datetime.fromtimestamp(data["created_at"], UTC)
                turns.append(Turn(data["role"], data["content"], created, data["status"]))
        return turns

    async def reset(self, key: ConversationKey) -> None:
        marker = json.dumps({"role": "reset", "content": "", "created_at": time.time()})
        await self._script(
            "reset",
            [self._key("conv", key), self._key("start", key), self._key("fence", key)],
            [self._token(key), marker],
        )

    async def claim(self, marker: str, ttl: float) -> bool:
        taken = await self._do(
            self._redis().set(self._key("seen", marker), 1, nx=True, px=max(1, int(ttl * 1000)))
        )
        return bool(taken)

    shares_limits = True

    async def take_token(
        self, bucket: str, per_second: float, burst: float
    ) -> tuple[bool, float, bool]:
        keys = [self._key("bucket", bucket), self._key("told", bucket)]
        taken, wait, first = await self._script("take_token", keys, [per_second, burst])
        return bool(taken), float(wait), bool(first)

    async def inbox_add(self, event: Event) -> None:
        entry = self._key("inbox", event.marker)
        redis = self._redis()
        if not await self._do(redis.hsetnx(entry, "event", event.to_json())):
            return  # taken in already
        received = event.received_at.timestamp()
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(entry, mapping={"state": "received", "reply_id": "", "received_at": received})
            pipe.zadd(f"{self.prefix}inbox", {event.marker: received})
            await self._do(pipe.execute())

    async def inbox_mark(self, marker: str, state: InboxState, reply_id: str = "") -> None:
        entry = self._key("inbox", marker)
        async with self._redis().pipeline(transaction=True) as pipe:
            pipe.hset(entry, "state", state)
            if reply_id:
                pipe.hset(entry, "reply_id", reply_id)
            if state == "answered":
                pipe.zrem(f"{self.prefix}inbox", marker)
                pipe.expire(entry, int(INBOX_KEEP))
            await self._do(pipe.execute())

    async def inbox_state(self, marker: str) -> InboxState | None:
        state = await self._do(self._redis().hget(self._key("inbox", marker), "state"))
        return cast(InboxState, state) if state in ("received", "answering", "answered") else None

    async def inbox_waiting(self, limit: int = 1000) -> list[Waiting]:
        redis = self._redis()
        markers = await self._do(redis.zrange(f"{self.prefix}inbox", 0, limit - 1))
        async with redis.pipeline(transaction=False) as pipe:
            for marker in markers:
                pipe.hgetall(self._key("inbox", str(marker)))
            entries = await self._do(pipe.execute())
        found = []
        for entry in entries:
            values = {str(k): str(v) for k, v in entry.items()}  # (decoded already)
            state = values.get("state", "received")
            if "event" not in values or state == "answered":
                continue
            found.append(
                Waiting(
                    Event.from_json(values["event"]),
                    cast(InboxState, state),
                    values.get("reply_id", ""),
                    datetime.fromtimestamp(float(values.get("received_at", 0)), UTC),
                )
            )
        return found

    async def inbox_count(self) -> tuple[int, datetime | None]:
        redis = self._redis()
        waiting = f"{self.prefix}inbox"
        count = int(await self._do(redis.zcard(waiting)))
        oldest = await self._do(redis.zrange(waiting, 0, 0, withscores=True))
        return count, datetime.fromtimestamp(float(oldest[0][1]), UTC) if oldest else None

    async def extend(self, marker: str, ttl: float) -> None:
        await self._do(self._redis().pexpire(self._key("seen", marker), max(1, int(ttl * 1000))))

    async def release(self, marker: str) -> None:
        await self._do(self._redis().delete(self._key("seen", marker)))

    async def count_questions(
        self, platform: str, workspace: str, user: str, since: datetime
    ) -> int:
        asked = self._key("asked", f"{platform}/{workspace}/{user}")
        return int(await self._do(self._redis().zcount(asked, since.timestamp(), "+inf")))

    async def add_feedback(
        self, scope: ConversationKey, reply_id: str, user: str, rating: Rating
    ) -> bool:
        channel = "/".join((scope.platform, scope.workspace, scope.channel, ""))
        found = await self._do(self._redis().get(self._key("reply", channel + reply_id)))
        if found is None:
            return False
        conversation, answer, question = json.loads(found)
        field = json.dumps([conversation, reply_id, user])
        value = {
            "rating": rating,
            "question": question,
            "answer": answer,
            "created_at": time.time(),
        }
        # One rating per person and answer: changing one's mind replaces it.
        await self._do(self._redis().hset(f"{self.prefix}feedback", field, json.dumps(value)))
        return True

    # -- ordering across replicas ----------------------------------------------------------
    @contextlib.asynccontextmanager
    async def conversation_lock(self, key: ConversationKey) -> AsyncIterator[None]:
        lock, ttl_ms = self._key("lock", key), max(1, int(self.lock_ttl * 1000))
        token = await self._acquire(lock, self._key("fence", key), ttl_ms)
        held = {**_held.get(), (id(self), str(key)): token}
        reset = _held.set(held)
        renewer = asyncio.create_task(self._renew(lock, token, ttl_ms), name=f"lock {key}")
        try:
            yield
        finally:
            _held.reset(reset)
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            try:
                await asyncio.shield(self._script("release", [lock], [token]))
            except StoreError:
                # It expires by itself within lock_ttl; the next holder only waits for that.
                log.warning("cannot release the lock of %s", key, exc_info=True)

    async def _acquire(self, lock: str, fence: str, ttl_ms: int) -> str:
        """Wait for the lock (another replica answering here holds it), then take it."""
        delay = _LOCK_POLL_FIRST
        while True:
            token = await self._script("acquire", [lock, fence], [ttl_ms])
            if token is not None:
                return str(token)
            # Polling, not pub/sub: a holder renews or releases within one answer, and a
            # crashed one is only noticed through the TTL anyway.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _LOCK_POLL_MAX)

    async def _renew(self, lock: str, token: str, ttl_ms: int) -> None:
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            try:
                renewed = await self._script("renew", [lock], [token, ttl_ms])
            except StoreError:
                log.warning("cannot renew the conversation lock %s", lock, exc_info=True)
                continue
            if not renewed:
                # Lost (it expired while this replica stalled): writes are now refused.
                log.warning("lost the conversation lock %s", lock)
                return
