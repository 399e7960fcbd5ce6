"""Reading documents into passages: Markdown, plain text and HTML, split along headings.

A passage is one section of one document: the text under a heading, with the document's title,
where it came from (a path, or the URL the document declares) and the heading it sits under.
Sections longer than :data:`MAX_CHARS` are cut at paragraph boundaries, so that a passage stays
a readable unit for the prompt and for the embedding model (which reads 256 tokens).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["SUFFIXES", "Document", "Section", "collect", "parse", "read_document"]

MARKDOWN = frozenset({".md", ".markdown", ".mdown"})
TEXT = frozenset({".txt", ".text"})
HTML = frozenset({".html", ".htm"})
SUFFIXES = MARKDOWN | TEXT | HTML
MAX_CHARS = 1200

_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^(```|~~~)")
_FRONT = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*\n", re.S)


@dataclass(frozen=True, slots=True)
class Section:
    heading: str
    text: str


@dataclass(frozen=True, slots=True)
class Document:
    path: str
    title: str
    url: str
    digest: str
    sections: tuple[Section, ...]


def collect(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Every readable document under ``paths`` (folders recursively, hidden ones skipped),
    in a stable order. A path that does not exist raises FileNotFoundError."""
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.is_file() and child.suffix.lower() in SUFFIXES and not hidden:
                    yield child
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"{raw}: no such file or folder")


def read_document(path: Path, shown_as: str | None = None) -> Document:
    """Read and split one file; ``shown_as`` is the path a citation shows (default: ``path``)."""
    raw = path.read_bytes()
    return parse(
        raw.decode("utf-8", errors="replace"),
        path.suffix.lower(),
        shown_as or str(path),
        hashlib.sha256(raw).hexdigest(),
        fallback_title=_title_from_name(path),
    )


def parse(text: str, suffix: str, path: str, digest: str, fallback_title: str) -> Document:
    if suffix in HTML:
        title, url, sections = _html(text)
    elif suffix in MARKDOWN:
        title, url, sections = _markdown(text)
    else:
        title, url, sections = "", "", _plain(text)
    title = title or fallback_title
    pieces = tuple(
        Section(section.heading, chunk)
        for section in sections
        for chunk in _chunks(section.text)
        if chunk
    )
    return Document(path, title, url, digest, pieces)


def _title_from_name(path: Path) -> str:
    words = re.sub(r"[-_]+", " ", path.stem).strip()
    return words[:1].upper() + words[1:]


def _markdown(text: str) -> tuple[str, str, list[Section]]:
    text = text.replace("\r\n", "\n")
    meta: dict[str, str] = {}
    front = _FRONT.match(text)
    if front:
        for line in front.group(1).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                meta[key.strip().lower()] = value.strip().strip("\"'")
        text = text[front.end() :]
    title = meta.get("title", "")
    sections: list[Section] = []
    heading, fenced = "", False
    lines: list[str] = []
    for line in text.split("\n"):
        if _FENCE.match(line.strip()):
            fenced = not fenced
        match = None if fenced else _ATX.match(line)
        if match is None:
            lines.append(line)
            continue
        level, name = len(match.group(1)), match.group(2).strip()
        if level == 1 and not title:
            # The document's title, not a section of its own.
            title = name
            if "\n".join(lines).strip():
                sections.append(Section(heading, _tidy("\n".join(lines))))
            lines = []
            continue
        sections.append(Section(heading, _tidy("\n".join(lines))))
        heading, lines = name, []
    sections.append(Section(heading, _tidy("\n".join(lines))))
    return title, meta.get("url", ""), [s for s in sections if s.text]


def _plain(text: str) -> list[Section]:
    return [Section("", _tidy(text.replace("\r\n", "\n")))]


class _HtmlSections(HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template", "nav", "footer"})
    _HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
    _BLOCKS = frozenset({"p", "div", "li", "br", "tr", "section", "article", "ul", "ol", "table"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.h1 = ""
        self.url = ""
        self.sections: list[Section] = []
        self._heading = ""
        self._buffer: list[str] = []
        self._capture: list[str] | None = None
        self._capture_tag = ""
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "link" and values.get("rel", "").lower() == "canonical":
            self.url = values.get("href", "")
        elif tag == "meta" and values.get("property", "").lower() == "og:url" and not self.url:
            self.url = values.get("content", "")
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._HEADINGS or tag == "title":
            self._capture, self._capture_tag = [], tag
        elif tag in self._BLOCKS:
            self._buffer.append("\n")
        if tag == "li":
            self._buffer.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag == self._capture_tag and self._capture is not None:
            name = " ".join("".join(self._capture).split())
            self._capture, self._capture_tag = None, ""
            if tag == "title":
                self.title = name
            elif tag == "h1" and not self.h1:
                self.h1 = name
                self._flush()
            else:
                self._flush()
                self._heading = name
        elif tag in self._BLOCKS:
            self._buffer.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if self._capture is not None:
            self._capture.append(data)
        else:
            self._buffer.append(data)

    def _flush(self) -> None:
        text = _tidy("".join(self._buffer))
        if text:
            self.sections.append(Section(self._heading, text))
        self._buffer = []

    def close(self) -> None:
        super().close()
        self._flush()


def _html(text: str) -> tuple[str, str, list[Section]]:
    parser = _HtmlSections()
    parser.feed(text)
    parser.close()
    return parser.h1 or parser.title, parser.url, parser.sections


_BLOCK_LINE = re.compile(r"^(?:[|>*+-]|\d+[.)] |```|~~~)")


def _tidy(text: str) -> str:
    """Collapse runs of spaces and blank lines, and rejoin hard-wrapped lines (a soft line
    break is a space); keep paragraph breaks, list items and table rows on their own lines."""
    lines = [" ".join(line.split()) for line in text.split("\n")]
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        if not line:
            if current:
                paragraphs.append("\n".join(current))
                current = []
        elif current and not _BLOCK_LINE.match(line) and not current[-1].startswith("|"):
            current[-1] = f"{current[-1]} {line}"
        else:
            current.append(line)
    if current:
        paragraphs.append("\n".join(current))
    return "\n\n".join(paragraphs)


def _chunks(text: str) -> list[str]:
    if len(text) <= MAX_CHARS:
        return [text]
    chunks: list[str] = []
    current = ""
    for paragraph in text.split("\n\n"):
        while len(paragraph) > MAX_CHARS:
            # One enormous paragraph: cut at the last sentence end or space before the limit.
            cut = max(paragraph.rfind(". ", 0, MAX_CHARS) + 1, paragraph.rfind(" ", 0, MAX_CHARS))
            cut = cut if cut > MAX_CHARS // 2 else MAX_CHARS
            if current:
                chunks.append(current)
                current = ""
            chunks.append(paragraph[:cut].strip())
            paragraph = paragraph[cut:].strip()
        if current and len(current) + 2 + len(paragraph) > MAX_CHARS:
            chunks.append(current)
            current = paragraph
        else:
            current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        chunks.append(current)
    return chunks
