"""The console's view of the knowledge base: each document, when it was ingested, and how many
answers cited it; and the newest ``parley eval`` runs."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.knowledge.base import KnowledgeBase
from bot.knowledge.cite import FOOTER_HEADING
from bot.knowledge.index import SourceInfo
from bot.storage.base import Store

__all__ = ["Document", "EvalRun", "documents", "eval_runs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Document:
    info: SourceInfo
    ingested: datetime
    #: Stored answers whose "Sources:" footer names this document.
    cited: int


async def documents(knowledge: KnowledgeBase, store: Store) -> list[Document]:
    """The knowledge base's documents, the most cited first."""
    footers = [
        turn.content.rsplit(FOOTER_HEADING, 1)[1]
        for transcript in await store.transcripts()
        for turn in transcript.turns
        if turn.role == "assistant" and FOOTER_HEADING in turn.content
    ]
    found = []
    for info in await knowledge.sources():
        # An answer cites a document by its link, or by its title when it has none.
        mark = info.url or info.title
        cited = sum(mark in footer for footer in footers) if mark else 0
        found.append(Document(info, datetime.fromtimestamp(info.ingested_at, UTC), cited))
    return sorted(found, key=lambda d: (-d.cited, d.info.title.casefold()))


@dataclass(frozen=True)
class EvalRun:
    name: str
    when: str
    figures: dict[str, float]
    questions: list[dict[str, Any]]

    @property
    def passed(self) -> int:
        return sum(bool(q.get("ok")) for q in self.questions)


def eval_runs(folder: Path) -> list[EvalRun]:
    """Every ``eval.json`` under ``folder`` (what ``parley eval --out`` writes), newest first;
    one that cannot be read is left out with a log line."""
    runs = []
    for path in sorted(folder.glob("**/eval.json")) if folder.is_dir() else []:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            runs.append(
                EvalRun(
                    str(path.parent.relative_to(folder)) if path.parent != folder else ".",
                    str(document["when"]),
                    {str(k): float(v) for k, v in document["figures"].items()},
                    list(document["questions"]),
                )
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("console: cannot read %s: %s", path, exc)
    return sorted(runs, key=lambda run: run.when, reverse=True)
