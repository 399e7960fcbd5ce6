"""The console's web server: a login form, then the overview and the knowledge base's gaps.

Pages are rendered on the server (Jinja2, every value escaped unless it is a chart the server
drew), so a stored question holding HTML shows as text, and the page runs no script at all: its
Content-Security-Policy says so. Every route but the login needs a session; every POST needs
the session's CSRF token.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from aiohttp import web
from markupsafe import Markup

from bot.app.commands.report import build_report
from bot.app.console.auth import COOKIE, Session, Sessions
from bot.app.console.charts import latency_chart, outcomes_chart, questions_chart
from bot.app.console.conversations import find, read
from bot.app.console.knowledge import documents, eval_runs
from bot.app.console.overview import build_overview, period_start
from bot.app.listen import listen
from bot.config import AdminConfig
from bot.knowledge.base import KnowledgeBase
from bot.storage.base import Store

__all__ = ["ConsoleServer"]

log = logging.getLogger(__name__)

#: The periods the overview offers, in days.
PERIODS = (1, 7, 30, 90)
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

SESSION = web.RequestKey("session", Session)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Encode = Callable[[list[str]], np.ndarray]


class ConsoleServer:
    """Serves the console for ``store`` on ``config.host``:``config.port`` (0: any free port)."""

    def __init__(
        self,
        config: AdminConfig,
        token: str,
        store: Store,
        encode: Encode | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        knowledge: KnowledgeBase | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.encode = encode
        self.knowledge = knowledge
        self.clock = clock
        self.sessions = Sessions(token, config.session_hours)
        self.port = config.port
        self._runner: web.AppRunner | None = None
        self._pages = jinja2.Environment(
            loader=jinja2.PackageLoader("bot.app.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}/"

    # -- the pages ------------------------------------------------------------------------
    def _page(self, name: str, status: int = 200, **values: Any) -> web.Response:
        html = self._pages.get_template(name).render(**values)
        return web.Response(text=html, content_type="text/html", status=status, headers=HEADERS)

    async def _login_form(self, request: web.Request) -> web.Response:
        return self._page("login.html", error="")

    async def _login(self, request: web.Request) -> web.Response:
        form = await request.post()
        session_id = self.sessions.login(str(form.get("token", "")))
        if session_id is None:
            log.warning("console: a login with a wrong token from %s", request.remote)
            return self._page("login.html", status=401, error="That token is not right.")
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE,
            session_id,
            httponly=True,
            samesite="Strict",
            path="/",
            max_age=int(self.config.session_hours * 3600),
        )
        raise response

    async def _logout(self, request: web.Request) -> web.Response:
        self.sessions.logout(request.cookies.get(COOKIE, ""))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    def _days(self, request: web.Request) -> int:
        try:
            days = int(request.query.get("days", "7"))
        except ValueError:
            days = 7
        return days if days in PERIODS else 7

    async def _overview(self, request: web.Request) -> web.Response:
        days = self._days(request)
        overview = await build_overview(self.store, days, self.clock())
        outcomes = {name: overview.outcomes[name] for name in OUTCOME_ORDER}
        # Drawn in a thread: a chart takes a tenth of a second, the service's loop has replies.
        questions_svg, outcomes_svg, latency_svg = await asyncio.gather(
            asyncio.to_thread(questions_chart, overview),
            asyncio.to_thread(outcomes_chart, outcomes),
            asyncio.to_thread(latency_chart, overview),
        )
        return self._page(
            "overview.html",
            session=request[SESSION],
            tab="overview",
            days=days,
            periods=PERIODS,
            overview=overview,
            outcomes=outcomes,
            # Drawn here from counts, dates and platform names: nothing a customer wrote.
            questions_svg=Markup(questions_svg),
            outcomes_svg=Markup(outcomes_svg),
            latency_svg=Markup(latency_svg),
        )

    async def _conversations(self, request: web.Request) -> web.Response:
        days = self._days(request)
        query = request.query.get("q", "")[:200]
        session = request[SESSION]
        since = period_start(self.clock(), days)
        return self._page(
            "conversations.html",
            session=session,
            tab="conversations",
            days=days,
            periods=PERIODS,
            query=query,
            found=await find(self.store, query, since, masked=not session.unmasked),
            back=request.path_qs,
        )

    async def _conversation(self, request: web.Request) -> web.Response:
        session = request[SESSION]
        conversation = request.query.get("id", "")
        turns = await read(self.store, conversation, masked=not session.unmasked)
        if turns is None:
            raise web.HTTPNotFound(text="No such conversation.", headers=HEADERS)
        return self._page(
            "conversation.html",
            session=session,
            tab="conversations",
            days=self._days(request),
            periods=PERIODS,
            conversation=conversation,
            turns=turns,
            back=request.path_qs,
        )

    async def _masking(self, request: web.Request) -> web.Response:
        form = await request.post()
        request[SESSION].unmasked = form.get("unmasked") == "1"
        back = str(form.get("back", "/"))
        # Only a path of this console: never an address elsewhere (an open redirect).
        raise web.HTTPSeeOther(back if back.startswith("/") and not back.startswith("//") else "/")

    async def _knowledge(self, request: web.Request) -> web.Response:
        session = request[SESSION]
        notice, session.notice = session.notice, ""
        return self._page(
            "knowledge.html",
            session=session,
            tab="knowledge",
            days=self._days(request),
            notice=notice,
            enabled=self.knowledge is not None,
            documents=await documents(self.knowledge, self.store) if self.knowledge else [],
            drafts=await self.store.pending_drafts(),
            snippets=await self.store.snippets(),
        )

    async def _refresh(self, request: web.Request) -> web.Response:
        session = request[SESSION]
        if self.knowledge is not None:
            try:
                session.notice = f"Brought up to date: {await self.knowledge.refresh()}."
            except Exception as exc:  # a broken file: say so, keep the console up
                log.exception("console: bringing the knowledge base up to date failed")
                session.notice = f"Bringing the knowledge base up to date failed: {exc}"
        raise web.HTTPSeeOther("/knowledge")

    async def _reingest(self, request: web.Request) -> web.Response:
        session = request[SESSION]
        form = await request.post()
        path = str(form.get("path", ""))
        known = {s.path: s for s in await self.knowledge.sources()} if self.knowledge else {}
        source = known.get(path)
        if source is None or self.knowledge is None:
            session.notice = "That document is not in the knowledge base."
        else:
            try:
                report = await self.knowledge.ingest([source.path], source.collection)
                session.notice = f"{source.title} re-ingested: {report}."
            except Exception as exc:  # a file since removed or broken
                log.warning("console: re-ingesting %s failed: %s", source.path, exc)
                session.notice = f"{source.title} could not be re-ingested: {exc}"
        raise web.HTTPSeeOther("/knowledge")

    async def _quality(self, request: web.Request) -> web.Response:
        folder = Path(self.config.eval_dir)
        return self._page(
            "quality.html",
            session=request[SESSION],
            tab="quality",
            days=self._days(request),
            folder=str(folder),
            runs=await asyncio.to_thread(eval_runs, folder),
        )

    async def _gaps(self, request: web.Request) -> web.Response:
        days = self._days(request)
        report = await build_report(self.store, days, top=50, encode=self.encode)
        return self._page(
            "gaps.html",
            session=request[SESSION],
            tab="gaps",
            days=days,
            periods=PERIODS,
            gaps=report.gaps,
        )

    async def _gaps_csv(self, request: web.Request) -> web.Response:
        report = await build_report(self.store, self._days(request), top=500, encode=self.encode)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["count", "question", "also asked as"])
        for gap in report.gaps:
            writer.writerow([gap.count, _cell(gap.question), " | ".join(map(_cell, gap.others))])
        return web.Response(
            text=out.getvalue(),
            content_type="text/csv",
            headers={**HEADERS, "Content-Disposition": 'attachment; filename="gaps.csv"'},
        )

    # -- who may ------------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/login":
            return await handler(request)
        session: Session | None = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            if request.method == "GET":
                raise web.HTTPSeeOther("/login")
            return web.Response(status=401, text="Log in first.", headers=HEADERS)
        if request.method == "POST":
            form = await request.post()
            if not self.sessions.csrf_ok(session, str(form.get("csrf", ""))):
                log.warning("console: a POST to %s without its CSRF token", request.path)
                return web.Response(
                    status=403, text="Missing or wrong CSRF token.", headers=HEADERS
                )
        request[SESSION] = session
        return await handler(request)

    # -- serving ------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.router.add_get("/login", self._login_form)
        app.router.add_post("/login", self._login)
        app.router.add_post("/logout", self._logout)
        app.router.add_get("/", self._overview)
        app.router.add_get("/gaps", self._gaps)
        app.router.add_get("/gaps.csv", self._gaps_csv)
        app.router.add_get("/conversations", self._conversations)
        app.router.add_get("/conversation", self._conversation)
        app.router.add_post("/masking", self._masking)
        app.router.add_get("/knowledge", self._knowledge)
        app.router.add_post("/knowledge/refresh", self._refresh)
        app.router.add_post("/knowledge/reingest", self._reingest)
        app.router.add_get("/quality", self._quality)
        self._runner, self.port = await listen(app, self.config.host, self.config.port)
        log.info("the console at %s", self.url)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


OUTCOME_ORDER = ("answered", "don't know", "handed off", "busy", "rate-limited", "failed")


def _cell(text: str) -> str:
    """A CSV cell a spreadsheet will not run: a leading =, +, - or @ is a formula there."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
