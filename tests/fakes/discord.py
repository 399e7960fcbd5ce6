"""A fake Discord on 127.0.0.1: the gateway websocket (v10) and the REST routes discord.py uses.

The unmodified discord.py client connects to it. It speaks the real protocol: HELLO, IDENTIFY,
READY (with ``session_id`` and ``resume_gateway_url``), heartbeats, DISPATCH with increasing
sequence numbers, GUILD_CREATE, RESUME / RESUMED (replaying what was missed), RECONNECT and
INVALID_SESSION; REST answers are JSON with ``Content-Type: application/json`` exactly, and a
429 carries ``retry_after`` and a ``Via`` header as Discord's do.

A test injects messages and interactions (``send_message``, ``interaction``), drops the
connection (``drop``), asks for 429s (``rate_limit``) or a refused intent (``refuse_identify``),
and asserts on what the bot sent (``calls``, ``messages``), waiting with ``wait_for``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

__all__ = ["Call", "FakeDiscord", "snowflake"]

T = TypeVar("T")
DISCORD_EPOCH_MS = 1420070400000
_counter = itertools.count(1)

# Fixed ids, shaped like real snowflakes.
BOT_ID = "1100000000000000001"
GUILD_ID = "1200000000000000001"
CATEGORY_ID = "1300000000000000009"
CHANNEL_A = "1300000000000000001"
CHANNEL_B = "1300000000000000002"
THREAD_ID = "1300000000000000003"
DM_CHANNEL = "1300000000000000004"
ALICE = "1400000000000000001"
BOB = "1400000000000000002"
OTHER_BOT = "1400000000000000009"
SUPPORT_ROLE = "1500000000000000001"


def snowflake() -> str:
    """A new id whose timestamp is now, as Discord's ids are."""
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return str((ms << 22) | (next(_counter) & 0x3FFFFF))


def _now() -> str:
    return datetime.now(UTC).isoformat()


def user(ident: str, name: str, bot: bool = False) -> dict[str, Any]:
    return {
        "id": ident,
        "username": name.lower(),
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


USERS = {
    BOT_ID: user(BOT_ID, "Parley", bot=True),
    ALICE: user(ALICE, "Alice"),
    BOB: user(BOB, "Bob"),
    OTHER_BOT: user(OTHER_BOT, "Otherbot", bot=True),
}


def _role(ident: str, name: str, position: int) -> dict[str, Any]:
    return {
        "id": ident,
        "name": name,
        "color": 0,
        "hoist": False,
        "position": position,
        "permissions": "1071698660929",
        "managed": False,
        "mentionable": True,
        "flags": 0,
    }


def _channel(ident: str, name: str, kind: int = 0, parent: str | None = None) -> dict[str, Any]:
    return {
        "id": ident,
        "type": kind,
        "guild_id": GUILD_ID,
        "name": name,
        "position": 0,
        "permission_overwrites": [],
        "parent_id": parent,
        "nsfw": False,
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
    }


def guild_payload(last: dict[str, str] | None = None, extra: Sequence[str] = ()) -> dict[str, Any]:
    """GUILD_CREATE for the test guild: two text channels in a category (and the ``extra``
    ones) and a thread; ``last``: each channel's latest message id."""
    last = last or {}
    payload: dict[str, Any] = {
        "id": GUILD_ID,
        "name": "Acme Cloud",
        "icon": None,
        "owner_id": ALICE,
        "unavailable": False,
        "member_count": 4,
        "large": False,
        "joined_at": _now(),
        "features": [],
        "emojis": [],
        "stickers": [],
        "voice_states": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "roles": [_role(GUILD_ID, "@everyone", 0), _role(SUPPORT_ROLE, "Support", 1)],
        "channels": [
            _channel(CATEGORY_ID, "Help", kind=4),
            _channel(CHANNEL_A, "general", parent=CATEGORY_ID),
            _channel(CHANNEL_B, "billing", parent=CATEGORY_ID),
        ],
        "threads": [
            {
                "id": THREAD_ID,
                "type": 11,
                "guild_id": GUILD_ID,
                "parent_id": CHANNEL_A,
                "owner_id": ALICE,
                "name": "printer trouble",
                "last_message_id": last.get(THREAD_ID),
                "message_count": 0,
                "member_count": 1,
                "rate_limit_per_user": 0,
                "thread_metadata": {
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": _now(),
                    "locked": False,
                },
            }
        ],
        "members": [
            {
                "user": USERS[BOT_ID],
                "roles": [],
                "joined_at": _now(),
                "deaf": False,
                "mute": False,
                "flags": 0,
            }
        ],
    }
    payload["channels"] += [
        _channel(ident, f"help-{n}", parent=CATEGORY_ID) for n, ident in enumerate(extra, 1)
    ]
    for channel in payload["channels"]:
        channel["last_message_id"] = last.get(channel["id"])
    return payload


@dataclass
class Call:
    """One REST request the bot made, and what the fake answered."""

    method: str
    path: str
    body: Any
    status: int


@dataclass
class _RateLimit:
    method: str
    pattern: re.Pattern[str]
    remaining: int
    retry_after: float


@dataclass
class _Session:
    session_id: str
    shard: list[int] | None
    sockets: list[web.WebSocketResponse] = field(default_factory=list)


class FakeDiscord:
    def __init__(self, token: str = "fake-token", channels: int = 0) -> None:
        """``channels``: text channels besides CHANNEL_A and CHANNEL_B (``extra_channels``)."""
        self.token = token
        self.extra_channels = [str(1300000000000001000 + n) for n in range(channels)]
        self.bot_id = BOT_ID
        self.app_id = BOT_ID
        self.calls: list[Call] = []
        #: Every message the bot posted, by id, as it stands after its edits.
        self.messages: dict[str, dict[str, Any]] = {}
        #: Every message of each channel (users' and the bot's), oldest first, for history.
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.identifies: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}
        #: On IDENTIFY, close the gateway with this code (4014: a privileged intent is off).
        self.refuse_identify: int | None = None
        #: On RESUME, send again this many events the client had already received.
        self.redeliver_on_resume = 0
        self._sessions: dict[str, _Session] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._log: list[tuple[int, dict[str, Any]]] = []
        self._seq = 0
        self._limits: list[_RateLimit] = []
        #: The modals the bot showed (their callback data), in order.
        self.modals: list[dict[str, Any]] = []
        self._interaction_messages: dict[str, str] = {}
        self._interaction_kinds: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""
        #: The files users attached, as the CDN serves them (by path), and each download.
        self.files: dict[str, bytes] = {}
        self.downloads: list[str] = []

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        app.router.add_get("/attachments/{tail:.*}", self._cdn)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        for socket in list(self._sockets):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return self.url + "/api/v10"

    @property
    def gateway_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/gateway"

    # -- waiting and asserting --------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], T], within: float = 15.0) -> T:
        """Wait until ``predicate()`` is truthy (checked after every change) and return it."""
        async with self._changed:
            return await asyncio.wait_for(self._changed.wait_for(predicate), within)

    def sent(self, channel: str | None = None) -> list[dict[str, Any]]:
        """The bot's messages (as edited), in the order posted."""
        return [m for m in self.messages.values() if channel in (None, m["channel_id"])]

    def requests(self, method: str, pattern: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and re.fullmatch(pattern, c.path)]

    # -- injecting ------------------------------------------------------------------------------

    def rate_limit(
        self, method: str, pattern: str, times: int = 1, retry_after: float = 0.05
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` and the path regex with 429."""
        self._limits.append(_RateLimit(method, re.compile(pattern), times, retry_after))

    async def dispatch(self, name: str, data: dict[str, Any]) -> int:
        """Send an event to the connected client; kept for replay if it is not connected."""
        self._seq += 1
        frame = {"op": 0, "t": name, "s": self._seq, "d": data}
        self._log.append((self._seq, frame))
        for session in self._sessions.values():
            # Everything goes to shard 0, where the test guild lives.
            if session.shard is None or session.shard[0] == 0:
                for socket in session.sockets:
                    if socket.closed:
                        continue
                    # A client killed this instant: the frame is in the log for its RESUME,
                    # and a new session catches up from history, as with Discord.
                    with contextlib.suppress(ConnectionError):
                        await socket.send_str(json.dumps(frame))
        return self._seq

    async def send_message(
        self,
        content: str,
        channel: str = CHANNEL_A,
        author: str = ALICE,
        guild: str | None = GUILD_ID,
        mentions: tuple[str, ...] = (),
        roles: tuple[str, ...] = (),
        reply_to: dict[str, Any] | None = None,
        kind: int | None = None,
        files: Sequence[tuple[str, bytes, str]] = (),
    ) -> dict[str, Any]:
        """A user's message arriving as MESSAGE_CREATE, with ``files`` attached (name, bytes,
        declared content type), which the fake CDN serves; returns its payload."""
        data: dict[str, Any] = self._user_message(
            content, channel, author, guild, mentions, roles, reply_to, kind
        )
        data["attachments"] = [self._attach(channel, *file) for file in files]
        await self.dispatch("MESSAGE_CREATE", data)
        return data

    def _attach(self, channel: str, name: str, content: bytes, kind: str) -> dict[str, Any]:
        ident = snowflake()
        path = f"/attachments/{channel}/{ident}/{name}"
        self.files[path] = content
        return {
            "id": ident,
            "filename": name,
            "size": len(content),
            "content_type": kind,
            "url": self.url + path,
            "proxy_url": self.url + path,
        }

    async def _cdn(self, request: web.Request) -> web.Response:
        self.downloads.append(request.path)
        content = self.files.get(request.path)
        if content is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=content, content_type="application/octet-stream")

    def post_while_away(
        self, content: str, channel: str = CHANNEL_A, mentions: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """A user's message sent while no client is connected: only in the channel's history
        (and its last message id, in the next GUILD_CREATE), never dispatched."""
        return self._user_message(content, channel, ALICE, GUILD_ID, mentions, (), None, None)

    def _user_message(
        self,
        content: str,
        channel: str,
        author: str,
        guild: str | None,
        mentions: tuple[str, ...],
        roles: tuple[str, ...],
        reply_to: dict[str, Any] | None,
        kind: int | None,
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": snowflake(),
            "channel_id": channel,
            "author": USERS[author],
            "content": content,
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [USERS[m] for m in mentions],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": kind if kind is not None else (19 if reply_to else 0),
            "flags": 0,
        }
        if guild is not None:
            data["guild_id"] = guild
            data["member"] = {
                "roles": list(roles),
                "joined_at": _now(),
                "nick": None,
                "deaf": False,
                "mute": False,
                "flags": 0,
            }
        if reply_to is not None:
            data["message_reference"] = {
                "type": 0,
                "message_id": reply_to["id"],
                "channel_id": reply_to["channel_id"],
                **({"guild_id": guild} if guild else {}),
            }
            data["referenced_message"] = reply_to
        self.history.setdefault(channel, []).append(data)
        return data

    async def interaction(
        self,
        name: str,
        channel: str = CHANNEL_A,
        author: str = ALICE,
        options: dict[str, str] | None = None,
        roles: Sequence[str] = (),
    ) -> dict[str, Any]:
        """A slash command used in a guild channel, as INTERACTION_CREATE."""
        command = next(
            (c for c in self.commands.get(GUILD_ID, []) if c["name"] == name),
            {"id": snowflake(), "name": name},
        )
        data = {
            "id": command["id"],
            "name": name,
            "type": 1,
            "guild_id": GUILD_ID,
            "options": [
                {"name": key, "type": 3, "value": value} for key, value in (options or {}).items()
            ],
        }
        return await self._interact(2, data, channel, author, roles)

    async def click(
        self, message_id: str, custom_id: str, author: str = ALICE, roles: Sequence[str] = ()
    ) -> dict[str, Any]:
        """A button of the bot's message ``message_id`` pressed (a component interaction)."""
        message = self.messages[message_id]
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(3, data, message["channel_id"], author, roles, message)

    async def submit(
        self,
        custom_id: str,
        values: dict[str, str],
        author: str = ALICE,
        roles: Sequence[str] = (),
        message_id: str | None = None,
    ) -> dict[str, Any]:
        """A modal the bot showed, filled in and submitted (``values``: text input → value)."""
        data = {
            "custom_id": custom_id,
            "components": [
                {"type": 1, "components": [{"type": 4, "custom_id": key, "value": value}]}
                for key, value in values.items()
            ],
        }
        message = self.messages[message_id] if message_id else None
        channel = message["channel_id"] if message else CHANNEL_A
        return await self._interact(5, data, channel, author, roles, message)

    async def _interact(
        self,
        kind: int,
        data: dict[str, Any],
        channel: str,
        author: str,
        roles: Sequence[str] = (),
        message: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        channel_data = (
            guild_payload()["threads"][0]
            if channel == THREAD_ID
            else _channel(channel, "general", parent=CATEGORY_ID)
        )
        payload: dict[str, Any] = {
            "id": snowflake(),
            "application_id": self.app_id,
            "type": kind,
            "token": "itoken-" + uuid.uuid4().hex,
            "version": 1,
            "data": data,
            "guild_id": GUILD_ID,
            "channel_id": channel,
            "channel": channel_data,
            "member": {
                "user": USERS[author],
                "roles": list(roles),
                "permissions": "2147483647",
                "joined_at": _now(),
                "deaf": False,
                "mute": False,
                "flags": 0,
            },
            "app_permissions": "2147483647",
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": GUILD_ID},
            "context": 0,
            "attachment_size_limit": 8388608,
        }
        if message is not None:
            payload["message"] = _public(message)
            self._interaction_messages[payload["token"]] = message["id"]
        self._interaction_kinds[payload["token"]] = kind
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def drop(self, code: int = 4000) -> None:
        """Close every gateway connection as a network fault or Discord restart would."""
        for session in self._sessions.values():
            for socket in session.sockets:
                await socket.close(code=code, message=b"dropped by the test")

    async def reconnect(self) -> None:
        """Ask the client to reconnect (op 7), as Discord does before maintenance."""
        for session in self._sessions.values():
            for socket in session.sockets:
                await socket.send_str(json.dumps({"op": 7, "d": None, "s": None, "t": None}))

    # -- the gateway ----------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._sockets.add(socket)
        try:
            await socket.send_str(
                json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
            )
            async for message in socket:
                if message.type is not WSMsgType.TEXT:
                    break
                payload = json.loads(message.data)
                op, data = payload["op"], payload["d"]
                if op == 1:
                    await socket.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
                elif op == 2:
                    await self._identify(socket, data)
                elif op == 6:
                    await self._resume(socket, data)
                await self._notify()
        finally:
            self._sockets.discard(socket)
            for session in self._sessions.values():
                if socket in session.sockets:
                    session.sockets.remove(socket)
            await self._notify()
        return socket

    async def _send_dispatch(self, socket: web.WebSocketResponse, name: str, data: Any) -> None:
        self._seq += 1
        frame = {"op": 0, "t": name, "s": self._seq, "d": data}
        self._log.append((self._seq, frame))
        await socket.send_str(json.dumps(frame))

    async def _identify(self, socket: web.WebSocketResponse, data: dict[str, Any]) -> None:
        self.identifies.append(data)
        if data.get("token") != self.token:
            await socket.close(code=4004, message=b"Authentication failed.")
            return
        if self.refuse_identify is not None:
            await socket.close(code=self.refuse_identify, message=b"Disallowed intent(s).")
            return
        session = _Session(uuid.uuid4().hex, data.get("shard"))
        session.sockets.append(socket)
        self._sessions[session.session_id] = session
        ready = {
            "v": 10,
            "user": {**USERS[BOT_ID], "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": GUILD_ID, "unavailable": True}],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": self.app_id, "flags": 0},
            "private_channels": [],
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        await self._send_dispatch(socket, "READY", ready)
        if session.shard is None or session.shard[0] == 0:
            last = {channel: found[-1]["id"] for channel, found in self.history.items() if found}
            payload = guild_payload(last, self.extra_channels)
            await self._send_dispatch(socket, "GUILD_CREATE", payload)

    async def _resume(self, socket: web.WebSocketResponse, data: dict[str, Any]) -> None:
        self.resumes.append(data)
        session = self._sessions.get(data.get("session_id") or "")
        if session is None or data.get("token") != self.token:
            await socket.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
            return
        session.sockets.append(socket)
        after = (data.get("seq") or 0) - self.redeliver_on_resume
        for seq, frame in self._log:
            if seq > after and frame["t"] not in ("READY", "GUILD_CREATE", "RESUMED"):
                await socket.send_str(json.dumps(frame))
        await self._send_dispatch(socket, "RESUMED", {})

    # -- REST -----------------------------------------------------------------------------------

    def _json(self, data: Any, status: int = 200) -> web.Response:
        # discord.py parses a body only when the content type is exactly this.
        body = json.dumps(data).encode()
        return web.Response(body=body, status=status, headers={"Content-Type": "application/json"})

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        raw = await request.read()
        body = json.loads(raw) if raw and request.content_type == "application/json" else None
        response = await self._route(request, path, body)
        self.calls.append(Call(request.method, path, body, response.status))
        await self._notify()
        return response

    async def _route(self, request: web.Request, path: str, body: Any) -> web.StreamResponse:
        method = request.method
        if not (
            request.headers.get("Authorization") == f"Bot {self.token}"
            or path.startswith(("/webhooks/", "/interactions/"))
        ):
            return self._json({"message": "401: Unauthorized", "code": 0}, 401)
        for limit in self._limits:
            if limit.remaining > 0 and limit.method == method and limit.pattern.fullmatch(path):
                limit.remaining -= 1
                return web.Response(
                    status=429,
                    body=json.dumps(
                        {
                            "message": "You are being rate limited.",
                            "retry_after": limit.retry_after,
                            "global": False,
                        }
                    ).encode(),
                    headers={
                        "Content-Type": "application/json",
                        "Via": "1.1 google",
                        "Retry-After": str(max(1, round(limit.retry_after))),
                        "X-RateLimit-Scope": "user",
                    },
                )
        if method == "GET" and path == "/users/@me":
            return self._json({**USERS[BOT_ID], "verified": True, "mfa_enabled": False})
        if method == "GET" and path == "/oauth2/applications/@me":
            return self._json(
                {
                    "id": self.app_id,
                    "name": "Parley",
                    "icon": None,
                    "description": "",
                    "bot_public": True,
                    "bot_require_code_grant": False,
                    "owner": USERS[ALICE],
                    "verify_key": "0" * 64,
                    "flags": 0,
                    "team": None,
                }
            )
        if method == "GET" and path in ("/gateway", "/gateway/bot"):
            return self._json(
                {
                    "url": self.gateway_url,
                    "shards": 1,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 999,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }
            )
        if match := re.fullmatch(r"/applications/\d+(?:/guilds/(\d+))?/commands", path):
            scope = match.group(1) or "global"
            commands = [
                {
                    **command,
                    "id": snowflake(),
                    "application_id": self.app_id,
                    "version": snowflake(),
                    "default_member_permissions": None,
                    "type": command.get("type", 1),
                    **({"guild_id": scope} if scope != "global" else {}),
                }
                for command in body or []
            ]
            self.commands[scope] = commands
            return self._json(commands)
        if match := re.fullmatch(r"/channels/(\d+)/typing", path):
            return web.Response(status=204)
        if method == "POST" and (match := re.fullmatch(r"/channels/(\d+)/messages", path)):
            return self._json(await self._create(match.group(1), body))
        if method == "GET" and (match := re.fullmatch(r"/channels/(\d+)/messages", path)):
            # The `limit` messages right after `after`, newest first, as Discord answers.
            after = int(request.query.get("after", "0"))
            count = int(request.query.get("limit", "50"))
            found = [m for m in self.history.get(match.group(1), []) if int(m["id"]) > after]
            return self._json([_public(m) for m in reversed(found[:count])])
        if match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", path):
            message = self.messages.get(match.group(2))
            if message is None:
                return self._json({"message": "Unknown Message", "code": 10008}, 404)
            if method == "DELETE":
                del self.messages[match.group(2)]
                return web.Response(status=204)
            return self._json(self._edit(message, body))
        if match := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", path):
            return self._json(await self._callback(match.group(1), match.group(2), body))
        if match := re.fullmatch(r"/webhooks/\d+/([^/]+)/messages/(@original|\d+)", path):
            key = f"original:{match.group(1)}" if match.group(2) == "@original" else match.group(2)
            message = self.messages.get(key)
            if message is None:
                return self._json({"message": "Unknown Message", "code": 10008}, 404)
            if method == "DELETE":
                del self.messages[key]
                return web.Response(status=204)
            return self._json(message if method == "GET" else self._edit(message, body))
        if method == "POST" and (match := re.fullmatch(r"/webhooks/\d+/([^/]+)", path)):
            channel = self._interaction_channels.get(match.group(1), CHANNEL_A)
            return self._json(await self._create(channel, body, echo=False))
        return self._json({"message": "404: Not Found", "code": 0}, 404)

    @property
    def _interaction_channels(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for _, frame in self._log:
            if frame["t"] == "INTERACTION_CREATE":
                found[frame["d"]["token"]] = frame["d"]["channel_id"]
        return found

    async def _create(
        self, channel: str, body: dict[str, Any], echo: bool = True, key: str | None = None
    ) -> dict[str, Any]:
        reference = body.get("message_reference")
        message = {
            "id": snowflake(),
            "channel_id": channel,
            "author": USERS[BOT_ID],
            "content": body.get("content", ""),
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 19 if reference else 0,
            "flags": 0,
            "components": body.get("components", []),
            # What the fake received, for assertions (not part of Discord's payload).
            "allowed_mentions": body.get("allowed_mentions"),
            "edits": [],
        }
        if reference:
            # discord.py sends ids as numbers; Discord answers with strings.
            message["message_reference"] = {
                k: str(v) if k.endswith("_id") else v for k, v in reference.items()
            }
        if channel != DM_CHANNEL:
            message["guild_id"] = GUILD_ID
        self.messages[key or message["id"]] = message
        self.history.setdefault(channel, []).append(message)
        if echo:
            # Discord sends the bot its own messages too; the adapter must ignore them.
            await self.dispatch("MESSAGE_CREATE", _public(message))
        return _public(message)

    def _edit(self, message: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        if "content" in body:
            message["content"] = body["content"]
        if "components" in body:
            message["components"] = body["components"]
        message["edits"].append(body)
        message["edited_timestamp"] = _now()
        return _public(message)

    async def _callback(self, ident: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        kind = body["type"]
        data = body.get("data") or {}
        channel = self._interaction_channels.get(token, CHANNEL_A)
        interaction: dict[str, Any] = {
            "id": ident,
            "type": self._interaction_kinds.get(token, 2),
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(data.get("flags", 0) & 64),
        }
        answer: dict[str, Any] = {"interaction": interaction}
        if kind in (4, 5):
            message = await self._create(
                channel, {"content": data.get("content", ""), **data}, False, f"original:{token}"
            )
            message["interaction_callback_type"] = kind
            self.messages[f"original:{token}"]["callback"] = body
            interaction["response_message_id"] = message["id"]
            answer["resource"] = {"type": kind, **({"message": message} if kind == 4 else {})}
        elif kind == 7 and token in self._interaction_messages:
            # UPDATE_MESSAGE: the component's own message, edited.
            message = self.messages[self._interaction_messages[token]]
            self._edit(message, data)
            interaction["response_message_id"] = message["id"]
            answer["resource"] = {"type": kind, "message": _public(message)}
        elif kind == 9:
            self.modals.append(data)
        await self._notify()
        return answer


def _public(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k not in ("allowed_mentions", "edits", "callback")}
