"""`parley report`: what the bot did over a period, and what to fix in the knowledge base.

Reads the SQLite database directly, read-only, so it can run beside a live service (WAL lets
readers and the writer work at once). The questions the bot did not know (or whose answer got a
👎) are the knowledge base's gaps; customers ask one thing many ways, so they are grouped by
meaning (the knowledge base's embedding model, agglomerative clustering from scikit-learn),
the largest group first.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bot.config import Config

__all__ = ["Gap", "Report", "add_parser", "build_report", "format_report", "group", "run"]

log = logging.getLogger(__name__)

#: Questions at least this similar (cosine) on average are one gap.
SAME_GAP = 0.5
#: Distinct wordings grouped at most, the most asked first (clustering takes their square).
MAX_GROUPED = 2000


@dataclass(frozen=True)
class Gap:
    """Questions that ask one thing: the wording asked most, how often, and the others."""

    question: str
    count: int
    others: tuple[str, ...] = ()


@dataclass
class Report:
    days: float
    conversations: int = 0
    questions: int = 0
    answers: int = 0
    dont_knows: int = 0
    failures: int = 0
    handoffs: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    #: The questions that got a 👎 or a don't-know, grouped, the largest group first.
    gaps: list[Gap] = field(default_factory=list)


def group(
    questions: Sequence[str], encode: Callable[[list[str]], np.ndarray] | None = None
) -> list[Gap]:
    """``questions`` grouped by meaning with ``encode`` (unit vectors), else by wording; the
    largest group first."""
    wordings = Counter(" ".join(q.lower().split()) for q in questions)
    distinct = sorted(wordings, key=lambda q: (-wordings[q], q))[:MAX_GROUPED]
    labels = list(range(len(distinct)))
    if encode is not None and len(distinct) >= 2:
        from sklearn.cluster import AgglomerativeClustering

        clustering = AgglomerativeClustering(
            n_clusters=None,
            metric="cosine",
            linkage="average",
            distance_threshold=1 - SAME_GAP,
        )
        try:
            labels = [int(label) for label in clustering.fit_predict(encode(distinct))]
        except Exception as exc:  # a missing embedding model: the report is still worth having
            log.warning("grouping the gaps by wording only: %s", exc)
    members: dict[int, list[str]] = {}
    for label, wording in zip(labels, distinct, strict=True):
        members.setdefault(label, []).append(wording)  # most asked first
    gaps = [
        Gap(found[0], sum(wordings[w] for w in found), tuple(found[1:]))
        for found in members.values()
    ]
    return sorted(gaps, key=lambda gap: (-gap.count, gap.question))


def build_report(
    path: str | Path,
    days: float = 7.0,
    top: int = 10,
    encode: Callable[[list[str]], np.ndarray] | None = None,
) -> Report:
    since = time.time() - days * 86400
    report = Report(days)
    if not Path(path).exists():
        return report
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        one = lambda sql: db.execute(sql, (since,)).fetchone()[0] or 0  # noqa: E731
        report.conversations = one(
            "SELECT COUNT(DISTINCT conversation) FROM messages"
            " WHERE role = 'user' AND created_at >= ?"
        )
        report.questions = one(
            "SELECT COUNT(*) FROM messages WHERE role = 'user' AND created_at >= ?"
        )
        for status, count in db.execute(
            "SELECT status, COUNT(*) FROM messages WHERE role = 'assistant' AND created_at >= ?"
            " GROUP BY status",
            (since,),
        ):
            if status == "complete":
                report.answers = count
            elif status == "dont_know":
                report.dont_knows = count
            else:
                report.failures += count
        report.handoffs = one("SELECT COUNT(*) FROM handoffs WHERE started_at >= ?")
        report.thumbs_up = one(
            "SELECT COUNT(*) FROM feedback WHERE rating = 'up' AND created_at >= ?"
        )
        report.thumbs_down = one(
            "SELECT COUNT(*) FROM feedback WHERE rating = 'down' AND created_at >= ?"
        )
        # The question before each 👎 answer or don't-know.
        rows = db.execute(
            """
            SELECT question FROM (
                SELECT trim(question) AS question FROM feedback
                 WHERE rating = 'down' AND created_at >= :since
                UNION ALL
                SELECT trim((SELECT q.content FROM messages q
                              WHERE q.conversation = a.conversation AND q.role = 'user'
                                AND q.id < a.id ORDER BY q.id DESC LIMIT 1))
                  FROM messages a
                 WHERE a.role = 'assistant' AND a.status = 'dont_know' AND a.created_at >= :since
            ) WHERE question IS NOT NULL AND question != ''
            """,
            {"since": since},
        ).fetchall()
        report.gaps = group([question for (question,) in rows], encode)[:top]
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
    finally:
        db.close()
    return report


def _rate(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def format_report(report: Report) -> str:
    rated = report.thumbs_up + report.thumbs_down
    lines = [
        f"Parley report, last {report.days:g} days",
        "",
        f"  conversations        {report.conversations}",
        f"  questions            {report.questions}",
        f"  answers              {report.answers}",
        f"  don't-knows          {report.dont_knows}"
        f"  ({_rate(report.dont_knows, report.questions)} of questions)",
        f"  failed answers       {report.failures}",
        f"  handoffs to a human  {report.handoffs}",
        f"  👍 / 👎              {report.thumbs_up} / {report.thumbs_down}"
        f"  ({_rate(report.thumbs_up, rated)} positive)",
    ]
    if report.gaps:
        lines += [
            "",
            "Gaps in the knowledge base (questions it didn't know or got a 👎 for, similar ones"
            " together, the largest group first):",
        ]
        for gap in report.gaps:
            lines.append(f"  {gap.count:>4}  {gap.question}")
            lines += [f"        · {other}" for other in gap.others[:3]]
            if len(gap.others) > 3:
                lines.append(f"        · and {len(gap.others) - 3} more")
    return "\n".join(lines)


def add_parser(commands: Any) -> None:
    report = commands.add_parser("report", help="what the bot did lately, and what to improve")
    report.add_argument("--days", type=float, default=7.0, help="the period to report on")


def run(config: Config, args: argparse.Namespace) -> int:
    from bot.knowledge.embed import Embedder

    # (The embedding model loads only if there are questions to group.)
    encode = Embedder(config.knowledge.embedding_model).encode
    print(format_report(build_report(config.store.path, args.days, encode=encode)))
    return 0
