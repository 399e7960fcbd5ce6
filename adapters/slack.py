"""Slack, on slack-bolt's AsyncApp: mentions, DMs, thread follow-ups and ``/parley`` become
Events; answers are streamed into the message's thread (``adapters.slack_reply``); 👍/👎
reactions on answers are ratings.

bolt and slack_sdk do the platform's work: request signatures and their 5-minute window (HTTP
mode), the Socket Mode connection and its acknowledgements, the Events API's 3-second
acknowledgement (bolt acks, then runs the listener), 429 waits (a retry handler on the client).
This module converts at the edge and hands each event to ``Service.handle`` within the bound of
``adapters.inflight``. Slack redelivers an event it thinks was missed with the same
``event_id``: those are dropped here, and the core drops any second delivery of a message ts
(an ``app_mention`` and its ``message`` twin included).

A conversation is a thread: team + channel + ``thread_ts`` (or the message's own ts when it
starts one), and the answer goes into that thread. ``/parley`` questions have no thread: they
form the channel's conversation, answered in the thread of a message quoting the question.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from adapters.inflight import Inflight
from adapters.settings import SlackConfig
from adapters.slack_event import PLATFORM, place, to_event
from adapters.slack_files import offered
from adapters.slack_format import USER_MENTION, escape
from adapters.slack_reply import EphemeralReply, Place, SlackReply, staff_mention
from adapters.slack_review import SlackReview, link_to
from bot.config import Config
from bot.core.attachments import Offered, read_files
from bot.core.reply import Reply
from bot.core.service import Admission, Service
from bot.errors import ConfigError, PlatformError
from bot.events import ConversationKey, Event, Rating

__all__ = ["SlackAdapter", "create", "enabled"]

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
COMMAND = "/parley"
# Messages people write; edits, deletions, joins and bot posts are not questions.
ANSWERABLE_SUBTYPES = {None, "file_share", "thread_broadcast"}
RATINGS: dict[str, Rating] = {"+1": "up", "thumbsup": "up", "-1": "down", "thumbsdown": "down"}
#: A staff member's reaction that ends a handoff (✅).
RESOLVED = "white_check_mark"
_SEEN_EVENTS = 10_000


def _client_token_note(record: logging.LogRecord) -> bool:
    # bolt reads $SLACK_BOT_TOKEN itself and warns that it goes unused when given a client;
    # the client carries that very token, so the warning would only mislead.
    return "`token` will be unused" not in record.getMessage()


logging.getLogger("slack_bolt.AsyncApp").addFilter(_client_token_note)


def _missing(config: Config) -> list[str]:
    section = config.section(SlackConfig)
    second = section.app_token_env if section.mode == "socket" else section.signing_secret_env
    return [env for env in (section.bot_token_env, second) if config.secret(env) is None]


def enabled(config: Config) -> bool:
    section = config.section(SlackConfig)
    if section.review_channel and section.review_channel[:1] not in ("C", "G"):
        raise ConfigError(f"{config.source}: 'slack.review_channel' must be a channel id (C…)")
    if section.enabled is False:
        return False
    missing = _missing(config)
    if not missing:
        return True
    if section.enabled is True or config.secret(section.bot_token_env) is not None:
        # A bot token without the mode's secret is a half-done set-up: say what is missing.
        other = "http" if section.mode == "socket" else "socket"
        raise ConfigError(
            f"{config.source}: Slack in {section.mode} mode needs "
            + " and ".join(f"${env}" for env in missing)
            + f' (or set slack.mode = "{other}")'
        )
    return False


def create(config: Config, service: Service) -> SlackAdapter:
    return SlackAdapter(config, service)


class SlackAdapter:
    name = PLATFORM

    def __init__(self, config: Config, service: Service) -> None:
        self.config = config
        self.section = config.section(SlackConfig)
        self.service = service
        self.connected = False
        self.ready = asyncio.Event()
        self.bot_user = ""
        self.bot_id = ""
        self.team = ""
        self.url = ""  # http mode: where the Events API endpoint listens, once started
        self._inflight = Inflight(PLATFORM, config.bot.max_pending)
        self._replies: set[SlackReply] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._names: dict[str, str] = {}
        #: Workspaces that refused chat.startStream: their answers use chat.update instead.
        self.refused_streaming: set[str] = set()
        self._staff = staff_mention(config.handoff.staff_roles, config.handoff.staff_users)
        self.client = AsyncWebClient(
            token=config.secret(self.section.bot_token_env), base_url=self.section.api_base
        )
        # Connection errors are retried by default; a 429 waits for its Retry-After.
        self.client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
        http = self.section.mode == "http"
        self.app = AsyncApp(
            client=self.client,
            signing_secret=config.secret(self.section.signing_secret_env) or "",
            request_verification_enabled=http,
            # Listeners run before the acknowledgement: an event is in the store's inbox before
            # Slack hears it arrived, so a crash in between makes Slack deliver it again.
            process_before_response=True,
        )
        self.app.event("app_mention")(self.on_mention)
        self.app.event("message")(self.on_message)
        self.app.event("reaction_added")(self.on_reaction)
        self.app.command(COMMAND)(self.on_command)
        # Questions taken in are answered after a crash or a kill: recovered on each start.
        service.resumable(PLATFORM, self._resume)
        # Staff's buttons: drafts to review (with a review channel), handoffs to claim.
        review = SlackReview(self.app, self.client, service, self.section.review_channel)
        if self.section.review_channel:
            service.reviewing(PLATFORM, review.post)
        # Snippets resolved conversations teach: linked back here, shown to staff for review.
        post = review.post_snippet if self.section.review_channel else None
        service.learns_on(PLATFORM, link_to, post)
        self._recovering: asyncio.Task[None] | None = None

    # -- connecting ---------------------------------------------------------------------------

    async def run(self) -> None:
        await self._identify()
        try:
            if self.section.mode == "http":
                await self._serve_http()
            else:
                await self._serve_socket()
        finally:
            self.connected = False
            if self._recovering is not None:
                self._recovering.cancel()
                await asyncio.gather(self._recovering, return_exceptions=True)
            await self._inflight.drain(self.config.ops.shutdown_grace)
            for reply in list(self._replies):
                await reply.close()

    async def _identify(self) -> None:
        """Who the bot is (to see its mentions and skip its own posts); checks the token."""
        try:
            found = await self.client.auth_test()
        except SlackApiError as exc:
            raise PlatformError(
                f"Slack refused ${self.section.bot_token_env}"
                f" ({exc.response.get('error', 'error')}): reinstall the app and copy its"
                " Bot User OAuth Token"
            ) from None
        except OSError as exc:
            raise PlatformError(f"cannot reach Slack at {self.section.api_base}: {exc}") from None
        self.bot_user = str(found.get("user_id") or "")
        self.bot_id = str(found.get("bot_id") or "")
        self.team = str(found.get("team_id") or "")
        log.info("Slack: signed in as %s (%s) in %s", found.get("user"), self.bot_user, self.team)

    async def _serve_socket(self) -> None:
        token = self.config.secret(self.section.app_token_env) or ""
        try:
            # slack_sdk retries a refused token for ever: try it once first, to say so.
            await self.client.apps_connections_open(app_token=token)
        except SlackApiError as exc:
            raise PlatformError(
                f"Slack refused ${self.section.app_token_env} for Socket Mode"
                f" ({exc.response.get('error', 'error')}): create an app-level token with the"
                " connections:write scope"
            ) from None
        handler = AsyncSocketModeHandler(self.app, token, web_client=self.client)
        await handler.connect_async()
        self.connected = True
        self.ready.set()
        log.info("Slack: connected in Socket Mode")
        self._recovering = asyncio.create_task(
            self.service.keep_recovering(PLATFORM), name="slack recovery"
        )
        try:
            await _forever()
        finally:
            await handler.close_async()

    async def _serve_http(self) -> None:
        server = web.Application(client_max_size=1024**2)
        server.router.add_post(EVENTS_PATH, self._events_endpoint)
        runner = web.AppRunner(server, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.section.http_host, self.section.http_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise PlatformError(
                f"cannot listen on {self.section.http_host}:{self.section.http_port}: {exc}"
            ) from None
        host, port = runner.addresses[0][:2]
        self.url = f"http://{host}:{port}{EVENTS_PATH}"
        self.connected = True
        self.ready.set()
        log.info("Slack: Events API endpoint at %s", self.url)
        self._recovering = asyncio.create_task(
            self.service.keep_recovering(PLATFORM), name="slack recovery"
        )
        try:
            await _forever()
        finally:
            await runner.cleanup()

    async def _events_endpoint(self, request: web.Request) -> web.Response:
        # bolt answers a non-numeric timestamp with a 500, which Slack would retry: it is as
        # unsigned as a missing one.
        stamp = request.headers.get("X-Slack-Request-Timestamp", "")
        if not stamp.isdigit():
            log.warning("Slack: refused a request without a valid timestamp")
            return web.json_response({"error": "invalid request"}, status=401)
        response = await self.app.async_dispatch(await to_bolt_request(request))
        if response.status == 401:
            log.warning("Slack: refused a request with a bad signature or an old timestamp")
        return await to_aiohttp_response(response)

    # -- the way in ---------------------------------------------------------------------------

    def _first_delivery(self, body: dict[str, Any]) -> bool:
        """False for an event Slack delivers again (a retry carries the same event_id)."""
        ident = str(body.get("event_id") or "")
        if not ident:
            return True
        if ident in self._seen:
            log.info("Slack: ignoring a repeated delivery of %s", ident)
            return False
        self._seen[ident] = None
        if len(self._seen) > _SEEN_EVENTS:
            self._seen.popitem(last=False)
        return True

    def _own_or_bot(self, event: dict[str, Any]) -> bool:
        if event.get("user") == self.bot_user or (
            self.bot_id and event.get("bot_id") == self.bot_id
        ):
            return True
        allowed = self.config.limits.allow_bots
        return bool(event.get("bot_id")) and str(event.get("user", "")) not in allowed

    async def on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        await self._take(body, event)

    async def on_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if event.get("subtype") not in ANSWERABLE_SUBTYPES:
            return
        is_dm = event.get("channel_type") == "im"
        if not is_dm:
            if f"<@{self.bot_user}" in str(event.get("text") or ""):
                return  # the app_mention event carries it
            if not event.get("thread_ts") or not self.section.continue_threads:
                return  # only thread follow-ups are answered without a mention
        await self._take(body, event)

    async def _take(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if not self._first_delivery(body) or self._own_or_bot(event):
            return
        team = str(body.get("team_id") or event.get("team") or self.team)
        converted = to_event(event, team, self.bot_user, await self._lookup(event))
        # Taken in (into the store's inbox) before this returns and bolt acknowledges it;
        # its files are read after (if it is to be answered), as Slack wants a quick ack.
        admission = await self.service.admit(converted)
        shared = event.get("files")
        if isinstance(shared, list) and shared and admission.outcome is None:
            token = self.config.secret(self.section.bot_token_env) or ""
            limit = self.config.attachments.max_bytes
            offer = offered(shared, token, self.section.api_base, limit)
        else:
            offer = []
        self._inflight.start(
            converted,
            self._reply(place(converted)),
            lambda event, reply: self._handle(event, reply, admission, offer),
        )

    async def _lookup(self, event: dict[str, Any]) -> dict[str, str]:
        """Display names of the author and the users a message mentions (cached)."""
        wanted = {str(event.get("user") or ""), *USER_MENTION.findall(event.get("text") or "")}
        for ident in wanted - self._names.keys() - {"", self.bot_user}:
            try:
                found = await self.client.users_info(user=ident)
            except SlackApiError as exc:
                log.debug("users.info %s: %s", ident, exc)
                continue
            person = found.get("user") or {}
            profile = person.get("profile") or {}
            self._names[ident] = str(
                profile.get("display_name") or person.get("real_name") or person.get("name") or ""
            )
        return self._names

    async def on_reaction(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        reaction = str(event.get("reaction", "")).split("::")[0]
        rating = RATINGS.get(reaction)
        item = event.get("item") or {}
        user = str(event.get("user", ""))
        if item.get("type") != "message" or user == self.bot_user:
            return
        if (rating is None and reaction != RESOLVED) or not self._first_delivery(body):
            return
        team = str(body.get("team_id") or self.team)
        if rating is None:  # ✅
            self._inflight.track(asyncio.ensure_future(self._resolve(team, item, user)))
            return
        scope = ConversationKey(PLATFORM, team, str(item.get("channel", "")))
        self._inflight.track(
            asyncio.ensure_future(
                self.service.feedback(scope, str(item.get("ts", "")), user, rating)
            )
        )

    async def _resolve(self, team: str, item: dict[str, Any], user: str) -> None:
        """A staff member's ✅ in a handed-off thread gives it back to the bot. A reaction
        names the message, not its thread: Slack says which thread it is in."""
        channel, ts = str(item.get("channel", "")), str(item.get("ts", ""))
        try:
            found = await self.client.conversations_replies(channel=channel, ts=ts, limit=1)
            messages = found.get("messages") or [{}]
            thread = str(messages[0].get("thread_ts") or ts)
        except SlackApiError as exc:
            log.warning("Slack: cannot find the thread of a reaction: %s", exc)
            return
        key = ConversationKey(PLATFORM, team, channel, thread)
        await self.service.resolve(key, user, (), self._reply(Place(team, channel, thread, user)))

    async def on_command(
        self, ack: Callable[..., Awaitable[None]], command: dict[str, Any]
    ) -> None:
        """``/parley`` with ``reset``, ``help`` or a question. The answer to a question is
        posted in the channel: a message quoting it, with the answer in its thread."""
        text = str(command.get("text") or "").strip()
        team = str(command.get("team_id") or self.team)
        channel = str(command.get("channel_id", ""))
        user = str(command.get("user_id", ""))
        is_dm = channel.startswith("D")
        await ack()
        event = Event(
            platform=PLATFORM,
            workspace=team,
            channel=channel,
            user=user,
            user_name=str(command.get("user_name") or ""),
            text=text,
            is_dm=is_dm,
        )
        if text.lower() in ("", "help", "reset"):
            # Notices for the asker alone; reset forgets the channel's /parley conversation.
            self._inflight.start(event, EphemeralReply(self.client, channel, user), self._handle)
            return
        name = event.user_name or "someone"
        try:
            quoted = await self.client.chat_postMessage(
                channel=channel, text=f"*{escape(name)} asked:* {escape(text)}"
            )
        except SlackApiError as exc:
            log.warning("Slack: cannot post in %s: %s", channel, exc)
            return
        # Named by the message quoting it, whose thread the answer goes in (after a restart too).
        event = dataclasses.replace(event, message_id=str(quoted["ts"]))
        place = Place(team, channel, str(quoted["ts"]), user, is_dm)
        self._inflight.start(event, self._reply(place), self._handle)

    def _reply(self, place: Place) -> SlackReply:
        return SlackReply(
            self.client,
            place,
            self.refused_streaming,
            interval=self.section.edit_interval,
            staff=self._staff,
        )

    async def _resume(self, event: Event, reply_id: str) -> Reply:
        """The reply to ``event`` after a restart, in its thread; the message ``reply_id``
        (its answer so far) is edited when there is one."""
        reply = self._reply(place(event))
        if reply_id:
            reply.streaming = False  # a stream cannot be taken over: the message is edited
            reply.posted.append(reply_id)
            reply.shown.append("")
        return reply

    async def _handle(
        self,
        event: Event,
        reply: Reply,
        admission: Admission | None = None,
        offer: Sequence[Offered] = (),
    ) -> None:
        if isinstance(reply, SlackReply):
            self._replies.add(reply)
        try:
            if offer:
                files = await read_files(offer, self.config.attachments)
                event = dataclasses.replace(event, files=files)
            outcome = await self.service.handle(event, reply, admission=admission)
            log.debug("slack %s: %s", event.message_id, outcome.value)
        except Exception:
            log.exception("answering Slack message %s failed", event.message_id)
        finally:
            if isinstance(reply, SlackReply):
                self._replies.discard(reply)


async def _forever() -> None:
    """Serve until cancelled."""
    await asyncio.Event().wait()
