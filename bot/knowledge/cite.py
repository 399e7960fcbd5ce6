"""How passages enter the prompt, and how an answer names its sources.

The core writes sources in one neutral form, Markdown links (``[title](url)``), which Discord
and the web chat render as they are and the Slack adapter turns into ``<url|title>``; a
document without a URL is cited by title and path, as plain text. An answer quoting a section
names it ("Title › Heading") and links to its heading's anchor (``url#heading``).
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.knowledge.grounding import Extract, compose, section_anchor
from bot.knowledge.index import Source
from bot.knowledge.learned import PREFIX
from bot.knowledge.retrieve import Retrieval

__all__ = [
    "FOOTER_HEADING",
    "cited_sources",
    "format_sources",
    "grounded_prompt",
    "knowledge_prompt",
    "strip_sources",
]

FOOTER_HEADING = "Sources:"
INSTRUCTIONS = (
    "Answer the customer's question using only the numbered sources below. If they do not"
    " contain the answer, say that you don't know and offer to connect the customer with a"
    " human. Never invent policies, prices, dates, links or contact details."
)
GROUNDED_INSTRUCTIONS = (
    "Answer the customer's question in one to three sentences, using only the facts below,"
    " with their numbers, names and links exactly as written. Do not add anything else."
)
#: Cites a learned snippet that has no link back to its conversation.
LEARNED_FROM = "from our support team"
#: A further document is cited only when it is about as close to the question as the best one.
CITE_MARGIN = 0.08


def numbered(retrieval: Retrieval) -> list[tuple[int, Source, list[str]]]:
    """The retrieved documents numbered in rank order, each with its passages (as text)."""
    groups: dict[Source, list[str]] = {}
    for hit in retrieval.hits:
        heading = f"({hit.passage.heading}) " if hit.passage.heading else ""
        groups.setdefault(hit.passage.source, []).append(heading + hit.passage.text)
    return [(n, source, texts) for n, (source, texts) in enumerate(groups.items(), start=1)]


def knowledge_prompt(system_prompt: str, retrieval: Retrieval, keep: int | None = None) -> str:
    """The system prompt with the first ``keep`` numbered sources (all by default)."""
    blocks = [
        f"[{n}] {source.title}\n" + "\n".join(texts)
        for n, source, texts in numbered(retrieval)[:keep]
    ]
    return "\n\n".join([system_prompt, INSTRUCTIONS, *blocks])


def cited_sources(retrieval: Retrieval, max_sources: int, min_score: float) -> list[Source]:
    """The documents an answer lists: the best one, and others nearly as close to the
    question (each above the threshold), at most ``max_sources``."""
    best: dict[Source, float] = {}
    for hit in retrieval.hits:
        source = hit.passage.source
        best[source] = max(best.get(source, -1.0), hit.similarity)
    ranked = retrieval.sources()
    if not ranked or max_sources <= 0:
        return []
    top = max(best.values())
    chosen = [ranked[0]]
    for source in ranked[1:]:
        if len(chosen) >= max_sources:
            break
        if best[source] >= min_score and best[source] >= top - CITE_MARGIN:
            chosen.append(source)
    return chosen


def _escape(title: str) -> str:
    return title.replace("[", "(").replace("]", ")")


def format_sources(sources: Sequence[Source | tuple[Source, str]]) -> str:
    """The plain-text footer an answer ends with ("" without sources): one line a document,
    given alone or with the heading of the section quoted (linked to the heading's anchor)."""
    lines: list[str] = []
    listed: set[Source] = set()
    for item in sources:
        source, heading = item if isinstance(item, tuple) else (item, "")
        if source in listed:
            continue
        listed.add(source)
        label = f"{source.title} › {heading}" if heading else source.title
        if source.url:
            anchor = f"#{section_anchor(heading)}" if heading and "#" not in source.url else ""
            lines.append(f"- [{_escape(label)}]({source.url}{anchor})")
        else:
            shown = LEARNED_FROM if source.path.startswith(PREFIX) else source.path
            lines.append(f"- {label} ({shown})")
    return "\n".join([FOOTER_HEADING, *lines]) if lines else ""


def grounded_prompt(system_prompt: str, found: Extract) -> str:
    """The system prompt with only the sentences that answer the question, as one source."""
    return "\n\n".join([system_prompt, GROUNDED_INSTRUCTIONS, compose(found)])


def strip_sources(text: str) -> str:
    """An answer without its sources footer (for the prompt's history)."""
    marker = f"\n\n{FOOTER_HEADING}\n- "
    at = text.rfind(marker)
    return text[:at] if at >= 0 else text
