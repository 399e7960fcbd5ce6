"""Discord, on discord.py: messages and slash commands become Events; answers are replies to
the triggering message, streamed by editing; 👍/👎 reactions on answers are ratings.

discord.py does the platform's work (gateway heartbeats, RESUME, reconnect backoff, REST 429
waits); this module converts at the edge and hands each event to ``Service.handle`` in a task it
tracks, at most ``bot.max_pending`` at once (``adapters.inflight``). The core decides whether to
answer (mention, policy, duplicates: a redelivery after a RESUME carries the same message id).
``[discord]``'s allow/deny lists are a first filter at the edge, before ``[policy]``.

Endpoints: discord.py keeps its REST base and gateway URL in class attributes
(``discord.http.Route.BASE``, ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``). ``run()``
sets them from ``[discord]`` for the whole process and restores them on the way out, so one
process runs one Discord adapter at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import discord
import yarl
from discord import app_commands

from adapters.discord_commands import slash_commands
from adapters.discord_event import PLATFORM, place, to_event
from adapters.discord_reply import (
    NO_PINGS,
    DiscordReply,
    InteractionSink,
    MessageSink,
    ResumedSink,
    Sink,
)
from adapters.discord_review import DiscordReview, link_to
from adapters.inflight import Inflight
from adapters.settings import DiscordConfig
from bot.config import Config
from bot.core.attachments import Offered, read_files
from bot.core.reply import Reply
from bot.core.service import Admission, Service
from bot.errors import ConfigError, PlatformError
from bot.events import ConversationKey, Event, Rating

__all__ = ["DiscordAdapter", "create", "enabled"]

log = logging.getLogger(__name__)

PORTAL = "https://discord.com/developers/applications"
INTENT_REFUSED = (
    "Discord refused the Message Content intent: turn on 'Message Content Intent' under Bot ->"
    f" Privileged Gateway Intents for this application in the developer portal ({PORTAL})"
)
NOT_HERE = "Sorry, I can't answer that here."
FINAL_CLOSE_CODES = {
    4004: "the token was refused",
    4010: "invalid shard",
    4011: "this bot is in too many guilds for one connection: set discord.shards",
    4012: "invalid gateway version",
    4013: "invalid intents",
}
# Messages people write; joins, pins, boosts and other system messages are not questions.
ANSWERABLE = (discord.MessageType.default, discord.MessageType.reply)

RATINGS: dict[str, Rating] = {"👍": "up", "👎": "down"}
#: A staff member's reaction that ends a handoff.
RESOLVED = "✅"


def enabled(config: Config) -> bool:
    """Whether Discord runs with ``config``; raises ConfigError naming a bad [discord] key."""
    section = config.section(DiscordConfig)
    if section.review_channel and not section.review_channel.isdigit():
        raise ConfigError(f"{config.source}: 'discord.review_channel' must be a channel id")
    if not 0 <= section.catch_up_minutes <= 1440:
        # Beyond a day, the de-duplication that keeps a caught-up answer from repeating forgets.
        raise ConfigError(f"{config.source}: 'discord.catch_up_minutes' must be between 0 and 1440")
    if section.enabled is False:
        return False
    has_token = config.secret(section.token_env) is not None
    if section.enabled is True and not has_token:
        raise ConfigError(
            f"{config.source}: 'discord.enabled' is true but ${section.token_env} is not set"
        )
    return has_token


def create(config: Config, service: Service) -> DiscordAdapter:
    return DiscordAdapter(config, service)


def _point_at(section: DiscordConfig) -> Callable[[], None]:
    """Aim discord.py at the configured endpoints; returns how to undo it."""
    route = discord.http.Route
    socket = discord.gateway.DiscordWebSocket
    before = (route.BASE, socket.DEFAULT_GATEWAY)
    route.BASE = section.api_base.rstrip("/")
    if section.gateway_url:
        socket.DEFAULT_GATEWAY = yarl.URL(section.gateway_url)

    def restore() -> None:
        route.BASE, socket.DEFAULT_GATEWAY = before

    return restore


class DiscordAdapter:
    name = PLATFORM

    def __init__(self, config: Config, service: Service) -> None:
        self.config = config
        self.section = config.section(DiscordConfig)
        self.service = service
        self.ready = asyncio.Event()
        self._inflight = Inflight(PLATFORM, config.bot.max_pending)
        self._replies: set[DiscordReply] = set()
        # The core answers only the bots in limits.allow_bots (with its loop breaker); the
        # others stop here. discord.allow_bots lets a bot through this edge as well.
        self._allow_bots = {*self.section.allow_bots, *config.limits.allow_bots}
        self._staff_roles = tuple(int(r) for r in config.handoff.staff_roles if r.isdigit())
        self._connected = False
        intents = discord.Intents.default()
        intents.message_content = True
        options: dict[str, Any] = {
            "intents": intents,
            "allowed_mentions": NO_PINGS,
            "guild_ready_timeout": self.section.guild_ready_timeout,
        }
        self.client: discord.Client
        if self.section.shards > 0:
            if self.section.shard_ids:
                # This replica's share of the shards; the others run elsewhere.
                options["shard_ids"] = list(self.section.shard_ids)
            self.client = discord.AutoShardedClient(shard_count=self.section.shards, **options)
        else:
            self.client = discord.Client(**options)
        for handler in (
            self.on_message,
            self.on_ready,
            self.on_resumed,
            self.on_disconnect,
            self.on_raw_reaction_add,
        ):
            self.client.event(handler)
        self.tree = app_commands.CommandTree(self.client)
        for command in slash_commands(config.bot.name, self._command):
            self.tree.add_command(command)
        # Questions taken in are answered after a crash or a kill: recovered on each start.
        service.resumable(PLATFORM, self._resume)
        # Staff's buttons: drafts to review (with a review channel), handoffs to claim.
        self.review = DiscordReview(self.client, service, int(self.section.review_channel or 0))
        if self.section.review_channel:
            service.reviewing(PLATFORM, self.review.post)
        # Snippets resolved conversations teach: linked back here, shown to staff for review.
        post = self.review.post_snippet if self.section.review_channel else None
        service.learns_on(PLATFORM, link_to, post)
        self.client.event(self.on_interaction)
        self._recovering: asyncio.Task[None] | None = None

    async def run(self) -> None:
        token = self.config.secret(self.section.token_env)
        if token is None:
            raise ConfigError(f"{self.config.source}: ${self.section.token_env} is not set")
        restore = _point_at(self.section)
        try:
            async with self.client:
                try:
                    await self._connect(token)
                finally:
                    await self._drain()
        finally:
            restore()

    async def _connect(self, token: str) -> None:
        try:
            await self.client.login(token)
            if not self.section.gateway_url:
                _, url, _ = await self.client.http.get_bot_gateway()
                discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
            await self._sync_commands()
            await self.client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            raise PlatformError(INTENT_REFUSED) from None
        except discord.LoginFailure:
            raise PlatformError(
                f"Discord refused the token in ${self.section.token_env}"
                f" (reset it under Bot -> Token in {PORTAL})"
            ) from None
        except discord.GatewayNotFound:
            raise PlatformError(
                f"could not get the gateway URL from {self.section.api_base}/gateway/bot"
            ) from None
        except discord.ConnectionClosed as exc:
            reason = FINAL_CLOSE_CODES.get(exc.code or 0, exc.reason or "no reason given")
            raise PlatformError(f"Discord closed the connection ({exc.code}): {reason}") from None
        except discord.HTTPException as exc:
            raise PlatformError(f"Discord refused a call while starting: {exc}") from None
        except OSError as exc:
            raise PlatformError(f"cannot reach Discord at {self.section.api_base}: {exc}") from None
        if not self.client.is_closed():
            raise PlatformError("the Discord connection ended")

    async def _sync_commands(self) -> None:
        """Register the slash commands: per guild at once, or globally (Discord takes up to an
        hour to show global changes)."""
        try:
            if self.section.command_guilds:
                for ident in self.section.command_guilds:
                    guild = discord.Object(id=int(ident))
                    self.tree.copy_global_to(guild=guild)
                    await self.tree.sync(guild=guild)
            else:
                await self.tree.sync()
        except (discord.HTTPException, ValueError) as exc:
            # Without the applications.commands scope mentions still work; say so and go on.
            log.warning("could not register Discord slash commands: %s", exc)

    async def _drain(self) -> None:
        """Stop taking events; let replies in flight finish within the grace period."""
        if self._recovering is not None:
            self._recovering.cancel()
            await asyncio.gather(self._recovering, return_exceptions=True)
        await self._inflight.drain(self.config.ops.shutdown_grace)
        for reply in list(self._replies):
            await reply.close()

    # -- the way in ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """For /healthz: the gateway session is up."""
        return self._connected and not self.client.is_closed()

    async def on_ready(self) -> None:
        user = self.client.user
        log.info("connected to Discord as %s (%s)", user, getattr(user, "id", "?"))
        self._connected = True
        self.ready.set()
        if self._recovering is None:
            self._recovering = asyncio.create_task(
                self.service.keep_recovering(PLATFORM), name="discord recovery"
            )
        # A new session (not a RESUME, which replays what was missed): what was said while
        # the bot was away is read back.
        self._inflight.track(asyncio.create_task(self._catch_up(), name="discord catch-up"))

    async def _catch_up(self) -> None:
        """Answer the questions asked while the bot was away: the last ``catch_up_minutes``
        of each channel and thread with a message since then, through the message path (so
        what was answered already is a repeated delivery, and stays answered once)."""
        minutes = self.section.catch_up_minutes
        if minutes <= 0:
            return
        since = datetime.now(UTC) - timedelta(minutes=minutes)
        floor = discord.utils.time_snowflake(since)
        places: list[discord.TextChannel | discord.Thread] = []
        for guild in self.client.guilds:
            places += guild.text_channels
            places += guild.threads
        places = [channel for channel in places if (channel.last_message_id or 0) > floor]
        for channel in places:
            try:
                async for message in channel.history(
                    after=since, limit=self.section.catch_up_messages, oldest_first=True
                ):
                    await self.on_message(message)
            except discord.HTTPException as exc:
                log.warning("cannot read back %s after reconnecting: %s", channel.id, exc)

    async def _resume(self, event: Event, reply_id: str) -> Reply:
        """The reply to ``event`` after a restart; finishing the message ``reply_id`` when
        its answer was already posted in one."""
        channel = self.client.get_partial_messageable(int(event.thread or event.channel))
        # A process killed between posting the answer's first message and recording it left
        # no id: the channel still shows the reply, which is finished rather than repeated.
        reply_id = reply_id or await self._posted_reply(channel, int(event.message_id))
        reply = self._reply(ResumedSink(channel, int(event.message_id)))
        if reply_id:
            reply.posted.append(channel.get_partial_message(int(reply_id)))
            reply.shown.append("")
        return reply

    async def _posted_reply(self, channel: discord.PartialMessageable, question: int) -> str:
        """The id of the bot's reply to ``question`` in ``channel`` (the first after it, within
        ``discord.catch_up_messages``), or '' when there is none or history cannot be read."""
        me = self.client.user
        try:
            async for message in channel.history(
                after=discord.Object(question),
                limit=self.section.catch_up_messages,
                oldest_first=True,
            ):
                reference = message.reference
                mine = me is not None and message.author.id == me.id
                if mine and reference is not None and reference.message_id == question:
                    return str(message.id)
        except discord.HTTPException as exc:
            log.warning("cannot look for an earlier reply to %s: %s", question, exc)
        return ""

    async def on_resumed(self) -> None:
        self._connected = True

    async def on_disconnect(self) -> None:
        self._connected = False

    async def on_message(self, message: discord.Message) -> None:
        me = self.client.user
        author = message.author
        if me is None or author.id == me.id or message.type not in ANSWERABLE:
            return
        if author.bot and str(author.id) not in self._allow_bots:
            return
        event = to_event(message, me.id)
        roles = [role.id for role in getattr(author, "roles", ())]
        if not self._permitted(message.guild, message.channel, roles, author.id):
            log.debug("not answering %s in %s: [discord] access lists", author.id, event.key)
            return
        handle = self._handle
        if message.attachments:
            handle = functools.partial(self._handle_with_files, message.attachments)
        self._inflight.start(event, self._reply(MessageSink(message)), handle)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        await self.review.on_interaction(interaction)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        me = self.client.user
        if me is None or payload.user_id == me.id:
            return
        channel = self.client.get_channel(payload.channel_id)
        where, thread, _ = place(channel, payload.channel_id)
        guild = str(payload.guild_id or "")
        if str(payload.emoji) == RESOLVED:
            # Staff mark a handed-off conversation done; the bot says it is back, there.
            roles = [str(role.id) for role in getattr(payload.member, "roles", ())]
            partial = self.client.get_partial_messageable(payload.channel_id)
            reply = self._reply(ResumedSink(partial, payload.message_id))
            key = ConversationKey(PLATFORM, guild, where, thread)
            resolving = self.service.resolve(key, str(payload.user_id), roles, reply)
            self._inflight.track(asyncio.create_task(resolving))
            return
        rating = RATINGS.get(str(payload.emoji))
        if rating is None:
            return
        scope = ConversationKey(PLATFORM, guild, where)
        task = asyncio.create_task(
            self.service.feedback(scope, str(payload.message_id), str(payload.user_id), rating)
        )
        self._inflight.track(task)

    def _reply(self, sink: Sink) -> DiscordReply:
        return DiscordReply(sink, self.section.edit_interval, staff_roles=self._staff_roles)

    def _permitted(
        self, guild: discord.Guild | None, channel: object, roles: Iterable[int], user: int
    ) -> bool:
        section = self.section
        if str(user) in section.deny_users:
            return False
        if guild is None:
            # DMs have no guild, channel or roles to check.
            return True
        if section.allow_guilds and str(guild.id) not in section.allow_guilds:
            return False
        places = {str(getattr(channel, "id", "")), str(getattr(channel, "parent_id", ""))}
        if section.allow_channels and not places & set(section.allow_channels):
            return False
        return not section.allow_roles or bool({str(r) for r in roles} & set(section.allow_roles))

    async def _handle_with_files(
        self, attachments: list[discord.Attachment], event: Event, reply: Reply
    ) -> None:
        """Read the message's files (through discord.py, from Discord's CDN) once the core
        means to answer it (a mention, a thread the bot is in), then answer."""
        admission = await self.service.admit(event)
        if admission.outcome is None:
            offered = [Offered(a.filename, a.size, a.read) for a in attachments]
            files = await read_files(offered, self.config.attachments)
            event = dataclasses.replace(event, files=files)
        await self._handle(event, reply, admission)

    async def _handle(self, event: Event, reply: Reply, admission: Admission | None = None) -> None:
        assert isinstance(reply, DiscordReply)
        self._replies.add(reply)
        try:
            outcome = await self.service.handle(event, reply, admission=admission)
            log.debug("discord %s: %s", event.message_id, outcome.value)
            if isinstance(reply.sink, InteractionSink) and not reply.posted:
                # The core chose silence (policy, handoff), but Discord shows an error for an
                # interaction left unanswered: end it quietly.
                await reply.sink.settle(NOT_HERE)
        except Exception:
            log.exception("answering Discord message %s failed", event.message_id)
        finally:
            self._replies.discard(reply)

    # -- slash commands -----------------------------------------------------------------------

    async def _command(self, interaction: discord.Interaction, text: str, defer: bool) -> None:
        user = interaction.user
        roles = [role.id for role in getattr(user, "roles", ())]
        if not self._permitted(interaction.guild, interaction.channel, roles, user.id):
            # Discord shows an error if an interaction goes unanswered: say no, to them only.
            await interaction.response.send_message(
                NOT_HERE, ephemeral=True, allowed_mentions=NO_PINGS
            )
            return
        channel, thread, parents = place(interaction.channel, interaction.channel_id)
        event = Event(
            platform=PLATFORM,
            workspace=str(interaction.guild_id or ""),
            channel=channel,
            thread=thread,
            message_id=str(interaction.id),
            user=str(user.id),
            user_name=user.display_name,
            text=text,
            is_dm=interaction.guild_id is None,
            received_at=interaction.created_at,
            roles=tuple(str(r) for r in roles),
            parents=parents,
        )
        if defer:
            # An interaction must be acknowledged within 3 seconds; the answer may take longer.
            await interaction.response.defer(thinking=True)
        self._inflight.start(event, self._reply(InteractionSink(interaction)), self._handle)
