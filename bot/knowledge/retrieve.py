"""Hybrid retrieval: BM25 and dense embeddings, fused by reciprocal rank.

Ranks, not scores, are fused (BM25 scores and cosine similarities live on different scales):
each passage scores ``sum(1 / (RRF_K + rank))`` over the two rankings. Whether the best
passages answer the question at all is judged on absolute scales instead (:mod:`scope`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from bot.knowledge.bm25 import Bm25Index
from bot.knowledge.grounding import Extract
from bot.knowledge.index import Passage, Source
from bot.knowledge.scope import Judgement

__all__ = ["RRF_K", "Hit", "Retrieval", "Retriever"]

#: The usual constant from Cormack et al.: damps the difference between the very top ranks.
RRF_K = 60
#: How much each ranking counts. On the evaluation set (bench/retrieval.py) keywords add recall
#: (an exact product word, an error code) but, counted equally, push the better dense order
#: down: customers rarely use the documents' own words.
DENSE_WEIGHT = 1.0
KEYWORD_WEIGHT = 0.5


@dataclass(frozen=True, slots=True)
class Hit:
    passage: Passage
    score: float  # fused reciprocal-rank score
    similarity: float  # cosine similarity to the question, -1..1
    bm25: float


@dataclass(frozen=True, slots=True)
class Retrieval:
    """The passages found for a question, best first; ``confident`` when the knowledge base
    seems to answer the question (``judgement`` says why); ``extract`` the sentences
    of those passages that answer it (outside the "free" answer mode)."""

    query: str
    hits: tuple[Hit, ...]
    confident: bool
    extract: Extract | None = None
    judgement: Judgement | None = None  # what decided ``confident``

    @property
    def best_similarity(self) -> float:
        return max((hit.similarity for hit in self.hits), default=-1.0)

    def sources(self) -> list[Source]:
        """The distinct documents of the hits, in rank order."""
        seen: dict[Source, None] = {}
        for hit in self.hits:
            seen.setdefault(hit.passage.source, None)
        return list(seen)


class Retriever:
    """An immutable in-memory snapshot of the index; searching it is cheap and blocking."""

    def __init__(
        self,
        passages: Sequence[Passage],
        vectors: np.ndarray,
        known: Callable[[str], bool] = lambda word: False,
    ) -> None:
        self.passages = list(passages)
        self.vectors = vectors
        self.keywords = Bm25Index([p.indexed_text for p in self.passages], known)
        self.collections = np.array([p.collection for p in self.passages], dtype=object)

    def __len__(self) -> int:
        return len(self.passages)

    def search(
        self,
        query: str,
        query_vector: np.ndarray,
        k: int,
        collections: Collection[str] = (),
        depth: int = 50,
    ) -> list[Hit]:
        """The ``k`` best passages for ``query``; only from ``collections`` when given."""
        if not self.passages or k <= 0:
            return []
        similarity = self.vectors @ query_vector.astype(np.float32)
        keyword = self.keywords.scores(query)
        allowed = np.ones(len(self.passages), dtype=bool)
        if collections:
            allowed = np.isin(self.collections, list(collections))
        fused = np.zeros(len(self.passages), dtype=np.float64)
        for scores, weight, needs_match in (
            (similarity, DENSE_WEIGHT, False),
            (keyword, KEYWORD_WEIGHT, True),
        ):
            eligible = allowed & (scores > 0) if needs_match else allowed
            ranked = np.where(eligible, scores, -np.inf)
            order = [i for i in np.argsort(-ranked, kind="stable")[:depth] if eligible[i]]
            for rank, index in enumerate(order, start=1):
                fused[index] += weight / (RRF_K + rank)
        best = [i for i in np.argsort(-fused, kind="stable")[:k] if fused[i] > 0]
        return [
            Hit(self.passages[i], float(fused[i]), float(similarity[i]), float(keyword[i]))
            for i in best
        ]
