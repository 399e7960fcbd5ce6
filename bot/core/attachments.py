"""Files customers attach to a question, read as text: plain text, Markdown, CSV, JSON, logs and
PDF (through pypdf). The kind is sniffed from the bytes, not taken from the name or the declared
type: a "report.txt" that is a PDF is read as one, a "notes.pdf" that is text as text, an
image named anything gets the notice for images.

Each reader returns an :class:`~bot.events.Attachment` and never raises: a file that cannot be
read (too large, an image, password-protected, damaged, no text) is a one-line notice for the
customer, and the question is answered all the same.

The text is laid out for :mod:`bot.knowledge.sentences`: a CSV becomes a Markdown table (each
row a unit, read with its header), a JSON document one ``path: value`` line per value, and the
lines of a log or a PDF stay apart (an invoice's lines are facts of their own), except where a
line plainly continues the one before.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bot.config import AttachmentsConfig
from bot.core.wording import (
    FILE_BROKEN,
    FILE_IMAGE,
    FILE_KIND,
    FILE_NO_TEXT,
    FILE_NOT_FETCHED,
    FILE_PROTECTED,
    FILE_TOO_LARGE,
    FILE_TOO_MANY,
)
from bot.events import Attachment

__all__ = ["Offered", "read_attachment", "read_files", "split_files", "with_files"]

log = logging.getLogger(__name__)

#: A token is about four characters of English; the core cuts each file to its token budget,
#: so more than this many characters a token is never needed.
CHARS_PER_TOKEN = 8
#: Rows of a CSV file under each repetition of its header.
TABLE_ROWS = 10
#: Pages of a PDF read at most (a long manual's first pages answer "what does page 2 say").
MAX_PAGES = 50

_IMAGES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00")
_OTHER_BINARY = (
    b"PK\x03\x04",  # zip: docx, xlsx, odt and the like
    b"\x1f\x8b",  # gzip
    b"7z\xbc\xaf",
    b"Rar!",
    b"\x7fELF",
    b"MZ",
    b"\xd0\xcf\x11\xe0",  # old Office documents
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_IN_TURN = re.compile(
    r"\n*\[Attached file: (?P<name>[^\]\n]*)\]\n(?P<text>.*?)\n\[End of (?P=name)\]", re.S
)
_ENDS_SENTENCE = re.compile(r"[.!?:;)\]]$")


@dataclass(frozen=True)
class Offered:
    """A file a message brings, before it is downloaded: its name, the size the platform
    declares (0 when unknown), and how to fetch its bytes."""

    name: str
    size: int
    fetch: Callable[[], Awaitable[bytes]]


async def read_files(
    offered: Sequence[Offered], config: AttachmentsConfig
) -> tuple[Attachment, ...]:
    """The files of one message, read (the first ``max_files``; none when turned off). A file
    over ``max_bytes`` by its declared size is not downloaded."""
    if not config.enabled:
        return ()
    read: list[Attachment] = []
    limit = _size(config.max_bytes)
    for file in offered[: config.max_files]:
        file = dataclasses.replace(file, name=_file_name(file.name))
        if file.size > config.max_bytes:
            read.append(
                Attachment(file.name, notice=FILE_TOO_LARGE.format(name=file.name, limit=limit))
            )
            continue
        try:
            data = await file.fetch()
        except Exception as exc:  # a platform's error of any kind: say so, answer the rest
            log.warning("cannot download the attachment %r: %s", file.name, exc)
            read.append(Attachment(file.name, notice=FILE_NOT_FETCHED.format(name=file.name)))
            continue
        if len(data) > config.max_bytes:
            read.append(
                Attachment(file.name, notice=FILE_TOO_LARGE.format(name=file.name, limit=limit))
            )
            continue
        chars = config.max_tokens * CHARS_PER_TOKEN
        read.append(await asyncio.to_thread(read_attachment, file.name, data, chars))
    skipped = FILE_TOO_MANY.format(count=config.max_files)
    read.extend(
        Attachment(_file_name(file.name), notice=skipped) for file in offered[config.max_files :]
    )
    return tuple(read)


def with_files(text: str, files: Sequence[Attachment]) -> str:
    """A question as its turn is kept: its text, then each readable file's (the model reads
    them with the question, and a follow-up finds them in the conversation)."""
    blocks = [text] if text else []
    for file in files:
        if file.text:
            name = file.name.replace("]", ")").replace("\n", " ")
            body = file.text.replace(f"[End of {name}]", f"(End of {name})")
            blocks.append(f"[Attached file: {name}]\n{body}\n[End of {name}]")
    return "\n\n".join(blocks)


def split_files(content: str) -> tuple[str, list[Attachment]]:
    """A kept turn's question and its files (:func:`with_files` undone)."""
    files = [Attachment(m.group("name"), m.group("text")) for m in _IN_TURN.finditer(content)]
    return _IN_TURN.sub("", content).strip(), files


def _file_name(name: str) -> str:
    """A file's name fit for a one-line notice: no control characters, no line breaks."""
    return " ".join(_CONTROL.sub("", name).split())[:200] or "your file"


def read_attachment(name: str, data: bytes, max_chars: int = 8000) -> Attachment:
    """``data`` read as text (at most ``max_chars`` of it), or a notice saying why not."""
    name = _file_name(name)
    try:
        text = _read(name, data)
    except _Unreadable as exc:
        return Attachment(name, notice=str(exc))
    except Exception:  # pypdf raises many kinds; a damaged file is the customer's, not a bug
        log.info("cannot read the attachment %r", name, exc_info=True)
        return Attachment(name, notice=FILE_BROKEN.format(name=name))
    text = text.strip()
    if not text:
        return Attachment(name, notice=FILE_NO_TEXT.format(name=name))
    return Attachment(name, text[:max_chars])


class _Unreadable(Exception):
    """A file this module does not read; the message is the customer's notice."""


def _read(name: str, data: bytes) -> str:
    head = data[:1024]
    if b"%PDF-" in head:
        return _lines(_pdf(name, data))
    if head.startswith(_IMAGES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        raise _Unreadable(FILE_IMAGE.format(name=name))
    if head.startswith(_OTHER_BINARY):
        raise _Unreadable(FILE_KIND.format(name=name))
    text = _decode(name, data)
    suffix = name.lower().rpartition(".")[2] if "." in name else ""
    if suffix in ("md", "markdown"):
        return text
    if suffix in ("csv", "tsv"):
        return _table(text, "\t" if suffix == "tsv" else ",") or _lines(text)
    if suffix == "json" or text.lstrip()[:1] in ("{", "["):
        flat = _json(text)
        if flat is not None:
            return flat
    return _lines(text)


def _decode(name: str, data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            # Not UTF-8: a Windows export, most likely.
            text = data.decode("cp1252", errors="replace")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if len(_CONTROL.findall(text)) + text.count("\ufffd") > max(len(text) // 100, 2):
        raise _Unreadable(FILE_KIND.format(name=name))
    return _CONTROL.sub("", text)


def _pdf(name: str, data: bytes) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        try:
            opened = bool(reader.decrypt(""))  # some PDFs are locked with an empty password
        except Exception:
            opened = False
        if not opened:
            raise _Unreadable(FILE_PROTECTED.format(name=name))
    pages = [page.extract_text() or "" for page in list(reader.pages)[:MAX_PAGES]]
    return _CONTROL.sub("", "\n\n".join(pages).replace("\r\n", "\n"))


def _lines(text: str) -> str:
    """Each line a paragraph of its own, but for a line that continues the one before (the
    next line of a wrapped sentence: no end mark before it, a small letter after)."""
    paragraphs: list[str] = []
    for raw in text.split("\n"):
        line = " ".join(raw.split())
        if not line:
            continue
        if paragraphs and not _ENDS_SENTENCE.search(paragraphs[-1]) and line[0].islower():
            paragraphs[-1] = f"{paragraphs[-1]} {line}"
        else:
            paragraphs.append(line)
    return "\n\n".join(paragraphs)


def _table(text: str, delimiter: str) -> str:
    """A CSV as a Markdown table: each row is then read with its column names."""
    rows = [
        [" ".join(cell.replace("|", "/").split()) for cell in row]
        for row in csv.reader(io.StringIO(text), delimiter=delimiter)
        if any(cell.strip() for cell in row)
    ]
    if len(rows) < 2:
        return ""
    header, *body = rows
    head = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    # Tables of a few rows, each with the header: every row is read with its column names
    # however the text is cut into passages.
    return "\n\n".join(
        "\n".join([*head, *("| " + " | ".join(row) + " |" for row in body[at : at + TABLE_ROWS])])
        for at in range(0, len(body), TABLE_ROWS)
    )


def _json(text: str) -> str | None:
    try:
        value = json.loads(text)
        return "\n\n".join(_flatten(value, ""))
    except (ValueError, RecursionError):
        return None


def _flatten(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _flatten(item, f"{path}[{index}]")
    else:
        shown = (
            "null" if value is None else str(value).lower() if isinstance(value, bool) else value
        )
        yield f"{path or 'value'}: {' '.join(str(shown).split())}"


def _size(count: int) -> str:
    for unit, size in (("MB", 1_000_000), ("KB", 1_000)):
        if count >= size:
            return f"{count / size:g} {unit}"
    return f"{count} bytes"
