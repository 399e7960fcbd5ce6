"""The web chat: a support page, the websocket it talks over, and a widget other sites embed.

What ``parley run`` serves by default, so a newcomer without any platform's tokens has a chat
at once. Plain HTML, CSS and JavaScript from ``web_static/`` (no front-end build step). The page
shows a user's words as ``textContent`` and an answer as the HTML the server rendered from its
Markdown (``adapters.markdown``: markdown-it-py, raw HTML escaped, only http(s) and mailto links).

Who is who: a browser gets an opaque random visitor id in an HttpOnly, SameSite=Lax cookie, and
each tab its own conversation id, kept in the tab's ``sessionStorage`` so that a reload continues
it. The conversation key is ``("web", "", visitor, conversation)``: a conversation id copied to
another browser names nothing there. A tab that brings no id (a new tab, or the browser started
afresh) resumes the visitor's last conversation (a second cookie) unless another open tab shows
it, and otherwise starts a new one; a duplicated tab copies ``sessionStorage`` and so shares its
conversation.

The socket protocol is JSON text frames. The page sends ``ask`` (``id``, ``text``, and the ids of
``files`` it posted to ``/upload``: adapters.web_uploads), ``human``,
``reset`` and ``rate`` (``reply``, ``rating``); the server sends ``hello`` (the conversation and
its history), then per question ``start``, ``text`` (``append`` to what the page has, or the
whole ``text`` when cleaning changed it; ``html``: the whole answer so far, rendered),
``final``, ``notice`` (a refusal: too long, too fast) and ``done`` (with the reply id to rate,
for a generated answer). One writer task per socket
sends; an answer's pending text is a merging mailbox, so a slow page never slows decoding.

A socket that closes (or stops answering heartbeats) cancels the answer being written for it,
unless another open tab shows the same conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import re
import secrets
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import yarl
from aiohttp import WSCloseCode, WSMsgType, web

from adapters.markdown import to_html
from adapters.settings import WebConfig
from adapters.web_page import Page, WebReply
from adapters.web_uploads import Uploads
from bot.config import Config
from bot.core.attachments import split_files
from bot.core.ratelimit import TokenBucket
from bot.core.service import Outcome, Service
from bot.core.wording import APOLOGY, SLOW_DOWN
from bot.errors import PlatformError, StoreError
from bot.events import ConversationKey, Event, Rating

__all__ = ["WebAdapter", "create", "enabled"]

log = logging.getLogger(__name__)

PLATFORM = "web"
STATIC = Path(__file__).with_name("web_static")
VISITOR_COOKIE = "parley_visitor"
LAST_COOKIE = "parley_conversation"
COOKIE_SECONDS = 365 * 86400
# Long enough that a sleeping laptop's tab is not dropped at once; short enough that a vanished
# phone stops its answer within a minute.
HEARTBEAT_SECONDS = 20.0
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
_ASK_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOST = re.compile(r"[A-Za-z0-9.:\[\]-]+")
RATINGS: dict[str, Rating] = {"up": "up", "down": "down"}

TOO_LONG = (
    "Your message is {length:,} characters long; I can read at most {limit:,}."
    " Please shorten it and send it again."
)
NOT_UNDERSTOOD = "Sorry, this page sent something I didn't understand. Please reload it."
NO_HISTORY = "I can't show our earlier messages right now; new ones work as usual."
FULL = "Too many people are chatting right now. Please try again in a few minutes."


def _as_asked(content: str) -> str:
    """A question as the page showed it when sent: its text, then its files by name."""
    question, files = split_files(content)
    return "\n".join([question, *(f"📎 {file.name}" for file in files)]).strip()


def enabled(config: Config) -> bool:
    return config.section(WebConfig).enabled


def create(config: Config, service: Service) -> WebAdapter:
    return WebAdapter(config, service)


def _token() -> str:
    return secrets.token_urlsafe(18)


def _valid(value: str | None) -> str | None:
    return value if value is not None and _TOKEN.fullmatch(value) else None


class WebAdapter:
    name = PLATFORM

    def __init__(self, config: Config, service: Service) -> None:
        self.config = config
        self.section = config.section(WebConfig)
        self.service = service
        self.host = self.section.host
        self.port = self.section.port
        #: Set once the server listens; ``url`` is then final (port 0 becomes the real port).
        self.serving = asyncio.Event()
        bot = config.bot
        self._handoff = self.section.handoff_message.format(company=bot.company, name=bot.name)
        self._limit = bot.max_message_chars
        page = (STATIC / "index.html").read_text(encoding="utf-8")
        self._index = page.replace("{{company}}", html.escape(bot.company)).replace(
            "{{name}}", html.escape(bot.name)
        )
        self._pages: set[Page] = set()
        self._live: Counter[ConversationKey] = Counter()
        self._runner: web.AppRunner | None = None
        self._uploads = Uploads(config.attachments)

    @property
    def url(self) -> str:
        # Listening on every address: this machine's own is the one to click.
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    @property
    def connected(self) -> bool:
        """For /healthz: the page is being served."""
        return self.serving.is_set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index_page)
        app.router.add_get("/ws", self._socket)
        app.router.add_get("/history", self._history_endpoint)
        app.router.add_post("/upload", self._upload)
        app.router.add_get("/widget.js", self._widget)
        app.router.add_static("/static", STATIC, show_index=False)
        app.on_response_prepare.append(self._headers)
        app.on_shutdown.append(self._close_pages)
        return app

    async def run(self) -> None:
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise PlatformError(
                f"cannot serve the web chat on {self.host}:{self.port}"
                f" ({exc.strerror or exc}): set web.port, or web.enabled = false"
            ) from None
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self._runner = runner
        self.serving.set()
        log.info("web chat at %s", self.url)
        try:
            await asyncio.Event().wait()
        finally:
            self.serving.clear()
            self._runner = None
            await runner.cleanup()

    # -- HTTP ---------------------------------------------------------------------------------

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        host = request.host if _HOST.fullmatch(request.host) else ""
        sockets = f" ws://{host} wss://{host}" if host else ""
        origins = self.section.embed_origins
        ancestors = "*" if "*" in origins else " ".join(["'self'", *origins])
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
            f" connect-src 'self'{sockets}; base-uri 'none'; form-action 'none';"
            f" frame-ancestors {ancestors}",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-cache")

    def _set_cookie(self, response: web.StreamResponse, name: str, value: str) -> None:
        response.set_cookie(
            name, value, max_age=COOKIE_SECONDS, path="/", httponly=True, samesite="Lax"
        )

    async def _index_page(self, request: web.Request) -> web.Response:
        response = web.Response(text=self._index, content_type="text/html")
        if _valid(request.cookies.get(VISITOR_COOKIE)) is None:
            self._set_cookie(response, VISITOR_COOKIE, _token())
        return response

    async def _widget(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "widget.js")

    async def _history_endpoint(self, request: web.Request) -> web.Response:
        visitor = _valid(request.cookies.get(VISITOR_COOKIE))
        conversation = _valid(request.query.get("conversation"))
        if visitor is None or conversation is None:
            return web.json_response({"error": "no such conversation"}, status=404)
        try:
            history = await self._history(ConversationKey(PLATFORM, "", visitor, conversation))
        except StoreError:
            return web.json_response({"error": NO_HISTORY}, status=503)
        return web.json_response({"conversation": conversation, "history": history})

    async def _upload(self, request: web.Request) -> web.Response:
        visitor = _valid(request.cookies.get(VISITOR_COOKIE))
        if not self._same_origin(request) or visitor is None:
            return web.json_response({"error": "uploads come from the chat page"}, status=403)
        return await self._uploads.receive(request, visitor)

    async def _history(self, key: ConversationKey) -> list[dict[str, str]]:
        turns = await self.service.history(key)
        return [
            {
                "role": turn.role,
                "text": _as_asked(turn.content) if turn.role == "user" else turn.content,
                "html": to_html(turn.content) if turn.role == "assistant" else "",
                "status": turn.status,
            }
            for turn in turns
            if turn.content
        ]

    # -- the socket ---------------------------------------------------------------------------

    def _same_origin(self, request: web.Request) -> bool:
        """A browser page on another site must not talk as this site's visitor. (Non-browser
        clients send no Origin.) Behind a proxy, pass the Host header through."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        with contextlib.suppress(ValueError):
            return yarl.URL(origin).raw_authority.lower() == request.host.lower()
        return False

    def _conversation(self, visitor: str, request: web.Request) -> str:
        asked = _valid(request.query.get("conversation"))
        if asked is not None:
            return asked
        last = _valid(request.cookies.get(LAST_COOKIE))
        if last is not None and not self._live[ConversationKey(PLATFORM, "", visitor, last)]:
            return last
        return _token()

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if not self._same_origin(request):
            raise web.HTTPForbidden(text="cross-site chat connections are refused")
        if len(self._pages) >= self.section.max_connections:
            raise web.HTTPServiceUnavailable(text=FULL)
        visitor = _valid(request.cookies.get(VISITOR_COOKIE)) or _token()
        conversation = self._conversation(visitor, request)
        # JSON may spend up to 12 bytes on a character (an escaped surrogate pair).
        ws = web.WebSocketResponse(
            heartbeat=HEARTBEAT_SECONDS, max_msg_size=self._limit * 12 + 1024, timeout=5.0
        )
        self._set_cookie(ws, VISITOR_COOKIE, visitor)
        self._set_cookie(ws, LAST_COOKIE, conversation)
        await ws.prepare(request)
        section = self.section
        per_second = section.messages_per_minute / 60.0
        burst = float(max(1, section.burst))
        page = Page(
            ws,
            ConversationKey(PLATFORM, "", visitor, conversation),
            TokenBucket(per_second, burst, burst, time.monotonic()),
        )
        self._pages.add(page)
        self._live[page.key] += 1
        writer = asyncio.create_task(page.write(), name=f"web writer {conversation[:8]}")
        try:
            await self._hello(page)
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    self._receive(page, message.data)
                elif message.type is WSMsgType.ERROR:
                    break
        finally:
            await self._leave(page, writer)
        return ws

    async def _hello(self, page: Page) -> None:
        bot = self.config.bot
        hello: dict[str, Any] = {
            "type": "hello",
            "conversation": page.key.thread,
            "name": bot.name,
            "company": bot.company,
            "limit": self._limit,
            "history": [],
        }
        try:
            hello["history"] = await self._history(page.key)
        except StoreError:
            log.exception("cannot read the history of %s", page.key)
            hello["notice"] = NO_HISTORY
        page.send(hello)

    async def _leave(self, page: Page, writer: asyncio.Task[None]) -> None:
        self._pages.discard(page)
        self._live[page.key] -= 1
        if self._live[page.key] <= 0:
            del self._live[page.key]
        unfinished = any(not reply.finished for reply in page.replies)
        for task in page.answers:
            task.cancel()
        # Nobody is left to read the answer: stop generating it (handle() shields it).
        stop = unfinished and page.key not in self._live
        if stop and self.service.cancel(page.key):
            log.info("page closed: stopped answering in %s", page.key)
        await asyncio.gather(*page.answers, return_exceptions=True)
        # Ratings already clicked are still recorded.
        await asyncio.gather(*page.chores, return_exceptions=True)
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)

    async def _close_pages(self, app: web.Application) -> None:
        await asyncio.gather(
            *(
                page.ws.close(code=WSCloseCode.GOING_AWAY, message=b"the server is stopping")
                for page in list(self._pages)
            ),
            return_exceptions=True,
        )

    def _receive(self, page: Page, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            page.send({"type": "notice", "id": None, "text": NOT_UNDERSTOOD})
            return
        kind = message.get("type")
        if kind == "rate":
            self._rate(page, message.get("reply"), message.get("rating"))
            return
        ask = message.get("id")
        if not isinstance(ask, str) or not _ASK_ID.fullmatch(ask):
            page.send({"type": "notice", "id": None, "text": NOT_UNDERSTOOD})
            return
        commands = {"human": "human", "reset": "reset"}
        text = commands.get(kind) if isinstance(kind, str) else None
        if kind == "ask":
            text = message.get("text")
        uploaded = message.get("files", [])
        if not isinstance(text, str) or not isinstance(uploaded, list):
            page.send({"type": "notice", "id": ask, "text": NOT_UNDERSTOOD})
            return
        if len(text) > self._limit:
            notice = TOO_LONG.format(length=len(text), limit=self._limit)
            page.send({"type": "notice", "id": ask, "text": notice})
            return
        if page.bucket.rate > 0 and not page.bucket.take(time.monotonic()):
            seconds = max(1, round(page.bucket.seconds_until_one()))
            page.send({"type": "notice", "id": ask, "text": SLOW_DOWN.format(seconds=seconds)})
            return
        event = Event(
            platform=PLATFORM,
            channel=page.visitor,
            thread=page.key.thread,
            user=page.visitor,
            user_name="web visitor",
            text=text,
            message_id=uuid.uuid4().hex,
            is_dm=True,
            files=self._uploads.take(page.visitor, uploaded),
        )
        reply = WebReply(page, ask, self._handoff)
        task = asyncio.create_task(self._answer(page, event, reply), name=f"web {ask}")
        page.answers.add(task)
        task.add_done_callback(page.answers.discard)

    async def _answer(self, page: Page, event: Event, reply: WebReply) -> None:
        page.replies.add(reply)
        try:
            outcome = await self.service.handle(event, reply)
        except Exception:
            log.exception("answering on the web page %s failed", page.key)
            if not reply.finished:
                await reply.fail(APOLOGY)
            outcome = None
        finally:
            page.replies.discard(reply)
        done: dict[str, Any] = {
            "type": "done",
            "id": reply.ask,
            "outcome": outcome.value if outcome is not None else "failed",
        }
        if outcome is Outcome.ANSWERED and reply.finished and not reply.failed:
            done["reply"] = reply.message_id
        page.send(done)

    def _rate(self, page: Page, reply_id: object, rating: object) -> None:
        chosen = RATINGS.get(rating) if isinstance(rating, str) else None
        if not isinstance(reply_id, str) or not reply_id.startswith("web-") or chosen is None:
            page.send({"type": "notice", "id": None, "text": NOT_UNDERSTOOD})
            return
        scope = ConversationKey(PLATFORM, "", page.visitor)

        async def record() -> None:
            ok = await self.service.feedback(scope, reply_id, page.visitor, chosen)
            page.send({"type": "rated", "reply": reply_id, "rating": chosen, "ok": ok})

        task = asyncio.create_task(record(), name=f"web rating {reply_id}")
        page.chores.add(task)
        task.add_done_callback(page.chores.discard)
