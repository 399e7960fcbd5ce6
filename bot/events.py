"""The common event format every adapter produces (docs/architecture.md)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["Attachment", "ConversationKey", "Event", "Rating"]

#: A user's verdict on an answer: a 👍 or a 👎 (a reaction, a button).
Rating = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Where a conversation lives: per channel, and per thread where the platform has threads."""

    platform: str
    workspace: str
    channel: str
    thread: str | None = None

    def __str__(self) -> str:
        return "/".join((self.platform, self.workspace, self.channel, self.thread or ""))

    @classmethod
    def parse(cls, text: str) -> ConversationKey:
        platform, workspace, channel, thread = text.split("/", 3)
        return cls(platform, workspace, channel, thread or None)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file attached to a message, as read by the adapter: its ``text`` ("" when it could
    not be read), or a one-line ``notice`` for the customer saying why not (or that only its
    first part was read)."""

    name: str
    text: str = ""
    notice: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """One incoming chat message, already converted from the platform's payload.

    ``text`` is plain text: the bot's own mention removed, other mentions as readable @names.
    ``context`` carries the text of a message this one replies to, when the platform has it.
    Every id is a ``str``; ``received_at`` is timezone-aware UTC.
    """

    platform: str
    channel: str
    user: str
    text: str
    workspace: str = ""
    thread: str | None = None
    message_id: str = ""
    user_name: str = ""
    addressed: bool = True
    is_dm: bool = False
    from_bot: bool = False
    received_at: datetime = field(default_factory=_now)
    context: str | None = None
    #: The author's roles (Discord) or user groups (Slack), for staff and access rules.
    roles: tuple[str, ...] = ()
    #: Channels enclosing this one: a Discord category, a thread's parent channel.
    parents: tuple[str, ...] = ()
    #: The message is addressed to someone else (it opens with another user's mention).
    mentions_others: bool = False
    #: Files attached to the message, already read (bot/core/attachments.py).
    files: tuple[Attachment, ...] = ()

    @property
    def key(self) -> ConversationKey:
        return ConversationKey(self.platform, self.workspace, self.channel, self.thread)

    @property
    def marker(self) -> str:
        """Names this delivery across retries and replicas ('' without a message id)."""
        if not self.message_id:
            return ""
        return "/".join((self.platform, self.workspace, self.channel, self.message_id))

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["received_at"] = self.received_at.isoformat()
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Event:
        data: dict[str, Any] = json.loads(text)
        data["received_at"] = datetime.fromisoformat(data["received_at"])
        for name in ("roles", "parents"):
            data[name] = tuple(data.get(name, ()))
        data["files"] = tuple(Attachment(**file) for file in data.get("files", ()))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
