"""The knowledge base: ingesting documents, keeping them current, and finding passages.

:class:`Knowledge` is the blocking whole (the CLI and the bench use it directly);
:class:`KnowledgeBase` runs one on its own thread for the service, so that SQLite, tokenizing
and the embedding model never touch the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import re
import sysconfig
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from bot.config import KnowledgeConfig
from bot.events import Attachment
from bot.knowledge.cite import CITE_MARGIN
from bot.knowledge.embed import Embedder
from bot.knowledge.grounding import Extract, Sentence, SentenceScorer, choose, question_parts
from bot.knowledge.index import Passage, PassageIndex, Source, SourceInfo
from bot.knowledge.ingest import Document, collect, parse, read_document
from bot.knowledge.learned import LEARNED, PREFIX, Learned, contradiction, document
from bot.knowledge.learned import key as learned_key
from bot.knowledge.retrieve import Hit, Retrieval, Retriever
from bot.knowledge.scope import Judgement, Scope, coverage, off_topic_examples
from bot.knowledge.site import Crawl, Page, fetch_site, site_prefix

__all__ = ["IngestReport", "Knowledge", "KnowledgeBase", "resolve"]

log = logging.getLogger(__name__)

T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Where an installed package keeps ``config/`` (pyproject.toml's data-files).
INSTALLED_ROOT = Path(sysconfig.get_path("data")) / "share" / "parley"
DEFAULT_COLLECTION = "default"
#: Where a customer's file is cited from (a citation names the file and this).
ATTACHED = "your attachment"
#: Conversations whose files are kept searchable between their questions.
FILES_KEPT = 32
#: Log-odds a customer's file counts above the index, and how close the two must be for the
#: other to add its best sentence: chosen on a handful of invoices, logs and CSVs against the
#: sample knowledge base (tests/test_attachments.py asks others).
FILE_PRIOR = 1.0
MERGE_MARGIN = 1.0
#: A question that continues the one before ("and for the family plan?"), read with it.
_CONTINUES = re.compile(r"^\s*(?:and|also|but|what about|how about)\b")
#: Words by which a message refers back to the one before ("and what does it cost?").
_FOLLOW_UP = re.compile(
    r"^\s*(?:and|also|but|so|what about|how about)\b"
    r"|\b(?:it|its|it's|that|this|those|these|them|they|there|then|one|too)\b"
)


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    passages: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def __str__(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)}"
            f" unchanged, {len(self.removed)} removed; {self.passages} passages in the index"
        )


def resolve(path: str) -> Path:
    """A configured path: as given (relative to the working folder), else relative to the
    checkout or the installed package, so the embedded default finds the sample knowledge
    base from anywhere."""
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given.resolve()
    for root in (PROJECT_ROOT, INSTALLED_ROOT):
        if (root / given).exists():
            return (root / given).resolve()
    return given.resolve()


def _shown(path: Path) -> str:
    """The path a citation shows: relative to the working folder when inside it."""
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        for root in (PROJECT_ROOT, INSTALLED_ROOT):
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return str(path)


class Knowledge:
    """Blocking, and used by one thread at a time."""

    def __init__(
        self,
        config: KnowledgeConfig,
        db_path: str,
        embedder: Embedder | None = None,
        company: str = "",
    ) -> None:
        self.config = config
        self.company = company
        self._scope: Scope | None = None
        self.index = PassageIndex(db_path)
        self._embedder = embedder
        self.retriever = Retriever([], np.zeros((0, 0), dtype=np.float32))
        self.scorer = SentenceScorer(lambda texts: self.embedder.encode(texts))
        self._files: dict[tuple[tuple[str, str], ...], tuple[Retriever, SentenceScorer]] = {}
        #: The learned documents (key → digest) the in-memory snapshot was loaded with.
        self._learned_loaded: dict[str, str] = {}

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.config.embedding_model)
        return self._embedder

    @property
    def scope(self) -> Scope:
        if self._scope is None:
            examples = off_topic_examples(self.company, self.config.off_topic)
            self._scope = Scope(examples, self.embedder.encode([text for _, text in examples]))
        return self._scope

    def open(self) -> None:
        self.index.open()
        model = self.index.meta("embedding_model")
        if model is not None and model != self.config.embedding_model and self.index.count():
            # Vectors from another model are not comparable: start over (auto-ingest refills).
            log.warning("the embedding model changed from %s: clearing the knowledge index", model)
            self.index.clear()
        self.index.set_meta("embedding_model", self.config.embedding_model)
        self._reload()

    def close(self) -> None:
        self.index.close()

    def __len__(self) -> int:
        return len(self.retriever)

    def _reload(self) -> None:
        self._learned_loaded = self._learned_on_disk()
        passages, vectors = self.index.load()
        known = self.embedder.knows if passages else (lambda word: False)
        self.retriever = Retriever(passages, vectors, known)
        self.scorer.forget()  # passage ids change when documents are ingested again

    def refresh(self) -> IngestReport:
        """Bring the configured paths' passages up to date: new and changed files are
        ingested, files deleted from a configured folder leave the index."""
        roots = [resolve(p) for p in self.config.paths]
        present = [root for root in roots if root.exists()]
        for root in roots:
            if not root.exists():
                log.warning("knowledge path %s does not exist", root)
        report = self.ingest(present, only_changed=True, reload=False)
        seen = {str(p.resolve()) for p in collect(present)}
        gone = [
            key
            for root in present
            if root.is_dir()
            for key in self.index.keys_under(root)
            if key not in seen
        ]
        self._drop(gone, report)
        self._reload()
        report.passages = self.index.count()
        return report

    def ingest(
        self,
        paths: Iterable[str | Path],
        collection: str = DEFAULT_COLLECTION,
        only_changed: bool = False,
        reload: bool = True,
    ) -> IngestReport:
        """Read ``paths`` (files, folders recursively) into the index; a file ingested before
        has its passages replaced. Raises FileNotFoundError for a path that does not exist."""
        report = IngestReport()
        stored = self.index.digests()
        for path in collect(paths):
            document = read_document(path, _shown(path.resolve()))
            self._put(str(path.resolve()), document, collection, stored, only_changed, report)
        if reload:
            self._reload()
        report.passages = self.index.count()
        return report

    def ingest_pages(
        self, pages: Iterable[Page], collection: str = DEFAULT_COLLECTION
    ) -> IngestReport:
        """Web pages (``site.fetch_site``) into the index, each under its URL, which its
        passages cite (the page's canonical URL where it declares one)."""
        report = IngestReport()
        stored = self.index.digests()
        for page in pages:
            digest = hashlib.sha256(page.html.encode()).hexdigest()
            document = parse(page.html, ".html", page.url, digest, fallback_title=page.url)
            if not document.url:
                document = dataclasses.replace(document, url=page.url)
            self._put(page.url, document, collection, stored, True, report)
            validators = {"etag": page.etag, "last_modified": page.last_modified}
            self.index.set_meta(f"page:{page.url}", json.dumps(validators))
        self._reload()
        report.passages = self.index.count()
        return report

    def known_pages(self, site: str) -> dict[str, Page]:
        """The pages of ``site`` in the index, with the validators they were served with."""
        known = {}
        for key in self.index.keys_starting(site_prefix(site)):
            stored = json.loads(self.index.meta(f"page:{key}") or "{}")
            known[key] = Page(key, "", stored.get("etag", ""), stored.get("last_modified", ""))
        return known

    def sync_site(
        self, site: str, crawl: Crawl, collection: str = DEFAULT_COLLECTION
    ) -> IngestReport:
        """The index brought in step with ``crawl`` of ``site``: changed and new pages read,
        unchanged ones kept, pages gone from the site (no longer listed or linked, 404 or 410)
        removed; a page that failed for now (a server error, a timeout) keeps its passages."""
        report = self.ingest_pages(crawl.pages, collection)
        report.unchanged.extend(page.url for page in crawl.unchanged)
        kept = {p.url for p in crawl.pages} | {p.url for p in crawl.unchanged} | set(crawl.failed)
        gone = [key for key in self.index.keys_starting(site_prefix(site)) if key not in kept]
        if gone:
            self._drop(gone, report)
            self._reload()
        report.passages = self.index.count()
        return report

    def sync_learned(self, items: Sequence[Learned]) -> IngestReport:
        """The ``learned`` collection in step with the snippets staff approved: new and edited
        ones indexed, withdrawn ones dropped (bot/knowledge/learned.py)."""
        report = IngestReport()
        stored = self.index.digests()
        wanted = {learned_key(item.id): item for item in items}
        for name, item in wanted.items():
            self._put(name, document(item), LEARNED, stored, True, report)
        self._drop([k for k in self.index.keys_starting(PREFIX) if k not in wanted], report)
        # Another process sharing this index (`parley kb review`) may have written it already:
        # what is on disk, not this call's changes, decides whether the snapshot is stale.
        if report.changed or self._learned_on_disk() != self._learned_loaded:
            self._reload()
        report.passages = self.index.count()
        return report

    def _learned_on_disk(self) -> dict[str, str]:
        return {k: v for k, v in self.index.digests().items() if k.startswith(PREFIX)}

    def contradiction(self, question: str, answer: str) -> str:
        """One line for a reviewer when the articles that answer ``question`` give another
        figure than ``answer`` does ('' when none does, or none answers it)."""
        collections = {p.collection for p in self.retriever.passages} - {LEARNED}
        if not collections:
            return ""
        found = self.search(question, collections=collections)
        if not found.confident or found.extract is None:
            return ""
        # The sentences that answer the question: a figure elsewhere in the article may
        # measure something else.
        quoted = [(s.source.title, s.unit.text) for s in found.extract.sentences]
        return contradiction(answer, quoted)

    def _drop(self, keys: list[str], report: IngestReport) -> None:
        """Documents gone from where they were read: out of the index, and said so."""
        if keys:
            self.index.remove(keys)
            report.removed.extend(keys)

    def _put(
        self,
        key: str,
        document: Document,
        collection: str,
        stored: dict[str, str],
        only_changed: bool,
        report: IngestReport,
    ) -> None:
        if stored.get(key) == document.digest and only_changed:
            report.unchanged.append(document.path)
            return
        vectors = self.embedder.encode(
            [f"{document.title} — {s.heading}\n{s.text}" for s in document.sections]
        )
        self.index.replace(key, document, collection, vectors)
        (report.updated if key in stored else report.added).append(document.path)

    def sources(self) -> list[SourceInfo]:
        return self.index.sources()

    def texts(self) -> list[str]:
        """Every passage's text, with its document's title and heading."""
        return [passage.indexed_text for passage in self.retriever.passages]

    def search(
        self,
        query: str,
        k: int | None = None,
        collections: Collection[str] = (),
        split: bool = True,
        among: tuple[Retriever, SentenceScorer] | None = None,
    ) -> Retrieval:
        """The ``k`` best passages for ``query`` and, outside the "free" answer mode, the
        sentences of theirs that answer it (of each part of it, with ``split``); ``among``
        other passages than the index's (a customer's files)."""
        k = self.config.top_k if k is None else k
        retriever, scorer = among or (self.retriever, self.scorer)
        if not len(retriever) or not query.strip():
            return Retrieval(query, (), False)
        # The model reads a misspelt word as unrelated pieces: "pasword" is "pas", "##word".
        spellchecked = retriever.keywords.spellchecked
        # The free mode quotes no sentences, so it has no use for the question's parts.
        split = split and self.config.answer_mode != "free"
        parts = question_parts(query) if split else [query]
        # The whole question, then each of its parts when it has several.
        texts = [query, *parts] if len(parts) > 1 else [query]
        vectors = self.embedder.encode([spellchecked(text) for text in texts])
        hits = tuple(retriever.search(query, vectors[0], k, collections))
        if not hits:
            return Retrieval(query, hits, False)
        if self.config.answer_mode == "free":
            judgement = self._judge(retriever, query, vectors[0], hits, hits[0].passage.text)
            return Retrieval(query, hits, judgement.answerable, judgement=judgement)
        # Each part of the question brings its own passages: "how much is it" and "can I
        # pause it" are answered in different articles.
        found = {h.passage.id: h for h in hits}
        for part, vector in zip(texts[1:], vectors[1:], strict=True):
            for hit in retriever.search(part, vector, k, collections):
                found.setdefault(hit.passage.id, hit)
        passages = [hit.passage for hit in found.values()]
        priors = [hit.similarity for hit in found.values()]
        ranked = scorer.score(passages, texts, vectors, priors)
        # The sections are ranked again by their best sentence: a sentence is about one thing,
        # a section about several, so its best sentence tells better whether it answers.
        best: dict[int, Sentence] = {}
        for sentence in ranked[0]:
            best.setdefault(sentence.passage.id, sentence)
        # (A section with no sentence, only a heading, goes last.)
        hits = tuple(
            sorted(hits, key=lambda h: -best[h.passage.id].score if h.passage.id in best else 1e9)
        )
        # A second article about as close to the question as the first (by the margin a
        # second source is cited with) may be the one that answers: it adds its best sentence.
        second = None
        if len(texts) == 1:
            top = max(hit.similarity for hit in hits)
            first = hits[0].passage.source
            second = next(
                (
                    best[hit.passage.id]
                    for hit in hits
                    if hit.passage.source != first
                    and hit.similarity >= top - CITE_MARGIN
                    and hit.passage.id in best
                ),
                None,
            )
        extract = choose(ranked, self.config.answer_sentences, scorer.units, second)
        quoted = " ".join(sentence.unit.text for sentence in extract.sentences)
        judgement = self._judge(retriever, query, vectors[0], hits, quoted)
        return Retrieval(query, hits, judgement.answerable, extract, judgement)

    def _judge(
        self,
        retriever: Retriever,
        query: str,
        vector: np.ndarray,
        hits: Sequence[Hit],
        evidence: str,
    ) -> Judgement:
        """Whether the ``evidence`` found for ``query`` answers it (:mod:`scope`)."""
        terms = retriever.keywords.terms
        covered = coverage(terms(query), terms(evidence))
        signals = self.scope.signals(vector, max(h.similarity for h in hits), covered)
        return Judgement(signals, self.config.decision, self.config.min_score)

    def retrieve(
        self,
        question: str,
        previous: str | None = None,
        collections: Collection[str] = (),
        files: Sequence[Attachment] = (),
    ) -> Retrieval:
        """Search for ``question``, in the index and in the customer's ``files``. The surer
        of the two answers (a file counted :data:`FILE_PRIOR` surer: it came with the
        question); the other, when nearly as sure, adds its best sentence ("your log shows
        error E-4012" and the article on that error)."""
        found = self._retrieve(question, previous, collections)
        readable = [file for file in files if file.text]
        if not readable:
            return found
        own = self.search(question, among=self._files_index(readable))
        if not own.confident or own.judgement is None:
            return found
        if not found.confident or found.judgement is None:
            return own
        odds = own.judgement.log_odds + FILE_PRIOR
        first, other = (own, found) if odds >= found.judgement.log_odds else (found, own)
        if abs(odds - found.judgement.log_odds) > MERGE_MARGIN:
            return first
        return _with_best_of(first, other)

    def _files_index(self, files: Sequence[Attachment]) -> tuple[Retriever, SentenceScorer]:
        """The passages of a customer's files, searchable as the index is (kept for the
        follow-up questions that come with a file)."""
        key = tuple((file.name, hashlib.sha256(file.text.encode()).hexdigest()) for file in files)
        if key in self._files:
            self._files[key] = self._files.pop(key)  # the most recently used goes last
            return self._files[key]
        passages: list[Passage] = []
        for file in files:
            source = Source(file.name, ATTACHED)
            document = parse(file.text, ".md", file.name, "", fallback_title=file.name)
            # A paragraph a passage: a file is not written in sections about one thing each
            # (an invoice's lines are facts of their own), and a question is as close to its
            # line as to its article section.
            for section in document.sections:
                for paragraph in section.text.split("\n\n"):
                    # Negative ids: never the index's, whose sentences its scorer caches.
                    passage = Passage(-1 - len(passages), source, section.heading, paragraph)
                    passages.append(passage)
        vectors = self.embedder.encode([passage.indexed_text for passage in passages])
        found = (Retriever(passages, vectors), SentenceScorer(self.embedder.encode))
        self._files[key] = found
        while len(self._files) > FILES_KEPT:
            del self._files[next(iter(self._files))]
        return found

    def _retrieve(
        self, question: str, previous: str | None, collections: Collection[str]
    ) -> Retrieval:
        """Search the index for ``question``. A question that continues the ``previous`` one
        ("and for the family plan?") is read with it; another follow-up ("how long does that
        take?") is searched again with it only when it finds nothing alone: a new question
        that merely follows an answered one would borrow its topic."""
        lowered = question.lower()
        if previous and _CONTINUES.search(lowered):
            joined = self.search(f"{previous}\n{question}", collections=collections, split=False)
            if joined.confident:
                return joined
        found = self.search(question, collections=collections)
        if found.confident or not previous or not _FOLLOW_UP.search(lowered):
            return found
        joined = self.search(f"{previous}\n{question}", collections=collections, split=False)
        return joined if joined.confident else found


def _with_best_of(first: Retrieval, other: Retrieval) -> Retrieval:
    """``first``, its extract joined by the best sentence of ``other``'s."""
    if first.extract is None or other.extract is None or not other.extract.sentences:
        return first
    best = other.extract.sentences[0]
    if best in first.extract.sentences:
        return first
    context = {**first.extract.context, best.passage.id: other.extract.context[best.passage.id]}
    extract = Extract((*first.extract.sentences, best), context)
    return dataclasses.replace(first, hits=first.hits + other.hits, extract=extract)


class KnowledgeBase:
    """A :class:`Knowledge` on its own thread, for the service.

    ``start()`` opens the index and, with ``auto_ingest``, brings the configured paths up to
    date (only new or changed files are read and embedded); ``retrieve()`` searches it.
    """

    def __init__(
        self,
        config: KnowledgeConfig,
        db_path: str,
        embedder: Embedder | None = None,
        company: str = "",
    ) -> None:
        self.config = config
        self.knowledge = Knowledge(config, db_path, embedder, company)
        self._executor: ThreadPoolExecutor | None = None
        self._syncing: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def size(self) -> int:
        """Passages in the index (0 before ``start``)."""
        return len(self.knowledge)

    async def start(self) -> None:
        if self._executor is not None or self._closed:
            raise RuntimeError("the knowledge base was already started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-knowledge")
        await self._run(self._start)
        seconds = self.config.sync_seconds
        if self.config.urls and seconds:
            # In the background: the service answers from what it has while sites are read.
            self._syncing = asyncio.create_task(self._sync_every(seconds), name="kb-sync")

    def _start(self) -> None:
        self.knowledge.open()
        if self.config.auto_ingest:
            report = self.knowledge.refresh()
            if report.changed:
                log.info("knowledge base updated: %s", report)
        if len(self.knowledge):
            # Load the embedding model, and embed the off-topic examples, now, not on the
            # first customer's question.
            self.knowledge.embedder.encode(["warm up"])
            _ = self.knowledge.scope

    async def close(self) -> None:
        self._closed = True
        if self._syncing is not None:
            self._syncing.cancel()
            await asyncio.gather(self._syncing, return_exceptions=True)
            self._syncing = None
        if self._executor is None:
            return
        await self._run(self.knowledge.close)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("the knowledge base is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def retrieve(
        self,
        question: str,
        previous: str | None = None,
        collections: Collection[str] = (),
        files: Sequence[Attachment] = (),
    ) -> Retrieval:
        return await self._run(
            lambda: self.knowledge.retrieve(question, previous, collections, files)
        )

    async def texts(self) -> list[str]:
        return await self._run(self.knowledge.texts)

    async def sources(self) -> list[SourceInfo]:
        return await self._run(self.knowledge.sources)

    async def refresh(self) -> IngestReport:
        return await self._run(self.knowledge.refresh)

    async def sync_sites(self) -> list[tuple[str, IngestReport, Crawl]]:
        """Each of ``[knowledge] urls`` brought in step with its site now."""
        done = []
        for site in self.config.urls:
            known = await self._run(functools.partial(self.knowledge.known_pages, site))
            crawl = await fetch_site(site, limit=self.config.pages, known=known)
            report = await self._run(functools.partial(self.knowledge.sync_site, site, crawl))
            if report.changed or crawl.errors:
                log.info("%s synced: %s; %d page(s) not read", site, report, len(crawl.errors))
            done.append((site, report, crawl))
        return done

    async def _sync_every(self, seconds: float) -> None:
        while True:
            try:
                await self.sync_sites()
            except Exception:  # a broken site must not stop the next sync, nor the service
                log.exception("syncing the knowledge base with its sites failed")
            await asyncio.sleep(seconds)

    async def learn(self, items: Sequence[Learned]) -> IngestReport:
        return await self._run(functools.partial(self.knowledge.sync_learned, items))

    async def contradiction(self, question: str, answer: str) -> str:
        return await self._run(functools.partial(self.knowledge.contradiction, question, answer))

    async def ingest(
        self, paths: Iterable[str | Path], collection: str = DEFAULT_COLLECTION
    ) -> IngestReport:
        chosen = list(paths)
        return await self._run(lambda: self.knowledge.ingest(chosen, collection))
