"""`parley report`: what the bot did over a period, and what to fix in the knowledge base.

Reads the SQLite database directly, read-only, so it can run beside a live service (WAL lets
readers and the writer work at once).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Report", "build_report", "format_report"]


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
    #: (question, how often it got a 👎 or a don't-know), most frequent first.
    to_improve: list[tuple[str, int]] = field(default_factory=list)


def build_report(path: str | Path, days: float = 7.0, top: int = 10) -> Report:
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
        # The question before each 👎 answer or don't-know, grouped by its wording.
        rows = db.execute(
            """
            SELECT question, COUNT(*) AS n FROM (
                SELECT lower(trim(question)) AS question FROM feedback
                 WHERE rating = 'down' AND created_at >= :since
                UNION ALL
                SELECT lower(trim((SELECT q.content FROM messages q
                                    WHERE q.conversation = a.conversation AND q.role = 'user'
                                      AND q.id < a.id ORDER BY q.id DESC LIMIT 1)))
                  FROM messages a
                 WHERE a.role = 'assistant' AND a.status = 'dont_know' AND a.created_at >= :since
            ) WHERE question IS NOT NULL AND question != ''
            GROUP BY question ORDER BY n DESC, question LIMIT :top
            """,
            {"since": since, "top": top},
        ).fetchall()
        report.to_improve = [(question, count) for question, count in rows]
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
    if report.to_improve:
        lines += ["", "Questions to improve the knowledge base for (👎 or don't-know):"]
        lines += [f"  {count:>4}  {question}" for question, count in report.to_improve]
    return "\n".join(lines)
