"""A fake Slack on 127.0.0.1: the Web API methods the adapter calls, and Socket Mode.

The unmodified slack_sdk / slack-bolt clients talk to it. Web API answers are shaped like
Slack's: HTTP 200 with ``{"ok": true, …}`` or ``{"ok": false, "error": …}``, and HTTP 429 with
``Retry-After`` and ``{"ok": false, "error": "ratelimited"}`` when a test asks for one. Requests
are read the way Slack reads them: the token from ``Authorization: Bearer``, arguments from the
query string, a form or a JSON body. The streaming methods keep the streamed Markdown (the
``chunks`` of type ``markdown_text``) on the message, and can be refused on demand.

Socket Mode: ``apps.connections.open`` (app-level token only) hands out a ``ws://`` URL; the
socket sends ``hello``, then the envelopes a test sends with ``send_envelope``, and records each
``envelope_id`` the client acknowledges. As Slack does, an envelope goes to one of the open
connections (in turn), waits for one while none is open, and one not acknowledged within
``ack_within`` seconds is delivered again (``retry_attempt`` counting, ``retry_reason``
"timeout"), up to ``retries`` times: a process killed before it acknowledged gets it again
once it is back.

For HTTP mode, ``signed_headers`` signs a body with the v0 HMAC scheme, as Slack does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

__all__ = [
    "Call",
    "FakeSlack",
    "block_action",
    "event_body",
    "signed_headers",
    "view_submission",
]

T = TypeVar("T")
TEAM = "T0000TEAM"
BOT_USER = "U0000BOT1"
BOT_ID = "B0000BOT1"
ALICE = "U0000ALCE"
BOB = "U0000BOB1"
OTHER_BOT_USER = "U0000OBOT"
CHANNEL = "C0000GNRL"
DM = "D0000ALCE"
STAFF_GROUP = "S0000SUPP"
BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-test-app-token"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NAMES = {ALICE: "alice", BOB: "bob", BOT_USER: "parley", OTHER_BOT_USER: "otherbot"}
_ts = itertools.count(1)


def new_ts() -> str:
    """A message timestamp, unique and increasing, shaped like Slack's."""
    return f"{int(time.time())}.{next(_ts):06d}"


def signed_headers(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    base = f"v0:{stamp}:{body}".encode()
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest}",
    }


def event_body(event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """An Events API ``event_callback`` wrapping ``event``."""
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM,
        "api_app_id": "A0000APP1",
        "event": {"event_ts": event.get("ts", new_ts()), "team": TEAM, **event},
        "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(time.time()),
        "authorizations": [
            {"team_id": TEAM, "user_id": BOT_USER, "is_bot": True, "is_enterprise_install": False}
        ],
        "is_ext_shared_channel": False,
    }


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str


@dataclass
class Message:
    ts: str
    channel: str
    thread_ts: str | None
    text: str = ""
    markdown: str = ""
    streaming: bool = False
    stopped: bool = False
    updates: int = 0
    user: str = BOT_USER
    ephemeral: bool = False
    #: The message's Block Kit blocks, as last posted or updated.
    blocks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def body(self) -> str:
        """What the message shows: its Markdown if it has any, else its mrkdwn text."""
        return self.markdown or self.text


@dataclass
class FakeSlack:
    refuse_streaming: bool = False
    ack_within: float = 3.0
    retries: int = 3
    calls: list[Call] = field(default_factory=list)
    messages: dict[str, Message] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    sent_envelopes: list[str] = field(default_factory=list)
    #: Every delivery of an envelope: its id and ``retry_attempt``.
    deliveries: list[tuple[str, int]] = field(default_factory=list)
    connections: int = 0
    #: The modals the bot opened (``views.open``), in order.
    views: list[dict[str, Any]] = field(default_factory=list)
    _undelivered: list[dict[str, Any]] = field(default_factory=list)
    _redelivering: set[asyncio.Task[None]] = field(default_factory=set)
    _turn: int = 0
    _limits: dict[str, list[float]] = field(default_factory=dict)
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _changed: asyncio.Condition | None = None
    _runner: web.AppRunner | None = None
    port: int = 0
    #: Files users shared, by path, and each download: (path, the token it came with).
    files: dict[str, bytes] = field(default_factory=dict)
    downloads: list[tuple[str, str]] = field(default_factory=list)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    async def start(self) -> FakeSlack:
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/files-pri/{tail:.*}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        for task in self._redelivering:
            task.cancel()
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what a test does ----------------------------------------------------------------------

    def rate_limit(self, method: str, *retry_after: float) -> None:
        """The next calls of ``method`` get a 429 with these Retry-After values, in order."""
        self._limits.setdefault(method, []).extend(retry_after)

    async def send_envelope(self, kind: str, payload: dict[str, Any]) -> str:
        """Send a Socket Mode envelope (``events_api``, ``slash_commands``) to a client, now or
        once one connects, and again while it is not acknowledged."""
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": kind,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": 0,
            "retry_reason": "",
        }
        self.sent_envelopes.append(envelope_id)
        await self._deliver(envelope)
        task = asyncio.create_task(self._redeliver(envelope))
        self._redelivering.add(task)
        task.add_done_callback(self._redelivering.discard)
        return envelope_id

    def share(self, name: str, content: bytes, mimetype: str) -> dict[str, Any]:
        """A file a user shares: its object, as a ``message``'s or ``app_mention``'s files
        list carries it; served to the bot token only."""
        ident = "F" + uuid.uuid4().hex[:10].upper()
        path = f"/files-pri/{TEAM}-{ident}/download/{name}"
        self.files[path] = content
        url = f"http://127.0.0.1:{self.port}{path}"
        return {
            "id": ident,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rpartition(".")[2],
            "size": len(content),
            "mode": "hosted",
            "url_private": url,
            "url_private_download": url,
        }

    async def _file(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.downloads.append((request.path, token))
        content = self.files.get(request.path)
        if token != BOT_TOKEN:
            # As Slack does: a sign-in page, with a 200.
            return web.Response(
                text="<html><body>Sign in to Slack</body></html>", content_type="text/html"
            )
        if content is None:
            return web.Response(status=404, text="file_not_found")
        return web.Response(body=content, content_type="application/octet-stream")

    def called(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The bot's messages in a thread, oldest first."""
        return [
            m
            for m in self.messages.values()
            if m.channel == channel and m.thread_ts == thread_ts and m.user == BOT_USER
        ]

    async def wait_for(self, probe: Callable[[], T | None], within: float = 20.0) -> T:
        """Wait until ``probe()`` returns something truthy, and return it."""
        assert self._changed is not None
        async with asyncio.timeout(within):
            while not (found := probe()):
                async with self._changed:
                    # Also polled: some probes watch state the server does not change.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.2)
            return found

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    # -- Socket Mode ---------------------------------------------------------------------------

    async def _deliver(self, envelope: dict[str, Any]) -> None:
        if not self._sockets:
            self._undelivered.append(envelope)
            return
        ws = self._sockets[self._turn % len(self._sockets)]
        self._turn += 1
        try:
            await ws.send_str(json.dumps(envelope))
        except ConnectionError:
            self._undelivered.append(envelope)
            return
        self.deliveries.append((envelope["envelope_id"], envelope["retry_attempt"]))

    async def _redeliver(self, envelope: dict[str, Any]) -> None:
        ident = envelope["envelope_id"]
        for attempt in range(1, self.retries + 1):
            await asyncio.sleep(self.ack_within)
            if ident in self.acked:
                return
            self._undelivered = [e for e in self._undelivered if e["envelope_id"] != ident]
            await self._deliver({**envelope, "retry_attempt": attempt, "retry_reason": "timeout"})

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        self.connections += 1
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
                    "connection_info": {"app_id": "A0000APP1"},
                }
            )
        )
        waiting, self._undelivered = self._undelivered, []
        for envelope in waiting:
            await self._deliver(envelope)
        await self._notify()
        try:
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue
                ack = json.loads(frame.data)
                if "envelope_id" in ack:
                    self.acked.add(ack["envelope_id"])
                    await self._notify()
        finally:
            self._sockets.remove(ws)
        return ws

    # -- the Web API ---------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.can_read_body:
            args.update(await request.post())
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth else str(args.pop("token", ""))
        self.calls.append(Call(method, args, token))
        try:
            limits = self._limits.get(method)
            if limits:
                wait = limits.pop(0)
                return web.json_response(
                    {"ok": False, "error": "ratelimited"},
                    status=429,
                    headers={"Retry-After": str(wait)},
                )
            handler = getattr(self, "_" + method.replace(".", "_"), None)
            if handler is None:
                return _error("unknown_method")
            if method == "apps.connections.open":
                if not token.startswith("xapp-"):
                    return _error("not_allowed_token_type")
            elif token != BOT_TOKEN:
                return _error("invalid_auth")
            answer = handler(args)
            return web.json_response({"ok": True, **answer} if "error" not in answer else answer)
        finally:
            await self._notify()

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://acme.slack.com/",
            "team": "Acme",
            "user": "parley",
            "team_id": TEAM,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"ws://127.0.0.1:{self.port}/socket?ticket={uuid.uuid4()}"}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        ident = str(args.get("user", ""))
        if ident not in NAMES:
            return {"ok": False, "error": "user_not_found"}
        name = NAMES[ident]
        return {
            "user": {
                "id": ident,
                "team_id": TEAM,
                "name": name,
                "real_name": name.title(),
                "is_bot": ident in (BOT_USER, OTHER_BOT_USER),
                "profile": {"display_name": name, "real_name": name.title()},
            }
        }

    def _post(self, args: dict[str, Any], streaming: bool = False) -> Message:
        if not args.get("channel"):
            raise _Refused("channel_not_found")
        message = Message(
            ts=new_ts(),
            channel=str(args["channel"]),
            thread_ts=args.get("thread_ts") or None,
            text=str(args.get("text") or ""),
            markdown=str(args.get("markdown_text") or "") + _chunk_text(args),
            streaming=streaming,
            blocks=_blocks(args),
        )
        self.messages[message.ts] = message
        return message

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            message = self._post(args)
        except _Refused as exc:
            return {"ok": False, "error": str(exc)}
        return {"channel": message.channel, "ts": message.ts, "message": {"text": message.text}}

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        ts = new_ts()
        channel, text = str(args.get("channel")), str(args.get("text") or "")
        self.messages[ts] = Message(ts, channel, None, text=text, ephemeral=True)
        return {"message_ts": ts}

    def _find(self, args: dict[str, Any]) -> Message | dict[str, Any]:
        message = self.messages.get(str(args.get("ts", "")))
        if message is None or message.channel != args.get("channel"):
            return {"ok": False, "error": "message_not_found"}
        return message

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(args)
        if isinstance(message, dict):
            return message
        if "markdown_text" in args:
            message.markdown = str(args["markdown_text"])
        else:
            message.text, message.markdown = str(args.get("text") or ""), ""
        if "blocks" in args:
            message.blocks = _blocks(args)
        message.updates += 1
        return {"channel": message.channel, "ts": message.ts, "text": message.text}

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        """The message ``ts`` (with its ``thread_ts`` when it is in a thread); the fake keeps
        the bot's messages only, so any other is a message of the channel itself."""
        ts = str(args.get("ts", ""))
        message = self.messages.get(ts)
        found: dict[str, Any] = {"type": "message", "ts": ts}
        if message is not None and message.thread_ts:
            found["thread_ts"] = message.thread_ts
        return {"messages": [found], "has_more": False}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        view = args["view"]
        view = json.loads(view) if isinstance(view, str) else dict(view)
        view["id"] = "V" + uuid.uuid4().hex[:10].upper()
        self.views.append(view)
        return {"view": view}

    def _chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(args)
        if isinstance(message, dict):
            return message
        del self.messages[message.ts]
        return {"channel": message.channel, "ts": message.ts}

    def _chat_startStream(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.refuse_streaming:
            return {"ok": False, "error": "feature_not_enabled"}
        if not str(args.get("channel", "")).startswith("D") and not (
            args.get("recipient_user_id") and args.get("recipient_team_id")
        ):
            return {"ok": False, "error": "missing_recipient_user_id"}
        if not args.get("thread_ts"):
            return {"ok": False, "error": "invalid_arguments"}
        message = self._post(args, streaming=True)
        return {"channel": message.channel, "ts": message.ts}

    def _chat_appendStream(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(args)
        if isinstance(message, dict):
            return message
        if not message.streaming or message.stopped:
            return {"ok": False, "error": "message_not_in_streaming_state"}
        message.markdown += str(args.get("markdown_text") or "") + _chunk_text(args)
        if len(message.markdown) > 12_000:
            return {"ok": False, "error": "msg_too_long"}
        message.updates += 1
        return {"channel": message.channel, "ts": message.ts}

    def _chat_stopStream(self, args: dict[str, Any]) -> dict[str, Any]:
        answer = self._chat_appendStream(args)
        if "error" in answer:
            return answer
        self.messages[str(args["ts"])].stopped = True
        return answer


class _Refused(Exception):
    pass


def _blocks(args: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = args.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else list(blocks)


def _user(ident: str) -> dict[str, str]:
    return {
        "id": ident,
        "username": NAMES.get(ident, ident),
        "name": NAMES.get(ident, ident),
        "team_id": TEAM,
    }


def block_action(message: Message, action_id: str, user: str = ALICE) -> dict[str, Any]:
    """The payload of a click on the button ``action_id`` of the bot's ``message``."""
    (button,) = [
        element
        for block in message.blocks
        if block.get("type") == "actions"
        for element in block["elements"]
        if element["action_id"] == action_id
    ]
    return {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "acme"},
        "user": _user(user),
        "api_app_id": "A0000APP1",
        "token": "legacy-verification-token",
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}",
        "container": {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        },
        "channel": {"id": message.channel, "name": "general"},
        "message": {
            "type": "message",
            "user": BOT_USER,
            "ts": message.ts,
            "text": message.text,
            "blocks": message.blocks,
        },
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "parley_draft",
                "value": button.get("value", ""),
                "text": button.get("text", {}),
                "action_ts": new_ts(),
            }
        ],
        "response_url": "https://hooks.slack.invalid/actions/T0000TEAM/1/x",
    }


def view_submission(
    view: dict[str, Any], values: dict[str, str], user: str = ALICE
) -> dict[str, Any]:
    """The payload of the modal ``view`` submitted with ``values``: input block id → text
    (each input's action id is its block's id, as Parley builds them)."""
    state = {
        block: {block: {"type": "plain_text_input", "value": value}}
        for block, value in values.items()
    }
    return {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "acme"},
        "user": _user(user),
        "api_app_id": "A0000APP1",
        "token": "legacy-verification-token",
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}",
        "view": {**view, "state": {"values": state}, "team_id": TEAM, "app_id": "A0000APP1"},
        "response_urls": [],
    }


def _error(code: str) -> web.Response:
    return web.json_response({"ok": False, "error": code})


def _chunk_text(args: dict[str, Any]) -> str:
    chunks = args.get("chunks") or []
    if isinstance(chunks, str):
        chunks = json.loads(chunks)
    return "".join(c.get("text", "") for c in chunks if c.get("type") == "markdown_text")
