"""The Redis store's records of what happened: handoffs and their claims, drafts for staff,
and transcripts, ratings and handoffs read back whole for ``parley report`` and
``parley export-training``.
``RedisStore`` (``redis.py``) keeps the connection and everything else."""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from collections.abc import Awaitable
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import redis.asyncio as aioredis

from bot.events import ConversationKey, Event
from bot.storage.base import (
    Claim,
    Draft,
    DraftState,
    Rated,
    Recorded,
    Snippet,
    SnippetState,
    Store,
    Timing,
    Transcript,
)

__all__ = ["RedisRecords"]

T = TypeVar("T")


class RedisRecords(Store):
    prefix: str

    @abstractmethod
    def _redis(self) -> aioredis.Redis: ...

    @abstractmethod
    async def _do(self, call: Awaitable[T]) -> T: ...

    @abstractmethod
    def _key(self, kind: str, name: Any) -> str: ...

    @abstractmethod
    def _script(self, name: str, keys: list[str], args: list[Any]) -> Awaitable[Any]: ...

    async def start_handoff(self, key: ConversationKey, reason: str) -> None:
        now = time.time()
        async with self._redis().pipeline(transaction=True) as pipe:
            pipe.hset(self._key("handoff", key), mapping={"started_at": now, "reason": reason})
            entry = {"conversation": str(key), "reason": reason, "started_at": now}
            pipe.rpush(f"{self.prefix}handoffs", json.dumps(entry))
            await self._do(pipe.execute())

    async def claim_handoff(self, key: ConversationKey, by: str) -> tuple[bool, str]:
        entry = (
            f'{{"conversation": {json.dumps(str(key))}, "claimed_by": {json.dumps(by)},'
            ' "started_at": '
        )
        taken, holder = await self._script(
            "claim_handoff",
            [self._key("handoff", key), f"{self.prefix}handoff_claims"],
            [by, repr(time.time()), entry],
        )
        return bool(taken), str(holder or "")

    async def handoff_since(self, key: ConversationKey) -> datetime | None:
        started = await self._do(self._redis().hget(self._key("handoff", key), "started_at"))
        return datetime.fromtimestamp(float(started), UTC) if started is not None else None

    async def end_handoff(self, key: ConversationKey) -> None:
        await self._do(self._redis().delete(self._key("handoff", key)))

    async def transcripts(self) -> list[Transcript]:
        redis = self._redis()
        head = self._key("conv", "")
        found = []
        async for name in redis.scan_iter(match=f"{head}*", count=500):
            rows = await self._do(redis.lrange(name, 0, -1))
            turns = []
            for row in rows:
                data = json.loads(row)
                created = datetime.fromtimestamp(data["created_at"], UTC)
                status = data.get("status", "complete")
                message_id = data.get("message_id", "")
                timing = None
                if data.get("answer_s") is not None:
                    timing = Timing(data["first_text_s"], data["answer_s"])
                turns.append(
                    Recorded(data["role"], data["content"], created, status, message_id, timing)
                )
            found.append(Transcript(name[len(head) :], tuple(turns)))
        return sorted(found, key=lambda transcript: transcript.conversation)

    async def ratings(self) -> list[Rated]:
        stored = await self._do(self._redis().hgetall(f"{self.prefix}feedback"))
        found = []
        for field, value in stored.items():
            conversation, reply_id, _ = json.loads(field)
            data = json.loads(value)
            created = datetime.fromtimestamp(data["created_at"], UTC)
            found.append(Rated(conversation, reply_id, data["rating"], data["question"], created))
        return sorted(found, key=lambda rated: rated.created_at)

    async def count_outcome(self, platform: str, outcome: str) -> None:
        field = json.dumps([datetime.now(UTC).date().isoformat(), platform, outcome])
        await self._do(self._redis().hincrby(f"{self.prefix}outcomes", field, 1))

    async def outcome_counts(self, since: date) -> list[tuple[date, str, str, int]]:
        stored = await self._do(self._redis().hgetall(f"{self.prefix}outcomes"))
        found = []
        for field, count in stored.items():
            day, platform, outcome = json.loads(field)
            if date.fromisoformat(day) >= since:
                found.append((date.fromisoformat(day), platform, outcome, int(count)))
        return sorted(found)

    async def handoffs_started(self) -> list[datetime]:
        rows = await self._do(self._redis().lrange(f"{self.prefix}handoffs", 0, -1))
        return [datetime.fromtimestamp(json.loads(row)["started_at"], UTC) for row in rows]

    async def claims(self) -> list[Claim]:
        rows = await self._do(self._redis().lrange(f"{self.prefix}handoff_claims", 0, -1))
        found = []
        for row in rows:
            data = json.loads(row)
            found.append(
                Claim(
                    data["conversation"],
                    datetime.fromtimestamp(float(data["started_at"]), UTC),
                    data["claimed_by"],
                    datetime.fromtimestamp(float(data["claimed_at"]), UTC),
                )
            )
        return found

    async def add_draft(self, draft: Draft) -> None:
        value = {
            "conversation": draft.conversation,
            "question": draft.question,
            "answer": draft.answer,
            "state": draft.state,
            "created_at": draft.created_at.timestamp(),
            "event": draft.event.to_json() if draft.event is not None else "",
            "decided_by": "",
            "decided_at": None,
            "posted": "",
        }
        async with self._redis().pipeline(transaction=True) as pipe:
            pipe.hset(f"{self.prefix}drafts", draft.id, json.dumps(value))
            if draft.state == "pending":
                pipe.sadd(f"{self.prefix}drafts:pending", draft.id)
            await self._do(pipe.execute())

    async def drafts(self) -> list[Draft]:
        stored = await self._do(self._redis().hgetall(f"{self.prefix}drafts"))
        found = [_draft(str(ident), str(value)) for ident, value in stored.items()]
        return sorted(found, key=lambda draft: (draft.created_at, draft.id))

    async def pending_drafts(self) -> list[Draft]:
        redis = self._redis()
        ids = sorted(await self._do(redis.smembers(f"{self.prefix}drafts:pending")))
        if not ids:
            return []
        values = await self._do(redis.hmget(f"{self.prefix}drafts", ids))
        found = [_draft(str(i), str(v)) for i, v in zip(ids, values, strict=True) if v]
        return sorted(found, key=lambda draft: (draft.created_at, draft.id))

    async def draft(self, draft_id: str) -> Draft | None:
        value = await self._do(self._redis().hget(f"{self.prefix}drafts", draft_id))
        return _draft(draft_id, str(value)) if value is not None else None

    async def decide_draft(
        self, draft_id: str, state: DraftState, by: str, posted: str = ""
    ) -> bool:
        return await self._decide("drafts", draft_id, state, by, "posted", posted)

    async def _decide(
        self, records: str, ident: str, state: str, by: str, field: str, text: str
    ) -> bool:
        """Settle a pending draft or snippet, its ``field`` set to ``text``. Checked and set in
        one step on the server: two people clicking at once, on two replicas, settle it once."""
        keys = [f"{self.prefix}{records}", f"{self.prefix}{records}:pending"]
        decided = await self._script(
            "decide_pending", keys, [ident, state, by, time.time(), field, text]
        )
        return bool(decided)

    async def add_snippet(self, snippet: Snippet) -> None:
        value = {
            "conversation": snippet.conversation,
            "question": snippet.question,
            "answer": snippet.answer,
            "state": snippet.state,
            "created_at": snippet.created_at.timestamp(),
            "link": snippet.link,
            "note": snippet.note,
            "decided_by": "",
            "decided_at": None,
        }
        async with self._redis().pipeline(transaction=True) as pipe:
            pipe.hset(f"{self.prefix}snippets", snippet.id, json.dumps(value))
            if snippet.state == "pending":
                pipe.sadd(f"{self.prefix}snippets:pending", snippet.id)
            await self._do(pipe.execute())

    async def snippets(self) -> list[Snippet]:
        redis = self._redis()
        stored = await self._do(redis.hgetall(f"{self.prefix}snippets"))
        cited = await self._do(redis.hgetall(f"{self.prefix}snippets:cited"))
        found = [
            _snippet(str(ident), str(value), int(cited.get(ident, 0)))
            for ident, value in stored.items()
        ]
        return sorted(found, key=lambda snippet: (snippet.created_at, snippet.id))

    async def snippet(self, snippet_id: str) -> Snippet | None:
        redis = self._redis()
        value = await self._do(redis.hget(f"{self.prefix}snippets", snippet_id))
        if value is None:
            return None
        cited = await self._do(redis.hget(f"{self.prefix}snippets:cited", snippet_id))
        return _snippet(snippet_id, str(value), int(cited or 0))

    async def decide_snippet(
        self, snippet_id: str, state: SnippetState, by: str, answer: str
    ) -> bool:
        return await self._decide("snippets", snippet_id, state, by, "answer", answer)

    async def cite_snippet(self, snippet_id: str) -> None:
        await self._do(self._redis().hincrby(f"{self.prefix}snippets:cited", snippet_id, 1))


def _snippet(ident: str, value: str, cited: int) -> Snippet:
    data = json.loads(value)
    decided = data.get("decided_at")
    return Snippet(
        ident,
        data["conversation"],
        data["question"],
        data["answer"],
        data["state"],
        datetime.fromtimestamp(data["created_at"], UTC),
        data.get("link", ""),
        data.get("note", ""),
        data.get("decided_by", ""),
        datetime.fromtimestamp(decided, UTC) if decided is not None else None,
        cited,
    )


def _draft(ident: str, value: str) -> Draft:
    data = json.loads(value)
    decided = data.get("decided_at")
    return Draft(
        ident,
        data["conversation"],
        data["question"],
        data["answer"],
        data["state"],
        datetime.fromtimestamp(data["created_at"], UTC),
        Event.from_json(data["event"]) if data.get("event") else None,
        data.get("decided_by", ""),
        datetime.fromtimestamp(decided, UTC) if decided is not None else None,
        data.get("posted", ""),
    )
