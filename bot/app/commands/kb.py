"""``parley kb``: ingest documents, search the knowledge base, list its sources."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import textwrap
from datetime import UTC, datetime

from bot.config import Config
from bot.core.learning import STATES, SnippetAction, learned_items
from bot.knowledge.base import DEFAULT_COLLECTION, Knowledge
from bot.knowledge.site import fetch_site, is_url
from bot.storage import build_store
from bot.storage.base import Snippet

__all__ = ["add_parser", "run"]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kb = commands.add_parser("kb", help="the knowledge base: ingest, search, list, review")
    actions = kb.add_subparsers(dest="kb_command", metavar="ACTION", required=True)
    ingest = actions.add_parser(
        "ingest",
        help="read Markdown, text and HTML files (folders recursively), or a help center's pages"
        " (a sitemap.xml URL, or a start page crawled within its host), into the index",
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH_OR_URL")
    ingest.add_argument("--pages", type=int, default=200, help="at most this many pages a site")
    ingest.add_argument(
        "--collection", default=DEFAULT_COLLECTION, help="the collection policies refer to"
    )
    search = actions.add_parser("search", help="the passages a question finds, with scores")
    search.add_argument("question")
    search.add_argument("-k", type=int, default=5, help="how many passages to show")
    search.add_argument("--collection", action="append", default=[], help="only these")
    actions.add_parser("list", help="the documents in the index")
    actions.add_parser(
        "sync", help="bring the index in step with the help centers of [knowledge] urls now"
    )
    review = actions.add_parser(
        "review",
        help="the snippets staff answers in resolved conversations proposed: list those"
        " waiting, or approve, edit or reject one",
    )
    review.add_argument("snippet", nargs="?", default="", help="the snippet's id")
    review.add_argument("action", nargs="?", choices=sorted(STATES), help="what to do with it")
    review.add_argument("text", nargs="?", default="", help="the answer as edited (edit)")


def run(config: Config, args: argparse.Namespace) -> int:
    knowledge = Knowledge(config.knowledge, config.store.path, company=config.bot.company)
    knowledge.open()
    try:
        if args.kb_command == "ingest":
            sites = [p for p in args.paths if is_url(p)]
            files = [p for p in args.paths if not is_url(p)]
            code = _ingest(knowledge, files, args.collection) if files else 0
            for site in sites:
                code = max(code, _ingest_site(knowledge, site, args.collection, args.pages))
            return code
        if args.kb_command == "sync":
            return _sync(config, knowledge)
        if args.kb_command == "review":
            return asyncio.run(_review(config, knowledge, args.snippet, args.action, args.text))
        if config.knowledge.enabled and config.knowledge.auto_ingest:
            # As the service would on start, so a fresh checkout can search the sample at once.
            knowledge.refresh()
        if args.kb_command == "search":
            return _search(knowledge, args.question, args.k, args.collection)
        return _list(knowledge)
    finally:
        knowledge.close()


def _ingest(knowledge: Knowledge, paths: list[str], collection: str) -> int:
    try:
        report = knowledge.ingest(paths, collection)
    except FileNotFoundError as exc:
        print(f"parley: {exc.args[0]}", file=sys.stderr)
        return 2
    for label, items in (("added", report.added), ("updated", report.updated)):
        for path in items:
            print(f"{label:>8}  {path}")
    print(report)
    return 0


def _ingest_site(knowledge: Knowledge, url: str, collection: str, pages: int) -> int:
    """A help center's pages into the index, with a count of pages read as it goes."""
    shown = sys.stderr.isatty()

    def progress(count: int) -> None:
        if shown:
            print(f"\r  {count} pages read from {url}", end="", file=sys.stderr, flush=True)

    crawl = asyncio.run(fetch_site(url, limit=pages, progress=progress))
    if shown:
        print(file=sys.stderr)
    for error in crawl.errors:
        print(f"  skipped  {error}")
    if not crawl.pages:
        print(f"parley: no page could be read from {url}", file=sys.stderr)
        return 2
    report = knowledge.ingest_pages(crawl.pages, collection)
    for label, items in (("added", report.added), ("updated", report.updated)):
        for page in items:
            print(f"{label:>8}  {page}")
    print(f"{url}: {len(crawl.pages)} pages read; {report}")
    return 0


def _sync(config: Config, knowledge: Knowledge) -> int:
    """Each configured site: what changed, and the pages that could not be read."""
    if not config.knowledge.urls:
        print("No help center to sync: list its sitemap or start page in [knowledge] urls.")
        return 1
    code = 0
    for site in config.knowledge.urls:
        known = knowledge.known_pages(site)
        crawl = asyncio.run(fetch_site(site, limit=config.knowledge.pages, known=known))
        report = knowledge.sync_site(site, crawl)
        for error in crawl.errors:
            print(f"  skipped  {error}")
        for label, items in (
            ("added", report.added),
            ("updated", report.updated),
            ("removed", report.removed),
        ):
            for page in items:
                print(f"{label:>8}  {page}")
        print(f"{site}: {report}")
        code = code if crawl.pages or crawl.unchanged else 2
    return code


async def _review(
    config: Config,
    knowledge: Knowledge,
    snippet_id: str,
    action: SnippetAction | None,
    text: str,
) -> int:
    """List the snippets waiting, or settle one from the terminal (whoever can run this can
    read the store: no staff check) and bring the index in step."""
    store = build_store(config)
    await store.open()
    try:
        if not snippet_id:
            return _list_snippets(await store.snippets())
        found = await store.snippet(snippet_id)
        if found is None:
            print(
                f"parley: no snippet {snippet_id!r} (parley kb review lists them)", file=sys.stderr
            )
            return 2
        if action is None or (action == "edit" and not text.strip()):
            print("parley: say approve, reject, or edit with the new answer", file=sys.stderr)
            return 2
        answer = text.strip() if action == "edit" else found.answer
        by = f"{getpass.getuser()} (terminal)"
        if not await store.decide_snippet(snippet_id, STATES[action], by, answer):
            print(f"parley: {snippet_id} was already {found.state} by {found.decided_by}")
            return 1
        report = knowledge.sync_learned(learned_items(await store.snippets()))
        print(f"{snippet_id}: {STATES[action]}; {report}")
        return 0
    finally:
        await store.close()


def _list_snippets(snippets: list[Snippet]) -> int:
    waiting = [s for s in snippets if s.state == "pending"]
    if not waiting:
        print("No snippet waits for review.")
    for snippet in waiting:
        where = snippet.link or snippet.conversation
        print(f"{snippet.id}  {snippet.created_at:%Y-%m-%d %H:%M}  {where}")
        if snippet.note:
            print(f"  check: {snippet.note}")
        print(textwrap.indent(f"Q: {snippet.question}\nA: {snippet.answer}", "  "))
    learned = [s for s in snippets if s.learned]
    rejected = sum(s.state == "rejected" for s in snippets)
    print(
        f"{len(waiting)} waiting, {len(learned)} learned (cited {sum(s.cited for s in learned)}"
        f" times), {rejected} rejected"
    )
    return 0


def _search(knowledge: Knowledge, question: str, k: int, collections: list[str]) -> int:
    if not len(knowledge):
        print("The knowledge base is empty: add documents with 'parley kb ingest PATH…'.")
        return 1
    found = knowledge.search(question, k=k, collections=collections)
    verdict = (
        "answers from these passages"
        if found.confident
        else "would say it doesn't know (and offer a human)"
    )
    judgement = found.judgement
    print(f"The bot {verdict}.")
    if judgement is not None:
        print(f"  {judgement.why}")
        print(f"  {'signal':<10} {'value':>5}  {'term':>6}  vote")
        for line in judgement.votes():
            print(f"  {line}")
        print(f"  {'bias':<10} {'':>5}  {judgement.decision.bias:>+6.2f}")
    print()
    print(f"{'#':>2}  {'fused':>6}  {'cosine':>6}  {'bm25':>5}  source")
    for n, hit in enumerate(found.hits, start=1):
        passage = hit.passage
        where = " › ".join(part for part in (passage.source.title, passage.heading) if part)
        print(
            f"{n:>2}  {hit.score:>6.4f}  {hit.similarity:>6.2f}  {hit.bm25:>5.1f}  {where}"
            f"  ({passage.source.link})"
        )
        snippet = " ".join(passage.text.split())
        print(textwrap.indent(textwrap.shorten(snippet, 220, placeholder=" …"), " " * 30))
    if found.extract is not None and found.extract.sentences:
        mode = knowledge.config.answer_mode
        print()
        print(f"The sentences an answer rests on (answer_mode = {mode!r}), best first:")
        for sentence in found.extract.sentences:
            where = " › ".join(p for p in (sentence.source.title, sentence.passage.heading) if p)
            print(f"  {sentence.score:>5.2f}  {sentence.unit.text}  ({where})")
    return 0


def _list(knowledge: Knowledge) -> int:
    sources = knowledge.sources()
    if not sources:
        print("The knowledge base is empty: add documents with 'parley kb ingest PATH…'.")
        return 0
    print(f"{'collection':<12}  {'passages':>8}  {'ingested (UTC)':<16}  title — path or URL")
    for info in sources:
        when = datetime.fromtimestamp(info.ingested_at, UTC).strftime("%Y-%m-%d %H:%M")
        print(
            f"{info.collection:<12}  {info.passages:>8}  {when:<16}  {info.title}"
            f" — {info.url or info.path}"
        )
    total = sum(info.passages for info in sources)
    print(f"{len(sources)} documents, {total} passages")
    return 0
