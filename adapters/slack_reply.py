"""How an answer appears on Slack: streamed into a thread, or a placeholder that is edited.

``SlackReply`` implements ``bot.core.reply.Reply`` on ``ThrottledReply``. By default it uses Slack's
chat streaming API through slack_sdk's ``chat_stream()`` helper: at most once per ``interval``
the text written since the last append goes out with ``chat.appendStream`` (Markdown, rendered
by Slack), holding back the last, unfinished word, so what was sent stays a prefix of what
follows. The final text ends the stream with ``chat.stopStream``; if cleaning changed what was
already sent, the message is then replaced with ``chat.update``.

A workspace that refuses ``chat.startStream`` is remembered in ``refused`` (shared by the
adapter's replies) and gets the fallback from then on: a placeholder message, then
``chat.update`` with the text as mrkdwn at most once per ``interval``. Either way an answer over
the method's limit continues in further messages in the thread, and the text is escaped
(``adapters.slack_format``), so it can ping no one.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from adapters.discord_split import split_message
from adapters.slack_format import escape, to_mrkdwn
from adapters.throttled import ThrottledReply

__all__ = [
    "CLAIM_ACTION",
    "PLACEHOLDER",
    "STREAM_LIMIT",
    "UPDATE_LIMIT",
    "EphemeralReply",
    "Place",
    "SlackReply",
    "claim_blocks",
]

log = logging.getLogger(__name__)

#: chat.startStream / appendStream take at most 12,000 characters of Markdown in a message.
STREAM_LIMIT = 12_000
#: chat.update and chat.postMessage: Slack truncates at 40,000, but keep well under 4,000.
UPDATE_LIMIT = 3_900
PLACEHOLDER = "_Thinking…_"
_GROUP = re.compile(r"^S[A-Z0-9]+$")
_USER = re.compile(r"^[UW][A-Z0-9]+$")
_LAST_WORD = re.compile(r"\S*\Z")


@dataclass(frozen=True, slots=True)
class Place:
    """Where an answer goes, and to whom (streams in channels name their recipient)."""

    team: str
    channel: str
    thread_ts: str
    user: str
    is_dm: bool = False


def staff_mention(groups: Iterable[str], users: Iterable[str]) -> str:
    """The handoff's mention of the support team: Slack user groups and users, by id."""
    found = [f"<!subteam^{g}>" for g in groups if _GROUP.match(g)]
    found += [f"<@{u}>" for u in users if _USER.match(u)]
    return " ".join(found)


class SlackReply(ThrottledReply):
    platform = "slack"

    def __init__(
        self,
        client: AsyncWebClient,
        place: Place,
        refused: set[str],
        interval: float = 1.0,
        staff: str = "",
    ) -> None:
        super().__init__(interval)
        self.client = client
        self.place = place
        self.refused = refused
        self.staff = staff
        self.streaming = place.team not in refused
        # ``posted`` holds the ts of each message; the first is what reactions rate.
        self._stream: AsyncChatStream | None = None
        self._streamed = ""

    @property
    def message_id(self) -> str:
        return self.posted[0] if self.posted else ""

    async def start(self) -> None:
        if not self.streaming and not self.posted:
            await self._post(PLACEHOLDER, mrkdwn=True)

    async def handoff(self, text: str, conversation: str) -> None:
        """Finish with ``text``, then mention the support team (the only ping the bot makes)
        with a Claim button for the one who takes the conversation."""
        await self.finish(text)
        if self.staff:
            sent = await self.client.chat_postMessage(
                channel=self.place.channel,
                thread_ts=self.place.thread_ts,
                text=self.staff,
                blocks=claim_blocks(self.staff, conversation),
            )
            self.posted.append(str(sent["ts"]))
            self.shown.append(self.staff)

    async def _show(self, text: str, final: bool) -> None:
        if self.streaming:
            try:
                await self._show_streamed(text, final)
                return
            except SlackApiError as exc:
                if self._stream is not None:
                    raise
                # Refused before anything was shown: this workspace gets the fallback.
                self.refused.add(self.place.team)
                self.streaming = False
                log.warning(
                    "Slack refused chat.startStream in %s (%s): answering with chat.update there",
                    self.place.team,
                    exc.response.get("error", "error"),
                )
        await self._show_edited(text, final)

    # -- streaming ----------------------------------------------------------------------------

    async def _show_streamed(self, text: str, final: bool) -> None:
        body = escape(text)
        if not final:
            # The last word may still change (a mention being cleaned, a word being cut).
            body = _LAST_WORD.sub("", body).rstrip()
        pieces = split_message(body, STREAM_LIMIT) if body.strip() else []
        if not pieces:
            return
        first = pieces[0]
        if not final:
            if len(first) > len(self._streamed) and first.startswith(self._streamed):
                await self._append(first[len(self._streamed) :])
            return
        await self._stop_stream(first)
        for piece in pieces[1:]:
            await self._post(piece)

    async def _open(self) -> AsyncChatStream:
        place = self.place
        recipient: dict[str, Any] = {}
        if not place.is_dm:
            recipient = {"recipient_team_id": place.team, "recipient_user_id": place.user}
        # Our own throttle does the buffering: every append goes out at once.
        return await self.client.chat_stream(
            channel=place.channel, thread_ts=place.thread_ts, buffer_size=1, **recipient
        )

    async def _append(self, delta: str) -> None:
        if self._stream is None:
            stream = await self._open()
            await stream.append(markdown_text=delta)  # chat.startStream, with the first text
            self._stream = stream
            self.posted.append(str(stream.ts))
            self.shown.append("")
            await self._posted()
        else:
            await self._stream.append(markdown_text=delta)
        self._streamed += delta
        self.shown[0] = self._streamed

    async def _stop_stream(self, first: str) -> None:
        if self._stream is None:
            stream = await self._open()
            await stream.stop(markdown_text=first)  # chat.startStream, then chat.stopStream
            self._stream = stream
            self.posted.append(str(stream.ts))
            self.shown.append(first)
            await self._posted()
            return
        if first.startswith(self._streamed):
            await self._stream.stop(markdown_text=first[len(self._streamed) :])
        else:
            # Cleaning rewrote what was already sent: end the stream, then replace its text.
            with contextlib.suppress(SlackApiError, SlackRequestError):
                await self._stream.stop()
            await self.client.chat_update(
                channel=self.place.channel, ts=self.posted[0], markdown_text=first
            )
        self.shown[0] = first

    # -- the fallback: a placeholder, then edits ----------------------------------------------

    async def _show_edited(self, text: str, final: bool) -> None:
        pieces = split_message(to_mrkdwn(text), UPDATE_LIMIT) if text.strip() else []
        channel = self.place.channel
        await self._show_pieces(
            pieces,
            final,
            edit=lambda ts, piece: self.client.chat_update(channel=channel, ts=ts, text=piece),
            post=lambda _, piece: self._send(piece, mrkdwn=True),
            delete=self._delete,
        )

    async def _delete(self, ts: str) -> None:
        with contextlib.suppress(SlackApiError):
            await self.client.chat_delete(channel=self.place.channel, ts=ts)

    async def _send(self, text: str, mrkdwn: bool = False) -> str:
        """A new message in the answer's thread, mrkdwn ``text`` or Markdown; returns its ts."""
        body: dict[str, Any] = {"text": text} if mrkdwn else {"markdown_text": text}
        sent = await self.client.chat_postMessage(
            channel=self.place.channel, thread_ts=self.place.thread_ts, **body
        )
        return str(sent["ts"])

    async def _post(self, text: str, mrkdwn: bool = False) -> None:
        """``_send``, as one more message of the answer."""
        self.posted.append(await self._send(text, mrkdwn))
        self.shown.append(text)
        await self._posted()


#: A Claim button's action id; its value is the conversation's key.
CLAIM_ACTION = "parley_claim"


def claim_blocks(ping: str, conversation: str, claimed: str = "") -> list[dict[str, Any]]:
    """The staff ping: the mention, then a Claim button, or once claimed, who took it."""
    shown: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": ping}}]
    if claimed:
        return [*shown, {"type": "context", "elements": [{"type": "mrkdwn", "text": claimed}]}]
    button = {
        "type": "button",
        "action_id": CLAIM_ACTION,
        "text": {"type": "plain_text", "text": "Claim"},
        "style": "primary",
        "value": conversation,
    }
    return [*shown, {"type": "actions", "block_id": CLAIM_ACTION, "elements": [button]}]


class EphemeralReply:
    """A command's notice, shown to the one who asked (help, reset, "slow down")."""

    def __init__(self, client: AsyncWebClient, channel: str, user: str) -> None:
        self.client = client
        self.channel = channel
        self.user = user

    async def start(self) -> None:
        pass

    async def update(self, text: str) -> None:
        pass

    async def finish(self, text: str) -> None:
        await self.client.chat_postEphemeral(
            channel=self.channel, user=self.user, text=escape(text)
        )

    async def fail(self, message: str) -> None:
        await self.finish(message)
