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


#: Page furniture, not content: what a help center repeats on every page.
_NOT_CONTENT = (
    "head",
    "title",
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "footer",
    "aside",
)


def _html(text: str) -> tuple[str, str, list[Section]]:
    """An HTML page's title, canonical URL and sections: the page as Markdown (markdownify,
    headings kept as headings, emphasis and links as their words), split as Markdown is."""
    from bs4 import BeautifulSoup
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(text, "html.parser")
    url = ""
    canonical = soup.find("link", rel="canonical")
    og_url = soup.find("meta", property="og:url")
    if canonical is not None and canonical.get("href"):
        url = str(canonical["href"])
    elif og_url is not None and og_url.get("content"):
        url = str(og_url["content"])
    page_title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for junk in soup(_NOT_CONTENT):
        junk.decompose()
    converter = MarkdownConverter(
        heading_style="ATX", bullets="-", strip=["a", "b", "strong", "i", "em", "img"]
    )
    title, _, sections = _markdown(converter.convert_soup(soup.body or soup))
    return title or page_title, url, sections


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
