"""`parley report`: what the bot did over a period, and what to fix in the knowledge base.

Reads through the store the service writes (SQLite or Redis), so it can run beside a live
service. The questions the bot did not know (or whose answer got a
👎) are the knowledge base's gaps; customers ask one thing many ways, so they are grouped by
meaning (the knowledge base's embedding model, agglomerative clustering from scikit-learn),
the largest group first.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bot.config import Config
from bot.storage import build_store
from bot.storage.base import Draft, Snippet, Store

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
    #: Answers written in shadow (policy autonomy), not posted; the latest, newest first.
    shadowed: int = 0
    shadow: list[Draft] = field(default_factory=list)
    #: Drafts for staff, by what became of them ("pending": not decided yet).
    drafts: Counter[str] = field(default_factory=Counter)
    #: The median time staff took to decide on a draft, in seconds (None: none decided).
    decision_seconds: float | None = None
    #: Handoffs a staff member claimed, and the median time they took to, in seconds.
    claimed: int = 0
    claim_seconds: float | None = None
    #: Snippets proposed from resolved conversations, by what became of them.
    snippets: Counter[str] = field(default_factory=Counter)
    #: The snippets learned (whenever proposed), the most cited first.
    learned: list[Snippet] = field(default_factory=list)


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


async def build_report(
    store: Store,
    days: float = 7.0,
    top: int = 10,
    encode: Callable[[list[str]], np.ndarray] | None = None,
) -> Report:
    """What ``store`` holds of the last ``days`` days; ``top`` gaps at most."""
    since = datetime.now(UTC) - timedelta(days=days)
    report = Report(days)
    asked: list[str] = []
    for transcript in await store.transcripts():
        question = ""
        talked = False
        for turn in transcript.turns:
            recent = turn.created_at >= since
            if turn.role == "user":
                question = turn.content.strip()
                report.questions += recent
                talked = talked or recent
            elif turn.role == "assistant" and recent:
                if turn.status == "complete":
                    report.answers += 1
                elif turn.status == "dont_know":
                    report.dont_knows += 1
                    # The question before each don't-know is a gap.
                    asked += [question] if question else []
                else:
                    report.failures += 1
        report.conversations += talked
    report.handoffs = sum(when >= since for when in await store.handoffs_started())
    claims = [c for c in await store.claims() if c.started_at >= since]
    report.claimed = len(claims)
    if claims:
        waits = [(c.claimed_at - c.started_at).total_seconds() for c in claims]
        report.claim_seconds = float(np.median(waits))
    for rated in await store.ratings():
        if rated.created_at >= since:
            report.thumbs_up += rated.rating == "up"
            report.thumbs_down += rated.rating == "down"
            if rated.rating == "down" and rated.question.strip():
                asked.append(rated.question.strip())
    # In a thread: embedding many questions takes seconds, and the console calls this on the
    # service's own event loop.
    report.gaps = (await asyncio.to_thread(group, asked, encode))[:top]
    drafts = [d for d in await store.drafts() if d.created_at >= since]
    shadow = [d for d in drafts if d.state == "shadow"]
    report.shadowed = len(shadow)
    report.shadow = shadow[::-1][:top]
    report.drafts = Counter(d.state for d in drafts if d.state != "shadow")
    waits = [
        (d.decided_at - d.created_at).total_seconds()
        for d in drafts
        if d.decided_at is not None and d.state != "expired"
    ]
    report.decision_seconds = float(np.median(waits)) if waits else None
    snippets = await store.snippets()
    report.snippets = Counter(s.state for s in snippets if s.created_at >= since)
    report.learned = sorted((s for s in snippets if s.learned), key=lambda s: -s.cited)[:top]
    return report


def _one_line(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


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
        f"  handoffs to a human  {report.handoffs}"
        + (
            f"  ({report.claimed} claimed, median {report.claim_seconds / 60:.1f} min to claim)"
            if report.claim_seconds is not None
            else ""
        ),
        f"  👍 / 👎              {report.thumbs_up} / {report.thumbs_down}"
        f"  ({_rate(report.thumbs_up, rated)} positive)",
    ]
    if report.drafts:
        states = ("approved", "edited", "rejected", "expired", "pending")
        counts = ", ".join(f"{report.drafts[state]} {state}" for state in states)
        lines.append(f"  drafts for staff     {counts}")
        if report.decision_seconds is not None:
            lines.append(f"  time to decide       {report.decision_seconds / 60:.1f} min (median)")
    if report.snippets:
        decided = ("approved", "edited", "rejected", "pending")
        counts = ", ".join(f"{report.snippets[state]} {state}" for state in decided)
        lines.append(f"  snippets proposed    {sum(report.snippets.values())}: {counts}")
    if report.learned:
        lines += ["", "Learned from staff (the most cited first):"]
        for snippet in report.learned:
            lines.append(f"  {snippet.cited:>4}  {_one_line(snippet.question)}")
    if report.shadowed:
        lines += [
            "",
            f"Answers written in shadow, not posted ({report.shadowed}; the latest first):",
        ]
        for draft in report.shadow:
            lines.append(f"  Q: {_one_line(draft.question)}")
            lines.append(f"  A: {_one_line(draft.answer)}")
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
    if not config.store.url and not Path(config.store.path).exists():
        report = Report(args.days)  # nothing stored yet; opening would create the file
    else:
        report = asyncio.run(_read(config, args.days, encode))
    print(format_report(report))
    return 0


async def _read(config: Config, days: float, encode: Callable[[list[str]], np.ndarray]) -> Report:
    store = build_store(config)
    await store.open()
    try:
        return await build_report(store, days, encode=encode)
    finally:
        await store.close()
