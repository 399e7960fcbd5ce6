"""How the core shows text on a platform: the adapter hands the service a ``Reply``."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Reply"]


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
