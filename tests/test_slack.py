"""The Slack adapter, end to end: the unmodified slack-bolt / slack_sdk clients against the
loopback fake Slack in tests/fakes/slack.py (Web API, Socket Mode, signed Events API requests),
and the real service with a scripted backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.settings import SlackConfig
from adapters.slack import SlackAdapter, create, enabled
from adapters.slack_event import to_event
from adapters.slack_files import offered
from adapters.slack_format import escape, readable, to_mrkdwn
from adapters.slack_reply import PLACEHOLDER, STREAM_LIMIT, UPDATE_LIMIT
from bot.config import Config, HandoffConfig, OpsConfig
from bot.core.service import Outcome, Service
from bot.core.wording import FILE_IMAGE, FILE_NOT_FETCHED, RESET_DONE
from bot.errors import ConfigError, PlatformError
from bot.storage.sqlite import SQLiteStore
from tests.conftest import make_config
from tests.fakes.slack import (
    ALICE,
    APP_TOKEN,
    BOB,
    BOT_ID,
    BOT_TOKEN,
    BOT_USER,
    CHANNEL,
    DM,
    OTHER_BOT_USER,
    SIGNING_SECRET,
    STAFF_GROUP,
    TEAM,
    FakeSlack,
    event_body,
    new_ts,
    signed_headers,
)
from tests.harness import (
    Outcomes,
    connected,
    inbox_emptied,
    left_by_a_crash,
    record_outcomes,
    waiting,
)
from tests.pdfs import text_pdf
from tests.scripted import GatedBackend, ScriptedBackend, quoting

MENTION = f"<@{BOT_USER}>"


def config_for(fake: FakeSlack, tmp_path: Path, **slack: Any) -> Config:
    base = make_config(Path("scripted"), tmp_path)
    section = SlackConfig(enabled=True, api_base=fake.api_base, http_port=0, edit_interval=0.05)
    return dataclasses.replace(
        base,
        sections={"slack": dataclasses.replace(section, **slack)},
        ops=OpsConfig(enabled=False, shutdown_grace=2.0),
        handoff=HandoffConfig(staff_roles=[STAFF_GROUP]),
    )


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeSlack]:
    server = await FakeSlack().start()
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    yield server
    await server.close()


@asynccontextmanager
async def serving(
    fake: FakeSlack, tmp_path: Path, backend: Any = None, **slack: Any
) -> AsyncIterator[tuple[SlackAdapter, Service, Outcomes]]:
    """A started service and a connected adapter; yields them and the outcomes of handle()."""
    config = config_for(fake, tmp_path, **slack)
    service = Service(config, backend or ScriptedBackend(), SQLiteStore(tmp_path / "parley.db"))
    await service.start()
    outcomes = record_outcomes(service)
    adapter = create(config, service)
    try:
        async with connected(adapter):
            yield adapter, service, outcomes
            # Let the client acknowledge what it was sent before the socket goes.
            with contextlib.suppress(TimeoutError):
                await fake.wait_for(lambda: set(fake.sent_envelopes) <= fake.acked, within=5)
    finally:
        await service.close()


def mention(text: str, user: str = ALICE, thread_ts: str | None = None) -> dict[str, Any]:
    event = {"type": "app_mention", "user": user, "text": text, "ts": new_ts(), "channel": CHANNEL}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def message(text: str, channel: str = CHANNEL, **extra: Any) -> dict[str, Any]:
    channel_type = "im" if channel.startswith("D") else "channel"
    return {
        "type": "message",
        "user": ALICE,
        "text": text,
        "ts": new_ts(),
        "channel": channel,
        "channel_type": channel_type,
        **extra,
    }


async def deliver(fake: FakeSlack, event: dict[str, Any]) -> str:
    """Deliver ``event`` over Socket Mode; returns the envelope id."""
    return await fake.send_envelope("events_api", event_body(event))


def answered(outcomes: Outcomes, event: dict[str, Any]) -> Callable[[], list[Outcome]]:
    return lambda: [o for m, o in outcomes if m == event["ts"]]


async def ask(fake: FakeSlack, outcomes: Outcomes, text: str) -> dict[str, Any]:
    """Mention the bot with ``text`` and wait until the service has dealt with it."""
    event = mention(text)
    await deliver(fake, event)
    await fake.wait_for(answered(outcomes, event))
    return event


# -- streaming -------------------------------------------------------------------------------


async def test_a_mention_is_streamed_into_its_thread(fake: FakeSlack, tmp_path: Path) -> None:
    answer = "Open Settings, choose Security, then Reset password. We e-mail you a link."
    backend = GatedBackend(answer, chunk=8, before_gate=3)
    async with serving(fake, tmp_path, backend):
        asked = mention(f"{MENTION} how do I reset my password?")
        envelope = await deliver(fake, asked)
        started = await fake.wait_for(lambda: fake.called("chat.startStream"))
        # Part of the answer is on screen while the model is still writing.
        shown = fake.thread(CHANNEL, asked["ts"])[0]
        assert shown.markdown and answer.startswith(shown.markdown) and not shown.stopped
        backend.gate.set()
        await fake.wait_for(lambda: fake.called("chat.stopStream"))

    assert envelope in fake.acked
    args = started[0].args
    assert args["thread_ts"] == asked["ts"]
    assert (args["recipient_user_id"], args["recipient_team_id"]) == (ALICE, TEAM)
    [reply] = fake.thread(CHANNEL, asked["ts"])
    assert reply.streaming and reply.stopped and reply.markdown == answer
    # Appends are throttled: far fewer than the model's chunks.
    assert len(fake.called("chat.appendStream")) < len(answer) // backend.chunk
    assert not fake.called("chat.update") and not fake.called("chat.postMessage")
    # The bot's own mention is not part of the question.
    assert backend.prompts[0][-1].content == "how do I reset my password?"


async def test_shared_files_are_downloaded_with_the_bot_token_and_read(
    fake: FakeSlack, tmp_path: Path
) -> None:
    invoice = fake.share(
        "invoice.pdf", text_pdf("Invoice 77", "Total due: EUR 12.50"), "text/plain"
    )
    photo = fake.share("screen.png", b"\x89PNG\r\n\x1a\n" + bytes(40), "image/png")
    elsewhere = dict(invoice, url_private_download="http://198.51.100.7/steal", name="x.txt")
    async with serving(
        fake,
        tmp_path,
        ScriptedBackend(quoting(r"Total due: [^\n]+", "Your invoice shows", "No invoice")),
    ) as (_, _, outcomes):
        asked = dict(mention(f"{MENTION} how much do I owe?"), files=[invoice, photo, elsewhere])
        await deliver(fake, asked)
        await fake.wait_for(answered(outcomes, asked))
        [reply] = fake.thread(CHANNEL, asked["ts"])
    lines = reply.body.split("\n\n")
    assert lines[0] == "Your invoice shows Total due: EUR 12.50."
    assert lines[1:] == [
        FILE_IMAGE.format(name="screen.png"),
        FILE_NOT_FETCHED.format(name="x.txt"),
    ]
    # Downloaded with the bot token; the token never went to the address outside Slack.
    assert [(path.rsplit("/", 1)[1], token) for path, token in fake.downloads] == [
        ("invoice.pdf", BOT_TOKEN),
        ("screen.png", BOT_TOKEN),
    ]


async def test_refused_streaming_falls_back_to_a_placeholder_and_edits(
    fake: FakeSlack, tmp_path: Path
) -> None:
    fake.refuse_streaming = True
    answer = "**Reset** it under [Settings](https://acme.example/settings), then sign in again."
    backend = GatedBackend(answer, chunk=8, before_gate=3)
    async with serving(fake, tmp_path, backend) as (adapter, _, outcomes):
        asked = mention(f"{MENTION} how do I reset my password?")
        await deliver(fake, asked)
        placeholder = await fake.wait_for(lambda: fake.thread(CHANNEL, asked["ts"]))
        backend.gate.set()
        expected = "*Reset* it under <https://acme.example/settings|Settings>, then sign in again."
        await fake.wait_for(lambda: fake.thread(CHANNEL, asked["ts"])[0].text == expected)
        again = await ask(fake, outcomes, f"{MENTION} and my e-mail?")

    # The first answer shows what it has when the refusal comes, then is edited.
    assert placeholder[0].ts == fake.thread(CHANNEL, asked["ts"])[0].ts
    assert fake.called("chat.update") and len(fake.thread(CHANNEL, asked["ts"])) == 1
    # The refusal is remembered for the workspace: the next answer does not try streaming, and
    # starts as a placeholder.
    assert len(fake.called("chat.startStream")) == 1 and adapter.refused_streaming == {TEAM}
    posts = [c.args for c in fake.called("chat.postMessage")]
    assert [p["text"] for p in posts if p["thread_ts"] == again["ts"]] == [PLACEHOLDER]
    assert fake.thread(CHANNEL, again["ts"])[0].text == expected


async def test_a_direct_message_is_answered_in_its_thread(fake: FakeSlack, tmp_path: Path) -> None:
    async with serving(fake, tmp_path, ScriptedBackend("Happy to help!")):
        asked = message("hello, can you help?", channel=DM)
        await deliver(fake, asked)
        await fake.wait_for(lambda: fake.called("chat.stopStream"))
    [reply] = [m for m in fake.messages.values() if m.channel == DM]
    assert reply.thread_ts == asked["ts"] and reply.markdown == "Happy to help!"
    # A DM names no recipient.
    assert "recipient_user_id" not in fake.called("chat.startStream")[0].args


async def test_a_thread_follow_up_continues_the_conversation(
    fake: FakeSlack, tmp_path: Path
) -> None:
    backend = ScriptedBackend(lambda prompt: f"Answer {len(prompt)}.")
    async with serving(fake, tmp_path, backend) as (_, _, outcomes):
        first = await ask(fake, outcomes, f"{MENTION} what plans do you have?")
        follow = message("and which one has SSO?", thread_ts=first["ts"])
        await deliver(fake, follow)
        await fake.wait_for(answered(outcomes, follow))
        # A thread the bot is not in, and a channel message without a mention: not for it.
        elsewhere = message("lunch?", thread_ts=new_ts())
        chatter = message("anyone around?")
        for event in (elsewhere, chatter):
            await deliver(fake, event)
        await ask(fake, outcomes, f"{MENTION} thanks")

    replies = fake.thread(CHANNEL, first["ts"])
    assert len(replies) == 2
    second_prompt = [m.content for m in backend.prompts[1]]
    assert "what plans do you have?" in second_prompt
    assert second_prompt[-1] == "and which one has SSO?"
    assert [o for m, o in outcomes if m == elsewhere["ts"]] in ([], [Outcome.IGNORED])
    assert not fake.thread(CHANNEL, elsewhere["thread_ts"]) and not fake.thread(
        CHANNEL, chatter["ts"]
    )


async def test_bots_edits_and_joins_get_nothing(fake: FakeSlack, tmp_path: Path) -> None:
    backend = ScriptedBackend("Here you go.")
    async with serving(fake, tmp_path, backend) as (_, _, outcomes):
        ignored = [
            {**mention(f"{MENTION} hi from a bot", user=OTHER_BOT_USER), "bot_id": "B0000OTHR"},
            message(f"{MENTION} a bot's post", subtype="bot_message", bot_id="B0000OTHR"),
            message("edited", subtype="message_changed", message={"text": f"{MENTION} hi"}),
            message("", subtype="message_deleted", deleted_ts=new_ts()),
            message(f"<@{ALICE}> has joined the channel", subtype="channel_join"),
            {**mention(f"{MENTION} my own echo", user=BOT_USER), "bot_id": BOT_ID},
        ]
        envelopes = [await deliver(fake, event) for event in ignored]
        await ask(fake, outcomes, f"{MENTION} a real question")
        await fake.wait_for(lambda: set(envelopes) <= fake.acked)

    assert len(backend.prompts) == 1
    assert len(fake.called("chat.startStream")) == 1


@pytest.mark.parametrize("refused", [False, True], ids=["streamed", "fallback"])
async def test_model_output_cannot_ping_anyone(
    fake: FakeSlack, tmp_path: Path, refused: bool
) -> None:
    fake.refuse_streaming = refused
    answer = "Hi <!channel> and <!here>, ask <@U0123ABCD> or <!subteam^S0123|team> & <b>x</b>."
    async with serving(fake, tmp_path, ScriptedBackend(answer)) as (_, _, outcomes):
        asked = await ask(fake, outcomes, f"{MENTION} who can help?")

    [reply] = fake.thread(CHANNEL, asked["ts"])
    shown = reply.body
    assert "<!" not in shown and "<@" not in shown
    assert "&lt;b&gt;x&lt;/b&gt;" in shown and " &amp; " in shown
    every = [c.args.get("text", "") + c.args.get("markdown_text", "") for c in fake.calls]
    every += [json.dumps(c.args.get("chunks", "")) for c in fake.calls]
    assert not any("<!" in sent or "<@" in sent for sent in every)


def long_text(sentence: str, size: int) -> str:
    """About ``size`` characters of paragraphs (the core cuts lines over 1,000 characters)."""
    paragraph = " ".join([sentence] * 6)
    return "\n\n".join([paragraph] * (size // (len(paragraph) + 2) + 1))[:size].strip()


@pytest.mark.parametrize(
    ("refused", "size", "limit"),
    [(True, 9_000, UPDATE_LIMIT), (False, 25_000, STREAM_LIMIT)],
    ids=["edited-9000", "streamed-25000"],
)
async def test_a_long_answer_continues_in_further_messages(
    fake: FakeSlack, tmp_path: Path, refused: bool, size: int, limit: int
) -> None:
    fake.refuse_streaming = refused
    answer = long_text("Billing runs on the first of each month for every project.", size)
    async with serving(fake, tmp_path, ScriptedBackend(answer, chunk=700)) as (_, _, outcomes):
        asked = await ask(fake, outcomes, f"{MENTION} tell me everything about billing")

    replies = fake.thread(CHANNEL, asked["ts"])
    assert len(replies) == 3 and replies[0].streaming is not refused
    assert all(len(m.body) <= limit for m in replies)
    assert " ".join(m.body for m in replies).split() == answer.split()


async def test_a_rate_limited_post_is_delivered_once_after_the_wait(
    fake: FakeSlack, tmp_path: Path
) -> None:
    fake.refuse_streaming = True
    fake.rate_limit("chat.postMessage", 1)
    async with serving(fake, tmp_path, ScriptedBackend("Sure thing.")) as (_, _, outcomes):
        asked = await ask(fake, outcomes, f"{MENTION} hello")

    posts = fake.called("chat.postMessage")
    assert len(posts) == 2  # the 429, then the retry after Retry-After
    [reply] = fake.thread(CHANNEL, asked["ts"])
    assert reply.text == "Sure thing."


# -- the Events API over HTTP ----------------------------------------------------------------


async def post_event(adapter: SlackAdapter, body: str, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(adapter.url, data=body, headers=headers) as response,
    ):
        await response.read()
        return response.status


async def test_http_requests_must_be_signed_and_fresh(fake: FakeSlack, tmp_path: Path) -> None:
    backend = ScriptedBackend("Signed and answered.")
    async with serving(fake, tmp_path, backend, mode="http") as (adapter, _, outcomes):
        body = json.dumps(event_body(mention(f"{MENTION} hi")))
        unsigned = {"Content-Type": "application/json"}
        wrong = signed_headers("not-the-secret", body)
        garbled = {**signed_headers(SIGNING_SECRET, body), "X-Slack-Request-Timestamp": "soon"}
        for headers in (unsigned, wrong, garbled):
            status = await post_event(adapter, body, headers)
            assert status == 401
        stale = json.dumps(event_body(mention(f"{MENTION} hi")))
        old = int(time.time()) - 6 * 60
        status = await post_event(adapter, stale, signed_headers(SIGNING_SECRET, stale, old))
        assert status == 401

        good = mention(f"{MENTION} hi")
        body = json.dumps(event_body(good))
        status = await post_event(adapter, body, signed_headers(SIGNING_SECRET, body))
        assert status == 200
        await fake.wait_for(answered(outcomes, good))

    assert len(backend.prompts) == 1
    assert fake.thread(CHANNEL, good["ts"])[0].markdown == "Signed and answered."


async def test_a_retried_delivery_gets_one_answer(fake: FakeSlack, tmp_path: Path) -> None:
    backend = ScriptedBackend("Only once.", delay=0.3)
    async with serving(fake, tmp_path, backend, mode="http") as (adapter, _, outcomes):
        asked = mention(f"{MENTION} are you there?")
        body = json.dumps(event_body(asked, event_id="Ev0000RETRY"))
        status = await post_event(adapter, body, signed_headers(SIGNING_SECRET, body))
        # Acknowledged before the answer is written (Slack wants it within 3 seconds).
        assert status == 200 and not answered(outcomes, asked)()
        retry = {
            **signed_headers(SIGNING_SECRET, body),
            "X-Slack-Retry-Num": "1",
            "X-Slack-Retry-Reason": "http_timeout",
        }
        assert await post_event(adapter, body, retry) == 200
        # The same message as a `message` event too (another event_id): still one answer.
        twin = {**asked, "type": "message", "channel_type": "channel"}
        twin_body = json.dumps(event_body(twin))
        await post_event(adapter, twin_body, signed_headers(SIGNING_SECRET, twin_body))
        await fake.wait_for(answered(outcomes, asked))
        await asyncio.sleep(0.3)

    assert len(backend.prompts) == 1
    assert len(fake.thread(CHANNEL, asked["ts"])) == 1


# -- slash command, reactions, handing off ---------------------------------------------------


def slash(text: str) -> dict[str, Any]:
    return {
        "token": "legacy",
        "team_id": TEAM,
        "channel_id": CHANNEL,
        "channel_name": "general",
        "user_id": ALICE,
        "user_name": "alice",
        "command": "/parley",
        "text": text,
        "api_app_id": "A0000APP1",
        "response_url": "https://hooks.slack.invalid/commands/1",
        "trigger_id": f"{time.time_ns()}.trigger",
    }


async def test_slash_command_asks_resets_and_helps(fake: FakeSlack, tmp_path: Path) -> None:
    backend = ScriptedBackend("Plans start at $10 a month.")
    async with serving(fake, tmp_path, backend):
        asked = await fake.send_envelope("slash_commands", slash("how much is the pro plan?"))
        await fake.wait_for(lambda: fake.called("chat.stopStream"))
        await fake.send_envelope("slash_commands", slash("reset"))
        await fake.wait_for(lambda: fake.called("chat.postEphemeral"))
        await fake.send_envelope("slash_commands", slash("help"))
        await fake.wait_for(lambda: len(fake.called("chat.postEphemeral")) == 2)

    assert asked in fake.acked
    [quote] = [m for m in fake.messages.values() if m.thread_ts is None and not m.ephemeral]
    assert quote.text == "*alice asked:* how much is the pro plan?"
    [answer] = fake.thread(CHANNEL, quote.ts)
    assert answer.markdown == "Plans start at $10 a month."
    notices = [c.args for c in fake.called("chat.postEphemeral")]
    assert notices[0]["text"] == escape(RESET_DONE) and notices[0]["user"] == ALICE
    assert "reset" in notices[1]["text"]
    assert len(backend.prompts) == 1


async def test_reactions_rate_the_answer(fake: FakeSlack, tmp_path: Path) -> None:
    backend = ScriptedBackend("Try turning it off and on.")
    async with serving(fake, tmp_path, backend) as (_, _, outcomes):
        asked = await ask(fake, outcomes, f"{MENTION} my server is down")
        [reply] = fake.thread(CHANNEL, asked["ts"])
        for user, reaction in ((ALICE, "+1"), (BOB, "-1"), (ALICE, "tada")):
            await deliver(
                fake,
                {
                    "type": "reaction_added",
                    "user": user,
                    "reaction": reaction,
                    "item": {"type": "message", "channel": CHANNEL, "ts": reply.ts},
                    "item_user": BOT_USER,
                    "ts": new_ts(),
                },
            )

        def ratings() -> list[tuple[str, str, str]]:
            with sqlite3.connect(tmp_path / "parley.db") as db:
                return db.execute(
                    "SELECT reply_id, user_id, rating FROM feedback ORDER BY user_id"
                ).fetchall()

        found = await fake.wait_for(lambda: len(ratings()) == 2 and ratings())
    assert found == [(reply.ts, ALICE, "up"), (reply.ts, BOB, "down")]


async def test_handing_off_mentions_the_support_group(fake: FakeSlack, tmp_path: Path) -> None:
    backend = ScriptedBackend("unused")
    async with serving(fake, tmp_path, backend) as (_, _, outcomes):
        asked = await ask(fake, outcomes, f"{MENTION} I want to talk to a human")

    replies = fake.thread(CHANNEL, asked["ts"])
    assert replies[-1].text == f"<!subteam^{STAFF_GROUP}>"
    assert "<!" not in replies[0].body and not backend.prompts


# -- starting up -----------------------------------------------------------------------------


def test_enabled_needs_the_modes_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = dataclasses.replace(
        make_config(Path("scripted"), tmp_path), sections={"slack": SlackConfig()}
    )
    assert not enabled(config)
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    with pytest.raises(ConfigError, match=r"\$SLACK_APP_TOKEN.*slack.mode = \"http\""):
        enabled(config)
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    assert enabled(config)
    http = dataclasses.replace(config, sections={"slack": SlackConfig(mode="http")})
    with pytest.raises(ConfigError, match=r"\$SLACK_SIGNING_SECRET"):
        enabled(http)
    off = dataclasses.replace(config, sections={"slack": SlackConfig(enabled=False)})
    assert not enabled(off)


async def test_a_refused_token_stops_with_one_line(
    fake: FakeSlack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-wrong")
    config = config_for(fake, tmp_path)
    service = Service(config, ScriptedBackend(), SQLiteStore(tmp_path / "parley.db"))
    with pytest.raises(PlatformError, match=r"refused \$SLACK_BOT_TOKEN \(invalid_auth\)") as err:
        await create(config, service).run()
    assert "xoxb-wrong" not in str(err.value) and "\n" not in str(err.value)


# -- formats ---------------------------------------------------------------------------------


def test_incoming_markup_reads_as_plain_text() -> None:
    names = {ALICE: "alice"}.get
    text = (
        f"{MENTION} ask <@{ALICE}> in <#C0000HELP|help> about <https://acme.example|pricing>"
        " &amp; &lt;tags&gt; <!here>"
    )
    assert readable(text, BOT_USER, lambda u: names(u) or "user") == (
        "ask @alice in #help about pricing (https://acme.example) & <tags> @here"
    )


def test_markdown_becomes_mrkdwn() -> None:
    text = (
        "# Plans\n**Pro** is *great*, ~~old~~ see [docs](https://acme.example/d).\n- one\n`a*b*c`"
    )
    assert to_mrkdwn(text) == (
        "*Plans*\n*Pro* is _great_, ~old~ see <https://acme.example/d|docs>.\n• one\n`a*b*c`"
    )


@given(st.text())
def test_no_text_becomes_a_ping(text: str) -> None:
    for shown in (escape(text), to_mrkdwn(text)):
        assert "<!" not in shown and "<@" not in shown and "<#" not in shown


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "text": st.one_of(st.none(), st.text()),
            "ts": st.one_of(
                st.text(max_size=20), st.sampled_from(["1700000000.000100", "inf", "nan", "1e300"])
            ),
            "thread_ts": st.text(max_size=20),
            "channel": st.text(max_size=12),
            "user": st.one_of(st.none(), st.text(max_size=12)),
            "bot_id": st.text(max_size=8),
            "channel_type": st.sampled_from(["im", "channel", "group", "mpim"]),
        },
    )
)
def test_any_payload_converts_or_is_plain_text(payload: dict[str, Any]) -> None:
    event = to_event(payload, TEAM, BOT_USER, {})
    assert event.platform == "slack" and isinstance(event.text, str)
    assert f"<@{BOT_USER}>" not in event.text and event.received_at.tzinfo is not None


# -- nothing lost across a crash -------------------------------------------------------------


async def test_a_question_taken_in_before_a_crash_is_answered_once_after_the_restart(
    fake: FakeSlack, tmp_path: Path
) -> None:
    answer = "Only once."
    asked = mention(f"{MENTION} are you there?")
    await left_by_a_crash(tmp_path / "parley.db", to_event(asked, TEAM, BOT_USER, {}), claimed=True)
    async with serving(fake, tmp_path, ScriptedBackend(answer)) as (_, _, outcomes):
        await fake.wait_for(lambda: [m for m in fake.thread(CHANNEL, asked["ts"]) if m.stopped])
        # Not acknowledged before the crash, so Slack delivers it again: not answered twice.
        await deliver(fake, asked)
        assert await fake.wait_for(answered(outcomes, asked)) == [Outcome.DUPLICATE]
    [reply] = fake.thread(CHANNEL, asked["ts"])
    assert reply.body == answer
    assert await waiting(tmp_path / "parley.db") == 0


async def test_an_answer_cut_by_a_crash_is_finished_in_its_own_message(
    fake: FakeSlack, tmp_path: Path
) -> None:
    answer = "Your invoice is under Billing, then History."
    asked = mention(f"{MENTION} where is my invoice?")
    cut = fake._post({"channel": CHANNEL, "thread_ts": asked["ts"], "text": "Your invoice is"})
    db = tmp_path / "parley.db"
    await left_by_a_crash(db, to_event(asked, TEAM, BOT_USER, {}), claimed=True, reply_id=cut.ts)
    async with serving(fake, tmp_path, ScriptedBackend(answer)):
        await fake.wait_for(lambda: fake.messages[cut.ts].updates)
        await inbox_emptied(tmp_path / "parley.db")
    assert [m.ts for m in fake.thread(CHANNEL, asked["ts"])] == [cut.ts]
    assert fake.messages[cut.ts].body == to_mrkdwn(answer)
    assert await waiting(tmp_path / "parley.db") == 0


async def test_a_sign_in_page_where_the_file_should_be_is_not_read_as_the_file(
    fake: FakeSlack,
) -> None:
    shared = fake.share("notes.txt", b"the real notes", "text/plain")
    [offer] = offered([shared], "xoxb-without-files-read", fake.api_base, 1000)
    with pytest.raises(PlatformError, match="files:read"):
        await offer.fetch()
