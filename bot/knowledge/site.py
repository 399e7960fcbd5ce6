"""Reading a help center from the web: the pages its sitemap lists, or those a crawl from a start
page reaches within its host; robots.txt honoured (its Crawl-delay too), one request at a time at
a polite pace, at most ``limit`` pages. A page that cannot be fetched is reported and skipped:
the rest of the site is still read."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.robotparser
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urldefrag, urljoin, urlsplit
from xml.etree import ElementTree

import aiohttp

__all__ = ["AGENT", "Crawl", "Page", "fetch_site", "is_url", "site_prefix"]

log = logging.getLogger(__name__)

AGENT = "ParleyBot/1.0 (+a customer-support bot reading its help center)"
_SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def site_prefix(url: str) -> str:
    """What every page of ``url``'s site starts with: its scheme and host."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/"


@dataclass(frozen=True)
class Page:
    url: str
    html: str
    etag: str = ""
    last_modified: str = ""


@dataclass
class Crawl:
    pages: list[Page] = field(default_factory=list)
    #: Pages the server says have not changed since the validators it was sent (HTTP 304).
    unchanged: list[Page] = field(default_factory=list)
    #: Pages that could not be read for now (a server error, a timeout): kept as they were.
    failed: list[str] = field(default_factory=list)
    #: One line per page that could not be read ("URL: why"), gone ones (404, 410) included.
    errors: list[str] = field(default_factory=list)


class _Polite:
    """One request at a time, ``delay`` seconds apart at least."""

    def __init__(self, session: aiohttp.ClientSession, delay: float, timeout: float) -> None:
        self.session = session
        self.delay = delay
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._last = 0.0

    async def get(
        self, url: str, headers: dict[str, str] | None = None
    ) -> tuple[int, str, Mapping[str, str]]:
        wait = self._last + self.delay - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            async with self.session.get(url, headers=headers, timeout=self.timeout) as response:
                body = await response.text(errors="replace")
                # Headers stay case-insensitive: a server may send "ETag" or "etag".
                return response.status, body, response.headers.copy()
        finally:
            self._last = time.monotonic()


async def fetch_site(
    start: str,
    limit: int = 200,
    delay: float = 0.5,
    page_seconds: float = 20.0,
    progress: Callable[[int], None] | None = None,
    known: Mapping[str, Page] | None = None,
) -> Crawl:
    """The HTML pages of the site at ``start``: a sitemap's (``.xml``, or a body that is one),
    else a crawl along links within ``start``'s host. A sitemap's page in ``known`` is asked
    for only if it changed (its ETag and Last-Modified sent back): one request, no body. (A
    crawl reads every page: it needs their links.)"""
    known = known or {}
    crawl = Crawl()
    host = urlsplit(start).netloc
    async with aiohttp.ClientSession(headers={"User-Agent": AGENT}) as session:
        client = _Polite(session, delay, page_seconds)
        robots = await _robots(client, start)
        client.delay = max(delay, float(robots.crawl_delay(AGENT) or 0))
        queue: deque[str] = deque([urldefrag(start)[0]])
        seen = set(queue)
        listed_pages: set[str] = set()
        while queue and len(crawl.pages) < limit:
            url = queue.popleft()
            if not robots.can_fetch(AGENT, url):
                log.info("robots.txt keeps %s out", url)
                continue
            before = known.get(url) if url in listed_pages else None
            try:
                status, body, headers = await client.get(url, _validators(before))
            except (aiohttp.ClientError, TimeoutError, UnicodeError) as exc:
                crawl.errors.append(f"{url}: {type(exc).__name__} {exc}".strip())
                crawl.failed.append(url)
                continue
            if status == 304 and before is not None:
                crawl.unchanged.append(before)
                continue
            if status != 200:
                crawl.errors.append(f"{url}: HTTP {status}")
                if status not in (404, 410):  # gone for good only when the server says so
                    crawl.failed.append(url)
                continue
            kind = headers.get("Content-Type", "")
            listed = _sitemap(body) if "xml" in kind or url.endswith(".xml") else None
            if listed is not None:
                fresh = [u for u in listed if urlsplit(u).netloc == host and u not in seen]
                seen.update(fresh)
                listed_pages.update(fresh)
                queue.extend(fresh)  # a sitemap index lists sitemaps; they are read in turn
                continue
            if "html" not in kind:
                continue
            crawl.pages.append(
                Page(url, body, headers.get("ETag", ""), headers.get("Last-Modified", ""))
            )
            if progress is not None:
                progress(len(crawl.pages))
            if not start.endswith(".xml"):
                for link in _links(body, url):
                    if urlsplit(link).netloc == host and link not in seen:
                        seen.add(link)
                        queue.append(link)
    return crawl


def _validators(page: Page | None) -> dict[str, str]:
    headers = {}
    if page is not None and page.etag:
        headers["If-None-Match"] = page.etag
    if page is not None and page.last_modified:
        headers["If-Modified-Since"] = page.last_modified
    return headers


async def _robots(client: _Polite, start: str) -> urllib.robotparser.RobotFileParser:
    parts = urlsplit(start)
    address = f"{parts.scheme}://{parts.netloc}/robots.txt"
    robots = urllib.robotparser.RobotFileParser(address)
    try:
        status, body, _ = await client.get(address)
    except (aiohttp.ClientError, TimeoutError):
        status, body = 0, ""
    # No robots.txt (404) allows everything; one that errors is taken as allowing too.
    robots.parse(body.splitlines() if status == 200 else [])
    return robots


def _sitemap(body: str) -> list[str] | None:
    """The URLs a sitemap or sitemap index lists; None when ``body`` is not one."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    if root.tag not in (f"{_SITEMAP_NS}urlset", f"{_SITEMAP_NS}sitemapindex"):
        return None
    return [loc.text.strip() for loc in root.iter(f"{_SITEMAP_NS}loc") if loc.text]


def _links(html: str, base: str) -> list[str]:
    from bs4 import BeautifulSoup

    found = []
    for anchor in BeautifulSoup(html, "html.parser").find_all("a", href=True):
        link = urldefrag(urljoin(base, str(anchor["href"])))[0]
        if link.startswith(("http://", "https://")):
            found.append(link)
    return found
