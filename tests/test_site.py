"""A help center read from the web (bot/knowledge/site.py) against a small one this test serves
on loopback: its sitemap, or a crawl from a start page; robots.txt honoured, a broken page
reported and skipped, nothing fetched from another host; the passages cite the page's URL."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from bot.app import cli
from bot.config import KnowledgeConfig
from bot.knowledge import base as knowledge_base
from bot.knowledge.base import Knowledge, KnowledgeBase
from bot.knowledge.cite import format_sources
from bot.knowledge.embed import Embedder
from bot.knowledge.site import fetch_site


def _page(title: str, body: str) -> str:
    return (
        f"<html><head><title>{title} | Example help</title></head><body>"
        f"<nav><a href='/help/returns'>Returns</a> <a href='/help/shipping'>Shipping</a></nav>"
        f"<h1>{title}</h1>{body}<footer>© Example</footer></body></html>"
    )


SITE = {
    "/robots.txt": ("text/plain", "User-agent: *\nDisallow: /private/\n"),
    "/help/returns": (
        "text/html",
        _page(
            "Returns",
            "<p>Return any order within <b>30 days</b>.</p><h2>Return labels</h2>"
            "<p>We e-mail a prepaid label.</p><a href='/private/staff'>staff</a>"
            "<a href='https://elsewhere.example/x'>partner</a>",
        ),
    ),
    "/help/shipping": (
        "text/html",
        _page("Shipping", "<h2>To Canada</h2><p>We ship to Canada in 5 to 8 working days.</p>"),
    ),
    "/private/staff": ("text/html", _page("Staff only", "<p>The door code is 4711.</p>")),
}


LISTED = ["/help/returns", "/help/shipping", "/help/broken", "/private/staff"]


class _HelpCenter(BaseHTTPRequestHandler):
    """SITE's pages (each with an ETag, answered 304 when it is sent back), the sitemap
    listing LISTED, and whatever status a test sets for a path in ``failing``."""

    requested: ClassVar[list[str]] = []
    conditional: ClassVar[list[str]] = []
    pages: ClassVar[dict[str, tuple[str, str]]] = {}
    listed: ClassVar[list[str]] = []
    failing: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        self.requested.append(self.path)
        if self.path in self.failing:
            self._send(self.failing[self.path], "text/plain", "not now")
        elif self.path == "/sitemap.xml":
            host = f"http://{self.headers['Host']}"
            locs = "".join(f"<url><loc>{host}{u}</loc></url>" for u in self.listed)
            locs += "<url><loc>https://elsewhere.example/page</loc></url>"
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>'
            )
            self._send(200, "application/xml", body)
        elif self.path in self.pages:
            kind, body = self.pages[self.path]
            etag = f'"{hashlib.sha256(body.encode()).hexdigest()[:16]}"'
            if self.headers.get("If-None-Match"):
                self.conditional.append(self.path)
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.end_headers()
                return
            self._send(200, kind, body, etag)
        elif self.path == "/help/broken":
            self._send(500, "text/plain", "oops")
        else:
            self._send(404, "text/plain", "not found")

    def _send(self, status: int, kind: str, body: str, etag: str = "") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        if etag:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def help_center() -> Iterator[str]:
    _HelpCenter.requested, _HelpCenter.conditional = [], []
    _HelpCenter.pages, _HelpCenter.listed, _HelpCenter.failing = dict(SITE), list(LISTED), {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HelpCenter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_the_sitemap_s_pages_are_read_and_robots_txt_keeps_some_out(
    help_center: str,
) -> None:
    crawl = await fetch_site(f"{help_center}/sitemap.xml", delay=0)
    assert [p.url for p in crawl.pages] == [
        f"{help_center}/help/returns",
        f"{help_center}/help/shipping",
    ]
    assert crawl.errors == [f"{help_center}/help/broken: HTTP 500"]
    assert "/private/staff" not in _HelpCenter.requested


async def test_a_crawl_follows_links_within_the_host_and_stops_at_the_limit(
    help_center: str,
) -> None:
    crawl = await fetch_site(f"{help_center}/help/returns", delay=0)
    assert sorted(p.url for p in crawl.pages) == [
        f"{help_center}/help/returns",
        f"{help_center}/help/shipping",
    ]
    assert "/private/staff" not in _HelpCenter.requested
    assert len((await fetch_site(f"{help_center}/help/returns", limit=1, delay=0)).pages) == 1


async def test_polite_pace_between_requests(help_center: str) -> None:
    """robots.txt, the sitemap, three pages: four pauses of ``delay`` at least."""
    import time

    started = time.monotonic()
    await fetch_site(f"{help_center}/sitemap.xml", delay=0.1)
    assert time.monotonic() - started >= 0.4


def test_kb_ingest_url_indexes_the_pages_and_answers_cite_them(
    help_center: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    embedder = Embedder()
    monkeypatch.setattr(knowledge_base, "Embedder", lambda name: embedder)
    config = tmp_path / "parley.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "parley.db"}"\n[knowledge]\npaths = []\n')
    sitemap = f"{help_center}/sitemap.xml"
    assert cli.main(["--config", str(config), "kb", "ingest", sitemap]) == 0
    out = capsys.readouterr().out
    assert f"skipped  {help_center}/help/broken: HTTP 500" in out
    assert f"added  {help_center}/help/shipping" in out
    assert f"{sitemap}: 2 pages read; 2 added" in out

    knowledge = Knowledge(KnowledgeConfig(paths=[]), str(tmp_path / "parley.db"), embedder)
    knowledge.open()
    try:
        found = knowledge.retrieve("Do you ship to Canada?")
        assert found.confident
        source = found.hits[0].passage.source
        assert (source.title, source.url) == ("Shipping", f"{help_center}/help/shipping")
        assert found.extract is not None
        cited = format_sources(list(found.extract.sections))
        assert f"({help_center}/help/shipping#to-canada)" in cited
        # The page's menu and footer are not passages.
        assert not any("©" in text or "Returns Shipping" in text for text in knowledge.texts())
    finally:
        knowledge.close()
    # Read again, unchanged pages stay as they are.
    assert cli.main(["--config", str(config), "kb", "ingest", sitemap]) == 0
    assert "0 added, 0 updated, 2 unchanged" in capsys.readouterr().out


def test_kb_sync_keeps_the_index_in_step_with_the_help_center(
    help_center: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A page changed, one removed, one new, one failing for now, one unchanged (one request,
    no body): each as a help center's owner would expect."""
    embedder = Embedder()
    monkeypatch.setattr(knowledge_base, "Embedder", lambda name: embedder)
    config = tmp_path / "parley.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "parley.db"}"\n[knowledge]\npaths = []\n'
        f'urls = ["{help_center}/sitemap.xml"]\nsync_every = "6h"\n'
    )
    _HelpCenter.pages["/help/faq"] = ("text/html", _page("FAQ", "<p>Open 9 to 5.</p>"))
    _HelpCenter.listed.append("/help/faq")
    assert cli.main(["--config", str(config), "kb", "sync"]) == 0
    assert "3 added, 0 updated, 0 unchanged, 0 removed" in capsys.readouterr().out

    _HelpCenter.pages["/help/shipping"] = (
        "text/html",
        _page("Shipping", "<h2>To Canada</h2><p>We ship to Canada in 3 working days.</p>"),
    )
    _HelpCenter.listed.remove("/help/returns")  # the article was taken down
    _HelpCenter.pages["/help/payment"] = ("text/html", _page("Payment", "<p>Cards only.</p>"))
    _HelpCenter.listed.append("/help/payment")
    _HelpCenter.failing["/help/faq"] = 503  # down for a moment: keep what we have
    _HelpCenter.requested.clear()
    assert cli.main(["--config", str(config), "kb", "sync"]) == 0
    out = capsys.readouterr().out
    assert f"skipped  {help_center}/help/faq: HTTP 503" in out
    assert f"removed  {help_center}/help/returns" in out
    assert f"added  {help_center}/help/payment" in out
    assert f"updated  {help_center}/help/shipping" in out
    assert "1 added, 1 updated, 0 unchanged, 1 removed" in out
    assert "/help/shipping" in _HelpCenter.conditional

    knowledge = Knowledge(KnowledgeConfig(paths=[]), str(tmp_path / "parley.db"), embedder)
    knowledge.open()
    try:
        titles = sorted(s.title for s in knowledge.sources())
        assert titles == ["FAQ", "Payment", "Shipping"]
        assert any("3 working days" in t for t in knowledge.texts())
        assert not any("5 to 8 working days" in t for t in knowledge.texts())
    finally:
        knowledge.close()
    # Nothing changed since: every page answered 304, nothing read or embedded again.
    _HelpCenter.failing.clear()
    _HelpCenter.requested.clear()
    assert cli.main(["--config", str(config), "kb", "sync"]) == 0
    assert "0 added, 0 updated, 3 unchanged, 0 removed" in capsys.readouterr().out
    assert sorted(_HelpCenter.conditional[-3:]) == ["/help/faq", "/help/payment", "/help/shipping"]


def test_a_sync_interval_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    from bot.app.wiring import load
    from bot.errors import ConfigError

    config = tmp_path / "parley.toml"
    config.write_text('[knowledge]\nurls = ["https://help.example.com/"]\nsync_every = "often"\n')
    with pytest.raises(ConfigError, match=r"'knowledge\.sync_every' is 'often'; write it as 30m"):
        load(str(config))
    config.write_text('[knowledge]\nurls = ["help.example.com"]\n')
    with pytest.raises(ConfigError, match=r"'knowledge\.urls' has 'help\.example\.com'"):
        load(str(config))
    config.write_text('[knowledge]\nsync_every = "1.5h"\n')
    assert load(str(config)).knowledge.sync_seconds == 5400


async def test_the_service_syncs_its_help_centers_in_the_background(
    help_center: str, tmp_path: Path
) -> None:
    """With ``sync_every`` the knowledge base reads its sites once started (and again each
    interval), while it answers from what it has; closing stops it."""
    config = KnowledgeConfig(paths=[], urls=[f"{help_center}/sitemap.xml"], sync_every="6h")
    knowledge = KnowledgeBase(config, str(tmp_path / "kb.db"), Embedder())
    await knowledge.start()
    try:
        for _ in range(300):
            if len(await knowledge.sources()) == 2:
                break
            await asyncio.sleep(0.1)
        assert sorted(s.title for s in await knowledge.sources()) == ["Returns", "Shipping"]
    finally:
        await knowledge.close()
    assert knowledge._syncing is None
