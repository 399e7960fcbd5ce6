"""Answers grounded in the company's documents: ingest, index, hybrid retrieval, citations.

ingest.py    files (Markdown, text, HTML) → documents → sections along headings
index.py     passages and embeddings in SQLite (kb_* tables beside the conversations)
embed.py     dense vectors from the offline all-MiniLM-L6-v2 model
bm25.py      keyword scores (bm25s), forgiving typos
retrieve.py  both rankings fused by reciprocal rank; a threshold decides "don't know"
cite.py      sources in the prompt, and the "Sources:" footer of an answer
learned.py   snippets staff approved, as documents of the "learned" collection
base.py      Knowledge (blocking) and KnowledgeBase (its own thread, for the service)
"""

from bot.knowledge.base import IngestReport, Knowledge, KnowledgeBase
from bot.knowledge.index import Passage, Source, SourceInfo
from bot.knowledge.retrieve import Hit, Retrieval

__all__ = [
    "Hit",
    "IngestReport",
    "Knowledge",
    "KnowledgeBase",
    "Passage",
    "Retrieval",
    "Source",
    "SourceInfo",
]
