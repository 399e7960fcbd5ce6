"""Files picked in the web chat: posted to ``/upload`` (multipart, one file a request), read at
once, and kept for the visitor until the question that names them is sent.

The socket carries only the upload ids (its messages stay small); an upload names its visitor,
so an id copied to another browser finds nothing. What a visitor has uploaded and not yet sent
is bounded in count and kept for an hour.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import BodyPartReader, web

from bot.config import AttachmentsConfig
from bot.core.attachments import Offered, read_files
from bot.events import Attachment

__all__ = ["Uploads"]

#: Files a visitor may have uploaded and not yet sent.
PENDING_PER_VISITOR = 10
KEEP_SECONDS = 3600.0
NO_FILES = "This chat does not take files."
TOO_MANY = "Please send your question with the files you have attached before adding more."
NOT_A_FILE = "Please choose a file to attach."


@dataclass(frozen=True)
class _Upload:
    visitor: str
    file: Attachment
    at: float


class Uploads:
    def __init__(self, config: AttachmentsConfig) -> None:
        self.config = config
        self._kept: dict[str, _Upload] = {}

    async def receive(self, request: web.Request, visitor: str) -> web.Response:
        """One uploaded file, read: ``{"id", "name", "notice"}``, or an error in one line."""
        if not self.config.enabled:
            return web.json_response({"error": NO_FILES}, status=403)
        self._forget_old()
        if sum(u.visitor == visitor for u in self._kept.values()) >= PENDING_PER_VISITOR:
            return web.json_response({"error": TOO_MANY}, status=429)
        try:
            part = await (await request.multipart()).next()
        except (ValueError, AssertionError, KeyError):  # not multipart, or a broken body
            part = None
        if not isinstance(part, BodyPartReader) or not part.filename:
            return web.json_response({"error": NOT_A_FILE}, status=400)
        data = await _read(part, self.config.max_bytes)

        async def fetch() -> bytes:
            return data

        [file] = await read_files([Offered(part.filename, len(data), fetch)], self.config)
        ident = uuid.uuid4().hex
        self._kept[ident] = _Upload(visitor, file, time.monotonic())
        return web.json_response({"id": ident, "name": file.name, "notice": file.notice})

    def take(self, visitor: str, idents: Sequence[object]) -> tuple[Attachment, ...]:
        """The visitor's uploads named by ``idents`` (each taken once; others' ignored)."""
        found = []
        for ident in idents[: self.config.max_files]:
            upload = self._kept.get(ident) if isinstance(ident, str) else None
            if upload is not None and upload.visitor == visitor:
                del self._kept[ident]  # type: ignore[arg-type]
                found.append(upload.file)
        return tuple(found)

    def _forget_old(self) -> None:
        now = time.monotonic()
        for ident, upload in list(self._kept.items()):
            if now - upload.at > KEEP_SECONDS:
                del self._kept[ident]


async def _read(part: BodyPartReader, limit: int) -> bytes:
    """The part's bytes, stopping one past ``limit`` (which the reader reports as too large)."""
    data = bytearray()
    while len(data) <= limit:
        chunk = await part.read_chunk(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data[: limit + 1])
