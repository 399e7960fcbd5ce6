"""How the core shows text on a platform: the adapter hands the service a ``Reply``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

__all__ = ["HandsOff", "Named", "Reply", "Tracked", "Unseen", "reply_id"]


class Reply(Protocol):
    """One answer being shown to a user.

    The service calls ``start()`` once generation begins, ``update()`` with the whole text so
    far as it grows (the adapter throttles its edits), and exactly one of ``finish()`` (the
    final text: split it over the platform's length limit) or ``fail()`` (a short notice, with
    whatever partial text the user should keep). A notice that needs no generation, such as
    the help text, is a ``finish()`` without ``start()``.
    """

    async def start(self) -> None: ...

    async def update(self, text: str) -> None: ...

    async def finish(self, text: str) -> None: ...

    async def fail(self, message: str) -> None: ...


# What some replies can do besides; the core asks with isinstance(), mypy checks the types.


@runtime_checkable
class Named(Protocol):
    """A reply shown in a message the platform names: ratings and the inbox refer to it."""

    @property
    def message_id(self) -> str: ...


@runtime_checkable
class Tracked(Protocol):
    """A reply that says when its first message is posted: ``on_posted``, when set, is
    awaited then (the service records where the answer is, for a restart to finish it)."""

    on_posted: Callable[[], Awaitable[None]] | None


@runtime_checkable
class HandsOff(Protocol):
    """A reply that posts a handoff with the one mention the bot may make, its support
    team's, and a way for them to claim the conversation (named by ``conversation``)."""

    async def handoff(self, text: str, conversation: str) -> None: ...


def reply_id(reply: Reply) -> str:
    """The id of the message ``reply`` is shown in ('' when it has none, or none yet)."""
    return (reply.message_id or "") if isinstance(reply, Named) else ""


class Unseen:
    """A reply nobody is shown: it keeps what was written (an answer for the team to read)."""

    def __init__(self) -> None:
        self.text = ""
        self.failed = False

    async def start(self) -> None:
        pass

    async def update(self, text: str) -> None:
        self.text = text

    async def finish(self, text: str) -> None:
        self.text = text

    async def fail(self, message: str) -> None:
        self.text, self.failed = message, True
