"""Knowledge-base retrieval: quality on the sample knowledge base, and speed at 1,000 passages.

    python -m bench.retrieval [--kb config/knowledge] [--questions tests/data/kb_questions.jsonl]

Quality is measured on the evaluation set (customer questions, each with the article that
answers it, and questions the knowledge base cannot answer):

- hit@1, hit@3: the right article is the first / among the first three documents retrieved;
- citation: the reply's "Sources:" footer names the right article — each question goes through
  the real conversation manager, with a stand-in model (which sources a reply lists does not
  depend on what the model writes);
- don't-know: out-of-scope questions get the fixed don't-know answer (and, as a cost, how often
  an answerable question gets it too);
- latency: one search (embedding the question, BM25, dense, fusion) over 1,000 passages.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

import numpy as np

from bot.config import BotConfig, KnowledgeConfig, ModelConfig
from bot.core.answer import Answer
from bot.core.conversation import ConversationManager
from bot.events import Event
from bot.generation.base import Backend, ChatMessage, GenerationParams
from bot.knowledge.base import Knowledge, KnowledgeBase
from bot.knowledge.cite import FOOTER_HEADING
from bot.knowledge.index import Passage, Source
from bot.knowledge.retrieve import Retriever
from bot.storage.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"hit@1": 0.75, "hit@3": 0.90, "citation": 0.85, "dont_know_oos": 0.80}
LATENCY_TARGET_MS = 50.0
PASSAGES = 1000


class _StandIn(Backend):
    """Answers every question with one sentence: the bench measures what is around it."""

    context_window = 2048

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(len(m.content) // 4 + 4 for m in messages)

    def count_text(self, text: str) -> int:
        return len(text) // 4

    def truncate(self, text: str, max_tokens: int) -> str:
        return text[: max_tokens * 4]

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[str, None]:
        yield "Here is what our help centre says."


class _Collected:
    def __init__(self) -> None:
        self.text = ""

    async def start(self) -> None:
        pass

    async def update(self, text: str) -> None:
        pass

    async def finish(self, text: str) -> None:
        self.text = text

    async def fail(self, message: str) -> None:
        self.text = message


def _load(path: Path) -> list[tuple[str, str | None]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(row["question"], row["article"]) for row in rows]


def _article(source: Source) -> str:
    return Path(source.path).name


async def _replies(
    config: KnowledgeConfig, db: str, knowledge: Knowledge, questions: list[str]
) -> list[tuple[Answer, str]]:
    base = KnowledgeBase(config, db, embedder=knowledge.embedder)
    store = SQLiteStore(db)
    await store.open()
    manager = ConversationManager(store, _StandIn(), BotConfig(), ModelConfig(), knowledge=base)
    await manager.start()
    results = []
    try:
        for n, question in enumerate(questions):
            reply = _Collected()
            event = Event(platform="bench", channel=str(n), user="customer", text=question)
            answer = await manager.submit(event, question, reply)
            results.append((answer, reply.text))
    finally:
        await manager.close()
        await store.close()
    return results


def _listed_titles(text: str) -> str:
    at = text.rfind(f"\n{FOOTER_HEADING}\n")
    return text[at:] if at >= 0 else ""


def _synthetic(knowledge: Knowledge, count: int) -> Retriever:
    """``count`` passages: the real ones, then recombinations of their sentences (with mixed
    vectors), so that BM25 and the dense search work on realistic text and vocabulary."""
    real = knowledge.retriever
    passages, vectors = list(real.passages), [real.vectors]
    rng = np.random.default_rng(0)
    sentences = [s for p in real.passages for s in p.text.split(". ") if s]
    extra = []
    for n in range(count - len(passages)):
        picks = rng.choice(len(real.passages), size=3, replace=False)
        text = ". ".join(sentences[i] for i in rng.choice(len(sentences), size=6))
        source = Source(f"Synthetic article {n}", f"synthetic/{n}.md")
        passages.append(Passage(-n - 1, source, "Section", text))
        mix = real.vectors[picks].sum(axis=0) + rng.normal(0, 0.05, real.vectors.shape[1])
        extra.append(mix / np.linalg.norm(mix))
    if extra:
        vectors.append(np.asarray(extra, dtype=np.float32))
    return Retriever(passages, np.concatenate(vectors))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retrieval", description=__doc__)
    parser.add_argument("--kb", default=str(ROOT / "config" / "knowledge"))
    parser.add_argument("--questions", default=str(ROOT / "tests" / "data" / "kb_questions.jsonl"))
    args = parser.parse_args(argv)
    rows = _load(Path(args.questions))
    answerable = [(q, a) for q, a in rows if a]
    outside = [q for q, a in rows if not a]

    with tempfile.TemporaryDirectory() as folder:
        db = str(Path(folder) / "bench.db")
        config = dataclasses.replace(KnowledgeConfig(), paths=[args.kb])
        knowledge = Knowledge(config, db)
        knowledge.open()
        began = time.perf_counter()
        report = knowledge.refresh()
        ingest_s = time.perf_counter() - began

        ranks: list[list[str]] = []
        for question, _ in answerable:
            ranks.append([_article(s) for s in knowledge.search(question, k=10).sources()])
        hit1 = statistics.mean(r[:1] == [a] for r, (_, a) in zip(ranks, answerable, strict=True))
        hit3 = statistics.mean(a in r[:3] for r, (_, a) in zip(ranks, answerable, strict=True))

        replies = asyncio.run(_replies(config, db, knowledge, [q for q, _ in rows]))
        by_question = dict(zip([q for q, _ in rows], replies, strict=True))
        cited, listed = [], []
        for question, article in answerable:
            answer, text = by_question[question]
            titles = {s.title: _article(s) for s in answer.sources}
            footer = _listed_titles(text)
            cited.append(any(name == article and title in footer for title, name in titles.items()))
            listed.append(len(answer.sources))
        citation = statistics.mean(cited)
        dont_know_oos = statistics.mean(by_question[q][0].outcome == "dont_know" for q in outside)
        dont_know_in = statistics.mean(
            by_question[q][0].outcome == "dont_know" for q, _ in answerable
        )

        sweep = []
        best = {q: knowledge.search(q).best_similarity for q, _ in rows}
        for threshold in (0.30, 0.35, 0.40, 0.45, 0.50):
            sweep.append(
                (
                    threshold,
                    statistics.mean(best[q] < threshold for q in outside),
                    statistics.mean(best[q] < threshold for q, _ in answerable),
                )
            )

        knowledge.retriever = _synthetic(knowledge, PASSAGES)
        questions = [q for q, _ in rows]
        for question in questions[:10]:  # warm-up
            knowledge.search(question)
        timings = []
        for question in questions * 3:
            began = time.perf_counter()
            knowledge.search(question)
            timings.append((time.perf_counter() - began) * 1000)
        knowledge.close()

    timings.sort()
    p50 = timings[len(timings) // 2]
    p95 = timings[int(len(timings) * 0.95)]
    sources = len(report.added)
    print(
        f"Knowledge base: {sources} articles, {report.passages} passages"
        f" (ingested and embedded in {ingest_s:.1f} s); {len(answerable)} answerable and"
        f" {len(outside)} out-of-scope questions; top_k={config.top_k},"
        f" min_score={config.min_score}, max_sources={config.max_sources}"
    )
    print()
    print(f"| {'measure':<42} | {'value':>8} | {'target':>8} | {'':<4} |")
    print(f"|{'-' * 44}|{'-' * 10}:|{'-' * 10}:|{'-' * 6}|")
    table = [
        ("hit@1 (right article first)", hit1, TARGETS["hit@1"], True),
        ("hit@3 (right article in the first three)", hit3, TARGETS["hit@3"], True),
        ("correct citation (listed under Sources:)", citation, TARGETS["citation"], True),
        ("don't-know on out-of-scope questions", dont_know_oos, TARGETS["dont_know_oos"], True),
        ("don't-know on answerable questions", dont_know_in, None, False),
    ]
    for name, value, target, higher in table:
        goal = f"≥ {target:.2f}" if target is not None else "low"
        ok = "" if target is None else ("ok" if (value >= target) == higher else "MISS")
        print(f"| {name:<42} | {value:>8.2f} | {goal:>8} | {ok:<4} |")
    print(f"| {'sources listed per answer (mean)':<42} | {statistics.mean(listed):>8.2f} |", end="")
    print(f" {'':>8} | {'':<4} |")
    ok = "ok" if p95 <= LATENCY_TARGET_MS else "MISS"
    for name, value, mark in (
        (f"search latency p50, {PASSAGES:,} passages (ms)", p50, ""),
        (f"search latency p95, {PASSAGES:,} passages (ms)", p95, ok),
        (f"search latency max, {PASSAGES:,} passages (ms)", timings[-1], ""),
    ):
        goal = f"≤ {LATENCY_TARGET_MS:.0f}" if mark else ""
        print(f"| {name:<42} | {value:>8.1f} | {goal:>8} | {mark:<4} |")
    print()
    print('min_score sweep (share answered "don\'t know"):')
    print(f"| {'min_score':>9} | {'out-of-scope':>12} | {'answerable':>10} |")
    print(f"|{'-' * 10}:|{'-' * 13}:|{'-' * 11}:|")
    for threshold, oos, inside in sweep:
        print(f"| {threshold:>9.2f} | {oos:>12.2f} | {inside:>10.2f} |")
    misses = [(q, a, r[:3]) for (q, a), r in zip(answerable, ranks, strict=True) if a not in r[:1]]
    if misses:
        print()
        print("Not ranked first:")
        for question, article, top in misses:
            print(f"  {question!r}: wanted {article}, got {', '.join(top)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
