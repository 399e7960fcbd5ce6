"""A help center read from the web (bot/knowledge/site.py) against a small one this test serves
on loopback: its sitemap, or a crawl from a start page; robots.txt honoured, a broken page
reported and skipped, nothing fetched from another host; the passages cite the page's URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from bot.app import cli
from bot.config import KnowledgeConfig
from bot.knowledge import base as knowledge_base
from bot.knowledge.base import Knowledge
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


class _HelpCenter(BaseHTTPRequestHandler):
    requested: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.requested.append(self.path)
        if self.path == "/sitemap.xml":
            host = f"http://{self.headers['Host']}"
            urls = ["/help/returns", "/help/shipping", "/help/broken", "/private/staff"]
            locs = "".join(f"<url><loc>{host}{u}</loc></url>" for u in urls)
            locs += "<url><loc>https://elsewhere.example/page</loc></url>"
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>'
            )
            self._send(200, "application/xml", body)
        elif self.path in SITE:
            self._send(200, *SITE[self.path])
        elif self.path == "/help/broken":
            self._send(500, "text/plain", "oops")
        else:
            self._send(404, "text/plain", "not found")

    def _send(self, status: int, kind: str, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def help_center() -> Iterator[str]:
    _HelpCenter.requested = []
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
