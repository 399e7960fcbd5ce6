"""The web chat over its real protocol: an aiohttp client talks to the adapter on a loopback
port, as a browser would (cookies, websocket, JSON frames)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.settings import WebConfig
from adapters.web import WebAdapter
from bot.app.commands.serve import _run
from bot.app.wiring import build_service
from bot.config import (
    AttachmentsConfig,
    BotConfig,
    Config,
    KnowledgeConfig,
    LimitsConfig,
    StoreConfig,
)
from bot.core.service import Service
from bot.core.wording import FILE_TOO_LARGE
from bot.events import ConversationKey
from bot.generation.base import ChatMessage
from bot.storage.sqlite import SQLiteStore
from tests.conftest import make_config
from tests.scripted import ScriptedBackend

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30.0


def web_config(tmp_path: Path, **web: Any) -> Config:
    return Config(
        bot=BotConfig(name="Parley", company="Acme Cloud"),
        store=StoreConfig(path=str(tmp_path / "parley.db")),
        limits=LimitsConfig(
            user_per_minute=0, channel_per_minute=0, bot_messages_per_channel_minute=0
        ),
        knowledge=KnowledgeConfig(enabled=False),
        sections={"web": WebConfig(port=0, **web)},
    )


@contextlib.asynccontextmanager
async def chat_server(
    config: Config, backend: ScriptedBackend | None = None, service: Service | None = None
) -> AsyncIterator[WebAdapter]:
    """The adapter serving on a free loopback port, over a real service (ScriptedBackend's
    answers unless a started ``service`` is given)."""
    own = service is None
    if service is None:
        service = Service(config, backend or ScriptedBackend(), SQLiteStore(config.store.path))
        await service.start()
    adapter = WebAdapter(config, service)
    task = asyncio.create_task(adapter.run())
    try:
        ready = asyncio.create_task(adapter.serving.wait())
        await asyncio.wait([ready, task], timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if task.done():
            task.result()
        assert adapter.serving.is_set(), "the web chat did not start"
        yield adapter
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if own:
            await service.close()


class Browser:
    """One browser: its own cookie jar; ``open()`` is a tab (a websocket)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def load(self) -> str:
        async with self.session.get(self.url) as response:
            assert response.status == 200
            return await response.text()

    async def open(self, conversation: str | None = None, **options: Any) -> Tab:
        params = {"conversation": conversation} if conversation else {}
        ws = await self.session.ws_connect(self.url + "ws", params=params, **options)
        tab = Tab(ws)
        tab.hello = await tab.next("hello")
        return tab

    def key(self, conversation: str) -> ConversationKey:
        """Where the store keeps this browser's ``conversation``."""
        visitor = next(c.value for c in self.session.cookie_jar if c.key == "parley_visitor")
        return ConversationKey("web", "", visitor, conversation)

    async def close(self) -> None:
        await self.session.close()


class Tab:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.hello: dict[str, Any] = {}
        self.seen: list[dict[str, Any]] = []
        self._ids = iter(range(1, 1_000_000))

    @property
    def conversation(self) -> str:
        return str(self.hello["conversation"])

    async def receive(self) -> dict[str, Any]:
        message = await self.ws.receive(timeout=WAIT)
        assert message.type is aiohttp.WSMsgType.TEXT, f"socket ended: {message}"
        data: dict[str, Any] = json.loads(message.data)
        self.seen.append(data)
        return data

    async def next(self, kind: str, ask: str | None = None) -> dict[str, Any]:
        while True:
            message = await self.receive()
            if message["type"] == kind and (ask is None or message.get("id") == ask):
                return message

    async def send(self, kind: str = "ask", text: str | None = None) -> str:
        ask = f"q{next(self._ids)}"
        message: dict[str, Any] = {"type": kind, "id": ask}
        if text is not None:
            message["text"] = text
        await self.ws.send_str(json.dumps(message))
        return ask

    async def ask(self, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The final answer to ``text`` and the ``done`` that ends it."""
        ask = await self.send("ask", text)
        final = await self.next("final", ask)
        done = await self.next("done", ask)
        return final, done

    def for_ask(self, ask: str) -> list[dict[str, Any]]:
        return [m for m in self.seen if m.get("id") == ask]


@pytest.fixture
async def browsers() -> AsyncIterator[Callable[[str], Browser]]:
    opened: list[Browser] = []

    def browser(url: str) -> Browser:
        opened.append(Browser(url))
        return opened[-1]

    yield browser
    for each in opened:
        await each.close()


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - a plain counter, with no event to wait on
            await asyncio.sleep(0.01)


def echo_questions(messages: Sequence[ChatMessage]) -> str:
    return "You asked: " + " | ".join(m.content for m in messages if m.role == "user")


async def test_the_page_names_the_company_and_escapes_it(
    tmp_path: Path, browsers: Callable[[str], Browser]
) -> None:
    config = dataclasses.replace(
        web_config(tmp_path), bot=BotConfig(name="Parley", company="Bits & <Bytes>")
    )
    async with chat_server(config) as chat:
        browser = browsers(chat.url)
        async with browser.session.get(chat.url) as response:
            page = await response.text()
            headers = response.headers
        assert "<title>Bits &amp; &lt;Bytes&gt; support</title>" in page
        assert "<Bytes>" not in page
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        for path in ("static/chat.js", "static/chat.css", "widget.js"):
            async with browser.session.get(chat.url + path) as response:
                assert response.status == 200, path
                assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_question_gets_a_streamed_answer(
    tmp_path: Path, browsers: Callable[[str], Browser]
) -> None:
    answer = "Hello! To reset your password, open Settings and choose **Reset**."
    backend = ScriptedBackend(answer, chunk=6, delay=0.01)
    async with chat_server(web_config(tmp_path), backend) as chat:
        browser = browsers(chat.url)
        await browser.load()
        tab = await browser.open()
        assert tab.hello["company"] == "Acme Cloud" and tab.hello["history"] == []
        ask = await tab.send("ask", "How do I reset my password?")
        final = await tab.next("final", ask)
        done = await tab.next("done", ask)
        kinds = [m["type"] for m in tab.for_ask(ask)]
        assert kinds[0] == "start" and kinds[-2:] == ["final", "done"]
        texts = [m for m in tab.for_ask(ask) if m["type"] == "text"]
        assert len(texts) >= 2, "the answer arrived in one piece, not streamed"
        assert "".join(m.get("append", "") for m in texts) == answer
        assert final["text"] == answer and not final["failed"]
        assert done["outcome"] == "answered" and done["reply"].startswith("web-")


async def test_two_browsers_and_two_tabs_are_separate_conversations(
    tmp_path: Path, browsers: Callable[[str], Browser]
) -> None:
    async with chat_server(web_config(tmp_path), ScriptedBackend(echo_questions)) as chat:
        alice, bob = browsers(chat.url), browsers(chat.url)
        await alice.load()
        await bob.load()
        tab_a, tab_b = await alice.open(), await bob.open()
        second_tab = await alice.open()
        assert len({tab_a.conversation, tab_b.conversation, second_tab.conversation}) == 3
        answers = await asyncio.gather(
            tab_a.ask("my order 1234"), tab_b.ask("my invoice"), second_tab.ask("a refund")
        )
        (a, _), (b, _), (c, _) = answers
        assert a["text"] == "You asked: my order 1234"
        assert b["text"] == "You asked: my invoice"
        assert c["text"] == "You asked: a refund"
        # Each continues its own context.
        (again, _) = await tab_a.ask("is it shipped?")
        assert again["text"] == "You asked: my order 1234 | is it shipped?"


async def test_a_reload_shows_the_history_and_only_to_its_browser(
    tmp_path: Path, browsers: Callable[[str], Browser]
) -> None:
    async with chat_server(web_config(tmp_path), ScriptedBackend(echo_questions)) as chat:
        browser = browsers(chat.url)
        await browser.load()
        tab = await browser.open()
        await tab.ask("where is my parcel?")
        conversation = tab.conversation
        await tab.ws.close()
        # A reload: the tab brings its conversation id back.
        reloaded = await browser.open(conversation)
        assert reloaded.conversation == conversation
        assert [(t["role"], t["text"]) for t in reloaded.hello["history"]] == [
            ("user", "where is my parcel?"),
            ("assistant", "You asked: where is my parcel?"),
        ]
        async with browser.session.get(
            chat.url + "history", params={"conversation": conversation}
        ) as response:
            assert (await response.json())["history"] == reloaded.hello["history"]
        await reloaded.ws.close()
        # The browser started afresh (no tab id): its last conversation, as no tab shows it.
        fresh = await browser.open()
        assert fresh.conversation == conversation and len(fresh.hello["history"]) == 2
        # The same id from another browser names nothing there.
        stranger = browsers(chat.url)
        await stranger.load()
        other = await stranger.open(conversation)
        assert other.hello["history"] == []


async def test_oversized_input_is_refused_with_a_message(
    tmp_path: Path, browsers: Callable[[str], Browser]
) -> None:
    config = dataclasses.replace(web_config(tmp_path), bot=BotConfig(max_message_chars=100))
    backend = ScriptedBackend("Sure.")
    async with chat_server(config, backend) as chat:
        browser = browsers(chat.url)
        await browser.load()
        tab = await browser.open()
        assert tab.hello["limit"] == 100
        ask = await tab.send("ask", "x" * 101)
        notice = await tab.next("notice", ask)
        assert "101 characters" in notice["text"] and "at most 100" in notice["text"]
        assert backend.prompts == []
        final, _ = await tab.ask("y" * 100)
        assert final["text"] == "Sure."


async def test_a_page_sending_too_fast_gets_a_notice(
    tmp_path: Path, browsers: Callable[[str], Browser]
) -> None:
    config = web_config(tmp_path, messages_per_minute=1.0, burst=2)
    async with chat_server(config, ScriptedBackend("ok")) as chat:
        browser = browsers(chat.url)
        await browser.load()
        tab = await browser.open()
        await tab.ask("one")
        await tab.ask("two")
        ask = await tab.send("ask", "three")
        notice = await tab.next("notice", ask)
        assert "faster than I can answer" in notice["text"]


@pytest.mark.parametrize("how", ["closed", "dropped"])
async def test_a_closed_or_broken_socket_stops_the_answer(
    tmp_path: Path, browsers: Callable[[str], Browser], how: str
) -> None:
    # Written out in full this answer would take minutes.
    backend = ScriptedBackend("word " * 20_000, chunk=5, delay=0.01)
    async with chat_server(web_config(tmp_path), backend) as chat:
        browser = browsers(chat.url)
        await browser.load()
        tab = await browser.open()
        ask = await tab.send("ask", "tell me everything")
        await tab.next("text", ask)
        assert backend.active == 1
        if how == "closed":
            await tab.ws.close()
        else:
            # No close frame: the connection just goes away, as a phone losing signal.
            tab.ws._response.close()
        await eventually(lambda: backend.active == 0)
        turns = await chat.service.store.history(browser.key(tab.conversation))
        assert [t.role for t in turns] == ["user", "assistant"]
        assert turns[-1].status == "partial" and len(turns[-1].content) < 20_000


async def test_answers_can_be_rated_by_their_reader_only(
    tmp_path: Path, browsers: Callable[[str], Browser]
) -> None:
    async with chat_server(web_config(tmp_path), ScriptedBackend("Try turning it off.")) as chat:
        browser = browsers(chat.url)
        await browser.load()
        tab = await browser.open()
        _, done = await tab.ask("it's broken")
        await tab.ws.send_json({"type": "rate", "reply": done["reply"], "rating": "down"})
        rated = await tab.next("rated")
        assert rated == {"type": "rated", "reply": done["reply"], "rating": "down", "ok": True}
        stranger = browsers(chat.url)
        await stranger.load()
        other = await stranger.open()
        await other.ws.send_json({"type": "rate", "reply": done["reply"], "rating": "up"})
        assert (await other.next("rated"))["ok"] is False


async def test_talk_to_a_human_hands_off_and_the_bot_goes_quiet(
    tmp_path: Path, browsers: Callable[[str], Browser]
) -> None:
    backend = ScriptedBackend("bot answer")
    async with chat_server(web_config(tmp_path), backend) as chat:
        browser = browsers(chat.url)
        await browser.load()
        tab = await browser.open()
        ask = await tab.send("human")
        final = await tab.next("final", ask)
        assert "Acme Cloud support team" in final["text"]
        assert (await tab.next("done", ask))["outcome"] == "handed_off"
        ask = await tab.send("ask", "hello?")
        done = await tab.next("done", ask)
        assert done["outcome"] == "handed_off" and "reply" not in done
        assert backend.prompts == []


async def test_a_socket_from_another_site_is_refused(
    tmp_path: Path, browsers: Callable[[str], Browser]
) -> None:
    async with chat_server(web_config(tmp_path)) as chat:
        browser = browsers(chat.url)
        # The handshake as a plain request, so the refused response is released properly.
        handshake = {
            "Origin": "https://evil.example",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        async with browser.session.get(chat.url + "ws", headers=handshake) as refused:
            assert refused.status == 403
        same = await browser.open(headers={"Origin": chat.url.rstrip("/")})
        assert same.hello["type"] == "hello"


async def test_stopping_the_server_tells_open_pages(
    tmp_path: Path, browsers: Callable[[str], Browser]
) -> None:
    async with chat_server(web_config(tmp_path)) as chat:
        browser = browsers(chat.url)
        tab = await browser.open()
    message = await tab.ws.receive(timeout=WAIT)
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert message.data == aiohttp.WSCloseCode.GOING_AWAY


async def test_the_tiny_model_streams_an_answer(
    tmp_path: Path, tiny_model_dir: Path, browsers: Callable[[str], Browser]
) -> None:
    # Sampled: the random model's greedy output is blank lines, which cleaning removes.
    config = make_config(tiny_model_dir, tmp_path, temperature=1.0, max_new_tokens=24)
    config = dataclasses.replace(config, sections={"web": WebConfig(port=0)})
    async with build_service(config) as service, chat_server(config, service=service) as chat:
        browser = browsers(chat.url)
        await browser.load()
        tab = await browser.open()
        ask = await tab.send("ask", "How do I change my plan?")
        final = await tab.next("final", ask)
        assert final["text"].strip() and not final["failed"], final
        assert any(m["type"] == "text" for m in tab.for_ask(ask))


async def test_run_without_web_or_platforms_says_what_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = dataclasses.replace(web_config(tmp_path), sections={"web": WebConfig(enabled=False)})
    assert await _run(config) == 2
    assert "web.enabled is false" in capsys.readouterr().err


def test_parley_run_serves_the_web_chat_until_ctrl_c(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The README's run command: the URL is printed, the page answers, Ctrl-C stops it."""
    config = tmp_path / "parley.toml"
    config.write_text(
        f'[model]\nname = "{tiny_model_dir}"\nmax_new_tokens = 8\ncontext_window = 512\n'
        f'[store]\npath = "{tmp_path / "parley.db"}"\n'
        "[knowledge]\nenabled = false\n[ops]\nenabled = false\n[web]\nport = 0\n"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(config), "run"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"web chat at (http://127\.0\.0\.1:\d+/)", line)
        assert found, f"no URL printed: {line!r}"

        async def ask(url: str) -> str:
            async with contextlib.AsyncExitStack() as stack:
                browser = Browser(url)
                stack.push_async_callback(browser.close)
                await browser.load()
                tab = await browser.open()
                final, _ = await tab.ask("hello")
                return str(final["text"])

        assert asyncio.run(ask(found.group(1))).strip()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


async def _upload(browser: Browser, name: str, data: bytes, **headers: str) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    async with browser.session.post(browser.url + "upload", data=form, headers=headers) as got:
        return got.status, await got.json()


async def test_a_file_uploaded_from_the_page_is_read_with_the_question(
    tmp_path: Path, browsers: Callable[[str], Browser]
) -> None:
    config = dataclasses.replace(
        web_config(tmp_path), attachments=AttachmentsConfig(max_bytes=1000)
    )
    async with chat_server(config, ScriptedBackend(echo_questions)) as chat:
        browser, stranger = browsers(chat.url), browsers(chat.url)
        await browser.load()
        await stranger.load()
        tab = await browser.open()
        status, notes = await _upload(
            browser, "notes.txt", b"Parcel 7781 left the depot on Monday."
        )
        assert status == 200 and notes["name"] == "notes.txt" and not notes["notice"]
        status, big = await _upload(browser, "big.log", b"x" * 5000)
        assert status == 200 and big["notice"] == FILE_TOO_LARGE.format(
            name="big.log", limit="1 KB"
        )
        # Another browser cannot send this visitor's upload, nor can another site upload.
        assert (await _upload(stranger, "x.txt", b"x", Origin="http://evil.example"))[0] == 403
        stolen = await stranger.open()
        ask = f"q{next(tab._ids)}"
        await stolen.ws.send_str(
            json.dumps({"type": "ask", "id": ask, "text": "mine?", "files": [notes["id"]]})
        )
        assert (await stolen.next("final", ask))["text"] == "You asked: mine?"

        ask = f"q{next(tab._ids)}"
        await tab.ws.send_str(
            json.dumps(
                {
                    "type": "ask",
                    "id": ask,
                    "text": "where is it?",
                    "files": [notes["id"], big["id"]],
                }
            )
        )
        final = await tab.next("final", ask)
        assert final["text"].startswith(
            "You asked: where is it?\n\n[Attached file: notes.txt]\n"
            "Parcel 7781 left the depot on Monday.\n[End of notes.txt]"
        )
        assert final["text"].endswith(FILE_TOO_LARGE.format(name="big.log", limit="1 KB"))
        # The page shows the question with its file's name after a reload, not its text.
        again = await browser.open(tab.conversation)
        assert again.hello["history"][0]["text"] == "where is it?\n📎 notes.txt"
        # Broken uploads: one line each.
        async with browser.session.post(browser.url + "upload", data=b"not a form") as got:
            assert got.status == 400 and (await got.json())["error"]
