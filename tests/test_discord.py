"""The Discord adapter, end to end: the unmodified discord.py client against the loopback fake
Discord in tests/fakes/discord.py, and the real service (a scripted backend, or the tiny model).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from adapters.discord import NOT_HERE, DiscordAdapter, create, enabled
from adapters.discord_event import readable
from adapters.discord_split import split_message
from adapters.markdown import open_fence
from adapters.settings import DiscordConfig
from bot.app.wiring import load
from bot.config import Config, HandoffConfig, OpsConfig, PolicyConfig
from bot.core.service import Outcome, Service
from bot.core.wording import FILE_IMAGE, FILE_TOO_LARGE, RESET_DONE
from bot.errors import ConfigError, PlatformError
from bot.events import ConversationKey, Event
from bot.generation.base import ChatMessage
from bot.storage.sqlite import SQLiteStore
from tests.conftest import make_config
from tests.fakes.discord import (
    ALICE,
    BOB,
    BOT_ID,
    CHANNEL_A,
    CHANNEL_B,
    DM_CHANNEL,
    GUILD_ID,
    OTHER_BOT,
    SUPPORT_ROLE,
    THREAD_ID,
    FakeDiscord,
)
from tests.harness import connected, inbox_emptied, left_by_a_crash, record_outcomes, waiting
from tests.pdfs import text_pdf
from tests.scripted import GatedBackend, ScriptedBackend, quoting


def pings_nobody(allowed: dict[str, Any]) -> bool:
    """Discord's allowed_mentions that let no mention in the content notify anyone."""
    return (
        allowed["parse"] == []
        and not allowed.get("users")
        and not allowed.get("roles")
        and not allowed.get("replied_user")
    )


MENTION = f"<@{BOT_ID}>"
DEPARTURE = quoting(r"Departure time: [^\n]+", "Your booking says", "I see no booking")


def config_for(fake: FakeDiscord, tmp_path: Path, **discord: Any) -> Config:
    base = make_config(Path("scripted"), tmp_path)
    section = DiscordConfig(
        enabled=True,
        api_base=fake.api_base,
        edit_interval=0.05,
        guild_ready_timeout=0.05,
        command_guilds=[GUILD_ID],
    )
    return dataclasses.replace(
        base,
        sections={"discord": dataclasses.replace(section, **discord)},
        ops=OpsConfig(enabled=False, shutdown_grace=2.0),
    )


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    server = await FakeDiscord().start()
    monkeypatch.setenv("DISCORD_TOKEN", server.token)
    yield server
    await server.close()


@asynccontextmanager
async def serving(
    fake: FakeDiscord,
    tmp_path: Path,
    backend: Any = None,
    service: Any = None,
    config: Config | None = None,
    **discord: Any,
) -> AsyncIterator[tuple[DiscordAdapter, Service, list[tuple[str, Outcome]]]]:
    """A started service and a connected adapter; yields them and the outcomes of handle()."""
    config = config or config_for(fake, tmp_path, **discord)
    own = service is None
    if own:
        store = SQLiteStore(str(tmp_path / "parley.db"))
        service = Service(config, backend or ScriptedBackend(), store)
        await service.start()
    outcomes = record_outcomes(service, fake._notify)
    adapter = create(config, service)
    try:
        async with connected(adapter):
            yield adapter, service, outcomes
    finally:
        del service.handle
        if own:
            await service.close()


def outcome_of(outcomes: list[tuple[str, Outcome]], message: dict[str, Any]) -> Callable[[], Any]:
    return lambda: [o for m, o in outcomes if m == message["id"]]


def final(fake: FakeDiscord, channel: str, text: str) -> Callable[[], Any]:
    return lambda: [m for m in fake.sent(channel) if m["content"] == text]


def assert_no_pings(fake: FakeDiscord) -> None:
    posts = fake.requests("POST", r"/channels/\d+/messages")
    edits = fake.requests("PATCH", r"/channels/\d+/messages/\d+")
    assert posts
    for call in posts + edits:
        assert pings_nobody(call.body["allowed_mentions"]), call


async def test_a_mention_is_answered_in_place_streamed_by_edits(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    answer = "Open Settings, choose Security, then Reset password. We e-mail you a link."
    backend = GatedBackend(answer)
    async with serving(fake, tmp_path, backend):
        asked = await fake.send_message(
            f"{MENTION} how do I reset my password?", mentions=(BOT_ID,)
        )
        first = (await fake.wait_for(lambda: fake.sent(CHANNEL_A)))[0]
        assert first["message_reference"]["message_id"] == asked["id"]
        assert answer.startswith(first["content"]) and first["content"] != answer
        backend.gate.set()
        await fake.wait_for(final(fake, CHANNEL_A, answer))

    assert len(fake.sent()) == 1 and fake.sent()[0]["edits"]
    assert_no_pings(fake)
    typing = fake.requests("POST", f"/channels/{CHANNEL_A}/typing")
    assert typing and fake.calls.index(typing[0]) < fake.calls.index(
        fake.requests("POST", f"/channels/{CHANNEL_A}/messages")[0]
    )
    # The bot's own mention is not part of the question.
    assert backend.prompts[0][-1].content == "how do I reset my password?"


async def test_an_attached_file_is_read_and_an_image_gets_a_line(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    booking = text_pdf("Booking KF-1", "Departure time: 07:45 on 12 December")
    async with serving(fake, tmp_path, ScriptedBackend(DEPARTURE)):
        await fake.send_message(
            f"{MENTION} when do I leave?",
            mentions=(BOT_ID,),
            files=[("booking.pdf", booking, "application/pdf")],
        )
        await fake.wait_for(
            final(fake, CHANNEL_A, "Your booking says Departure time: 07:45 on 12 December.")
        )
        # An image: one line, and the text answered; a file not addressed to the bot and one
        # over the size limit are never downloaded.
        await fake.send_message(
            f"{MENTION} and now?",
            mentions=(BOT_ID,),
            channel=CHANNEL_B,
            files=[("photo.jpg", b"\xff\xd8\xff\xe0" + bytes(60), "image/jpeg")],
        )
        notice = FILE_IMAGE.format(name="photo.jpg")
        await fake.wait_for(final(fake, CHANNEL_B, f"I see no booking\n\n{notice}"))
        await fake.send_message("look", files=[("chat.txt", b"hi", "text/plain")])
        await fake.send_message(
            f"{MENTION} huge", mentions=(BOT_ID,), files=[("big.log", b"x" * 2_000_001, "")]
        )
        too_large = FILE_TOO_LARGE.format(name="big.log", limit="2 MB")
        await fake.wait_for(lambda: [m for m in fake.sent() if too_large in m["content"]])
        # In a thread the bot is in, a follow-up needs no mention: its file is read too.
        await fake.send_message(f"{MENTION} hello", channel=THREAD_ID, mentions=(BOT_ID,))
        await fake.wait_for(final(fake, THREAD_ID, "I see no booking"))
        again = [("again.pdf", booking, "application/pdf")]
        await fake.send_message("and with this?", channel=THREAD_ID, files=again)
        await fake.wait_for(
            final(fake, THREAD_ID, "Your booking says Departure time: 07:45 on 12 December.")
        )
    downloaded = [path.rsplit("/", 1)[1] for path in fake.downloads]
    assert downloaded == ["booking.pdf", "photo.jpg", "again.pdf"]


async def test_a_direct_message_is_answered(fake: FakeDiscord, tmp_path: Path) -> None:
    async with serving(fake, tmp_path, ScriptedBackend("Happy to help!")):
        await fake.send_message("hello, can you help?", channel=DM_CHANNEL, guild=None)
        await fake.wait_for(final(fake, DM_CHANNEL, "Happy to help!"))
    assert len(fake.sent()) == 1


async def test_messages_not_for_the_bot_get_nothing(fake: FakeDiscord, tmp_path: Path) -> None:
    async with serving(fake, tmp_path, ScriptedBackend("Here you go.")) as (_, _, outcomes):
        ignored = [
            await fake.send_message("anyone know how billing works?"),
            await fake.send_message(f"{MENTION} ping from a bot", author=OTHER_BOT),
            await fake.send_message(f"<@{BOB}> can you check the invoice?", mentions=(BOB,)),
            await fake.send_message(f"{MENTION} joined", mentions=(BOT_ID,), kind=7),
        ]
        await fake.dispatch(
            "MESSAGE_UPDATE", {**ignored[0], "content": f"{MENTION} edited", "mentions": []}
        )
        last = await fake.send_message(f"{MENTION} what's the status page?", mentions=(BOT_ID,))
        await fake.wait_for(final(fake, CHANNEL_A, "Here you go."))
        # Human messages reach the core, which decides (policy triggers); the rest stop here.
        for message in (ignored[0], ignored[2], last):
            await fake.wait_for(outcome_of(outcomes, message))

    (reply,) = fake.sent()
    assert reply["message_reference"]["message_id"] == last["id"]
    assert outcome_of(outcomes, ignored[0])() == [Outcome.IGNORED]
    # Opening with Bob's mention, it is addressed to him.
    assert outcome_of(outcomes, ignored[2])() == [Outcome.IGNORED]
    assert len(outcomes) == 3


async def test_access_lists_give_silence(fake: FakeDiscord, tmp_path: Path) -> None:
    backend = ScriptedBackend("Answered.")
    async with serving(fake, tmp_path, backend, deny_users=[BOB], allow_channels=[CHANNEL_A]) as (
        _,
        service,
        outcomes,
    ):
        await fake.send_message(f"{MENTION} I am denied", author=BOB, mentions=(BOT_ID,))
        await fake.send_message(f"{MENTION} wrong channel", channel=CHANNEL_B, mentions=(BOT_ID,))
        # A thread belongs to its parent channel, which is allowed.
        asked = await fake.send_message(
            f"{MENTION} in the thread", channel=THREAD_ID, mentions=(BOT_ID,)
        )
        await fake.wait_for(final(fake, THREAD_ID, "Answered."))
        await fake.wait_for(outcome_of(outcomes, asked))
        history = await service.store.history(
            ConversationKey("discord", GUILD_ID, CHANNEL_A, THREAD_ID), limit=10
        )
    assert len(fake.sent()) == 1
    assert [turn.content for turn in history] == ["in the thread", "Answered."]
    assert [m for m, _ in outcomes] == [asked["id"]]


async def test_model_mentions_ping_no_one(fake: FakeDiscord, tmp_path: Path) -> None:
    hostile = f"Hey @everyone and @here, <@&{SUPPORT_ROLE}> and <@{BOB}>: look!"
    async with serving(fake, tmp_path, ScriptedBackend(hostile, chunk=5)) as (_, _, outcomes):
        asked = await fake.send_message(f"{MENTION} say hi to all", mentions=(BOT_ID,))
        await fake.wait_for(outcome_of(outcomes, asked))
    assert_no_pings(fake)
    (reply,) = fake.sent()
    assert "<@" not in reply["content"] and "@everyone" not in reply["content"]


def paragraph(n: int) -> str:
    return " ".join(f"Sentence {n}.{i} explains one more step of the setup." for i in range(6))


async def test_a_long_answer_continues_in_more_messages(fake: FakeDiscord, tmp_path: Path) -> None:
    code = "```python\n" + "\n".join(f"step_{i} = configure({i})" for i in range(60)) + "\n```"
    answer = "\n\n".join([*(paragraph(n) for n in range(12)), code, paragraph(99)])
    assert 4500 < len(answer) < 5600
    backend = ScriptedBackend(answer, chunk=400)
    async with serving(fake, tmp_path, backend) as (_, _, outcomes):
        asked = await fake.send_message(f"{MENTION} full setup guide please", mentions=(BOT_ID,))
        await fake.wait_for(outcome_of(outcomes, asked))

    messages = fake.sent(CHANNEL_A)
    assert len(messages) == 3
    assert all(len(m["content"]) <= 2000 for m in messages)
    assert all(m["content"].count("```") % 2 == 0 for m in messages)
    assert messages[0]["message_reference"]["message_id"] == asked["id"]
    assert "message_reference" not in messages[1]
    words = " ".join(m["content"] for m in messages).replace("```python", "").replace("```", "")
    assert words.split() == answer.replace("```python", "").replace("```", "").split()
    assert_no_pings(fake)


async def test_a_dropped_gateway_resumes_and_the_reply_completes_once(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    answer = "Your invoice is under Billing, then History."
    backend = GatedBackend(answer)
    async with serving(fake, tmp_path, backend) as (_, _, outcomes):
        asked = await fake.send_message(f"{MENTION} where is my invoice?", mentions=(BOT_ID,))
        await fake.wait_for(lambda: fake.sent(CHANNEL_A))
        # Discord may send again what it is not sure the client saw: here, the question.
        fake.redeliver_on_resume = 10
        await fake.drop()
        await fake.wait_for(lambda: fake.resumes)
        duplicate = await fake.wait_for(outcome_of(outcomes, asked))
        backend.gate.set()
        await fake.wait_for(final(fake, CHANNEL_A, answer))
        await fake.wait_for(lambda: len(outcome_of(outcomes, asked)()) == 2)

    assert duplicate == [Outcome.DUPLICATE]
    assert sorted(o.value for o in outcome_of(outcomes, asked)()) == ["answered", "duplicate"]
    assert len(fake.identifies) == 1 and len(fake.resumes) == 1
    assert len(fake.sent()) == 1


async def test_a_rate_limited_post_is_delivered_once_after_the_wait(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    fake.rate_limit("POST", f"/channels/{CHANNEL_A}/messages", times=1, retry_after=0.05)
    async with serving(fake, tmp_path, ScriptedBackend("Done.")) as (_, _, outcomes):
        asked = await fake.send_message(f"{MENTION} cancel my plan", mentions=(BOT_ID,))
        await fake.wait_for(outcome_of(outcomes, asked))
    posts = fake.requests("POST", f"/channels/{CHANNEL_A}/messages")
    assert [call.status for call in posts] == [429, 200]
    assert [m["content"] for m in fake.sent()] == ["Done."]


def echo_history(messages: Sequence[ChatMessage]) -> str:
    return "You said: " + " | ".join(m.content for m in messages if m.role == "user")


async def test_two_channels_at_once_each_with_its_own_context(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    backend = GatedBackend(echo_history, chunk=4)
    async with serving(fake, tmp_path, backend) as (_, _, outcomes):
        a = await fake.send_message(f"{MENTION} my order is 111", mentions=(BOT_ID,))
        b = await fake.send_message(
            f"{MENTION} my order is 222", channel=CHANNEL_B, mentions=(BOT_ID,)
        )
        # Both replies are under way before either is finished.
        await fake.wait_for(lambda: fake.sent(CHANNEL_A) and fake.sent(CHANNEL_B))
        backend.gate.set()
        await fake.wait_for(lambda: outcome_of(outcomes, a)() and outcome_of(outcomes, b)())
        a2 = await fake.send_message(f"{MENTION} which order?", mentions=(BOT_ID,))
        b2 = await fake.send_message(
            f"{MENTION} which order?", channel=CHANNEL_B, mentions=(BOT_ID,)
        )
        await fake.wait_for(lambda: outcome_of(outcomes, a2)() and outcome_of(outcomes, b2)())

    last_a, last_b = fake.sent(CHANNEL_A)[-1]["content"], fake.sent(CHANNEL_B)[-1]["content"]
    assert "111" in last_a and "222" not in last_a
    assert "222" in last_b and "111" not in last_b


async def test_reset_command_clears_only_its_channel(fake: FakeDiscord, tmp_path: Path) -> None:
    async with serving(fake, tmp_path, ScriptedBackend("Noted.")) as (_, service, outcomes):
        assert {c["name"] for c in fake.commands[GUILD_ID]} == {
            "ask",
            "reset",
            "help",
            "human",
            "resolved",
        }
        for channel in (CHANNEL_A, CHANNEL_B):
            asked = await fake.send_message(
                f"{MENTION} remember me", channel=channel, mentions=(BOT_ID,)
            )
            await fake.wait_for(outcome_of(outcomes, asked))
        command = await fake.interaction("reset", channel=CHANNEL_A)
        await fake.wait_for(outcome_of(outcomes, command))
        a = await service.store.history(ConversationKey("discord", GUILD_ID, CHANNEL_A), 10)
        b = await service.store.history(ConversationKey("discord", GUILD_ID, CHANNEL_B), 10)

    assert a == [] and [turn.content for turn in b] == ["remember me", "Noted."]
    callbacks = fake.requests("POST", rf"/interactions/{command['id']}/[^/]+/callback")
    assert [call.body["type"] for call in callbacks] == [4]
    assert callbacks[0].body["data"]["content"] == RESET_DONE
    assert pings_nobody(callbacks[0].body["data"]["allowed_mentions"])


async def test_ask_command_answers_in_the_deferred_response(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with serving(fake, tmp_path, ScriptedBackend("Our hours are 9 to 5.")) as (
        _,
        _,
        outcomes,
    ):
        command = await fake.interaction("ask", options={"question": "when are you open?"})
        await fake.wait_for(outcome_of(outcomes, command))
    callbacks = fake.requests("POST", rf"/interactions/{command['id']}/[^/]+/callback")
    assert [call.body["type"] for call in callbacks] == [5]
    edits = fake.requests("PATCH", r"/webhooks/\d+/[^/]+/messages/@original")
    assert edits[-1].body["content"] == "Our hours are 9 to 5."
    assert all(pings_nobody(call.body["allowed_mentions"]) for call in edits)


async def test_commands_the_policy_refuses_end_quietly(fake: FakeDiscord, tmp_path: Path) -> None:
    config = dataclasses.replace(config_for(fake, tmp_path), policy=PolicyConfig(deny_users=[BOB]))
    async with serving(fake, tmp_path, config=config) as (_, _, outcomes):
        helped = await fake.interaction("help", author=BOB)
        asked = await fake.interaction("ask", author=BOB, options={"question": "hello?"})
        await fake.wait_for(lambda: len(outcomes) == 2)
        await fake.wait_for(
            lambda: fake.requests("DELETE", r"/webhooks/\d+/[^/]+/messages/@original")
        )
    assert [o for _, o in outcomes] == [Outcome.DENIED, Outcome.DENIED]
    (notice,) = fake.requests("POST", rf"/interactions/{helped['id']}/[^/]+/callback")
    assert notice.body["data"]["flags"] & 64  # ephemeral: only Bob sees it
    (deferred,) = fake.requests("POST", rf"/interactions/{asked['id']}/[^/]+/callback")
    assert deferred.body["type"] == 5
    # The "thinking…" placeholder is removed; nothing else was posted.
    assert [m["content"] for m in fake.sent()] == [NOT_HERE]


async def test_handoff_mentions_only_the_support_role(fake: FakeDiscord, tmp_path: Path) -> None:
    config = dataclasses.replace(
        config_for(fake, tmp_path), handoff=HandoffConfig(staff_roles=[SUPPORT_ROLE])
    )
    async with serving(fake, tmp_path, config=config) as (_, _, outcomes):
        asked = await fake.send_message(f"{MENTION} I want to talk to a human", mentions=(BOT_ID,))
        await fake.wait_for(outcome_of(outcomes, asked))
    (post,) = fake.requests("POST", f"/channels/{CHANNEL_A}/messages")
    assert post.body["content"].endswith(f"<@&{SUPPORT_ROLE}>")
    allowed = post.body["allowed_mentions"]
    assert allowed["roles"] == [int(SUPPORT_ROLE)]
    assert pings_nobody({**allowed, "roles": []})


async def test_thumbs_on_an_answer_are_stored_as_ratings(fake: FakeDiscord, tmp_path: Path) -> None:
    async with serving(fake, tmp_path, ScriptedBackend("Try turning it off and on.")) as (
        _,
        service,
        outcomes,
    ):
        rated: list[tuple[ConversationKey, str, str, str, bool]] = []
        feedback = service.feedback

        async def recording(scope: ConversationKey, reply_id: str, user: str, rating: Any) -> bool:
            found = await feedback(scope, reply_id, user, rating)
            rated.append((scope, reply_id, user, rating, found))
            await fake._notify()
            return found

        service.feedback = recording  # type: ignore[method-assign]
        asked = await fake.send_message(f"{MENTION} my router is stuck", mentions=(BOT_ID,))
        await fake.wait_for(outcome_of(outcomes, asked))
        (answer,) = fake.sent()
        await fake.dispatch(
            "MESSAGE_REACTION_ADD",
            {
                "user_id": ALICE,
                "channel_id": CHANNEL_A,
                "message_id": answer["id"],
                "guild_id": GUILD_ID,
                "emoji": {"id": None, "name": "👎"},
                "type": 0,
                "burst": False,
            },
        )
        await fake.wait_for(lambda: rated)
    scope = ConversationKey("discord", GUILD_ID, CHANNEL_A)
    assert rated == [(scope, answer["id"], ALICE, "down", True)]


async def test_a_refused_message_content_intent_stops_with_one_line(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    fake.refuse_identify = 4014
    config = config_for(fake, tmp_path)
    async with Service(config, ScriptedBackend(), SQLiteStore(str(tmp_path / "r.db"))) as service:
        with pytest.raises(PlatformError) as refused:
            await asyncio.wait_for(create(config, service).run(), 15)
    message = str(refused.value)
    assert "\n" not in message and "Message Content Intent" in message
    assert "developer portal" in message


async def test_sharded_client_with_a_configured_gateway(fake: FakeDiscord, tmp_path: Path) -> None:
    async with serving(
        fake, tmp_path, ScriptedBackend("Sharded hello."), shards=1, gateway_url=fake.gateway_url
    ) as (adapter, _, outcomes):
        assert adapter.connected
        asked = await fake.send_message(f"{MENTION} hi", mentions=(BOT_ID,))
        await fake.wait_for(outcome_of(outcomes, asked))
    assert fake.identifies[0]["shard"] == [0, 1]
    assert [m["content"] for m in fake.sent()] == ["Sharded hello."]


async def test_a_replica_runs_only_its_share_of_the_shards(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    async with serving(
        fake,
        tmp_path,
        ScriptedBackend("From shard one."),
        shards=2,
        shard_ids=[1],
        gateway_url=fake.gateway_url,
    ) as (adapter, _, _):
        assert adapter.connected
    assert [identify["shard"] for identify in fake.identifies] == [[1, 2]]


async def test_the_tiny_model_answers_a_mention(
    fake: FakeDiscord, tmp_path: Path, service: Service
) -> None:
    async with serving(fake, tmp_path, service=service) as (_, _, outcomes):
        asked = await fake.send_message(f"{MENTION} hello there", mentions=(BOT_ID,))
        assert await fake.wait_for(outcome_of(outcomes, asked), within=120) == [Outcome.ANSWERED]
    (reply,) = fake.sent()
    assert reply["content"].strip() and len(reply["content"]) <= 2000
    assert reply["message_reference"]["message_id"] == asked["id"]
    assert_no_pings(fake)


def test_enabled_needs_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not enabled(Config())
    with pytest.raises(ConfigError, match="DISCORD_TOKEN"):
        enabled(Config(sections={"discord": DiscordConfig(enabled=True)}))
    monkeypatch.setenv("DISCORD_TOKEN", "x")
    assert enabled(Config())
    assert not enabled(Config(sections={"discord": DiscordConfig(enabled=False)}))


def test_a_catch_up_longer_than_a_day_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "parley.toml"
    path.write_text("[discord]\nenabled = false\ncatch_up_minutes = 2000\n", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        enabled(load(path))
    assert str(refused.value) == f"{path}: 'discord.catch_up_minutes' must be between 0 and 1440"
    path.write_text("[discord]\ncatch_up_minutes = 0\n", encoding="utf-8")
    assert not enabled(load(path))


def test_mentions_become_readable_names() -> None:
    text = readable(
        f"<@!{BOT_ID}> ask <@{BOB}> in <#{CHANNEL_B}> or <@&{SUPPORT_ROLE}> <:party:123> <@5>",
        int(BOT_ID),
        {int(BOB): "Bob"},
        {int(SUPPORT_ROLE): "Support"},
        lambda ident: "billing" if ident == int(CHANNEL_B) else None,
    )
    assert text == "ask @Bob in #billing or @Support :party: @user"


@given(st.lists(st.sampled_from(["word ", "end. ", "\n", "\n\n", "```py\n", "```\n", "x" * 70])))
# Found by this test: a cut through "```py" in the middle of a line, and a cut at a space that
# brought a line's closing backticks to the start of the next piece.
@example(["x" * 70, "```py\n", "```py\n", "x" * 70, "x" * 70])
@example(["word ", "```\n", "word ", "word ", "```\n", "```\n", *["x" * 70] * 4])
def test_split_pieces_fit_and_keep_fences_balanced(parts: list[str]) -> None:
    text = "".join(parts * 8)
    pieces = split_message(text, 300)
    assert all(len(piece) <= 300 for piece in pieces)
    if len(text) > 300:
        # Each piece renders on its own: none leaves a code fence open (as CommonMark reads it).
        assert all(open_fence(piece) is None for piece in pieces[:-1])
    squeeze = re.compile(r"```\w*|\s+")
    assert "".join(squeeze.sub("", piece) for piece in pieces) == squeeze.sub("", text)


async def test_an_answer_cut_by_a_stop_is_finished_in_its_message_after_the_restart(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    answer = "Your invoice is under Billing, then History."
    config = config_for(fake, tmp_path)
    db = str(tmp_path / "parley.db")
    backend = GatedBackend(answer)
    service = Service(config, backend, SQLiteStore(db))
    await service.start()
    async with serving(fake, tmp_path, service=service, config=config):
        await fake.send_message(f"{MENTION} where is my invoice?", mentions=(BOT_ID,))
        [posted] = await fake.wait_for(lambda: fake.sent(CHANNEL_A))
        await service.close(grace=0.1)  # stopped mid-answer, as a deploy or a kill would
    assert posted["content"] != answer
    assert await waiting(db) == 1

    # Started again: the question is answered in the message already posted, not a new one.
    async with serving(fake, tmp_path, ScriptedBackend(answer), config=config):
        await fake.wait_for(final(fake, CHANNEL_A, answer))
        await inbox_emptied(db)
    assert [m["id"] for m in fake.sent(CHANNEL_A)] == [posted["id"]]


def _question(message_id: str) -> Event:
    """ "where is my invoice?", as Alice asked it in channel A."""
    return Event(
        platform="discord",
        workspace=GUILD_ID,
        channel=CHANNEL_A,
        user=ALICE,
        text="where is my invoice?",
        message_id=message_id,
    )


async def test_a_question_taken_in_before_a_crash_is_answered_after_the_restart(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    answer = "Your invoice is under Billing, then History."
    db = str(tmp_path / "parley.db")
    question = _question("1234567890123")
    await left_by_a_crash(db, question)
    async with serving(fake, tmp_path, ScriptedBackend(answer)):
        [sent] = await fake.wait_for(final(fake, CHANNEL_A, answer))
        assert sent["message_reference"]["message_id"] == question.message_id
        await inbox_emptied(db)
    assert len(fake.sent()) == 1


async def test_an_answer_posted_but_not_recorded_before_a_crash_is_finished_not_repeated(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    answer = "Your invoice is under Billing, then History."
    db = str(tmp_path / "parley.db")
    # Killed between posting the answer's first words and writing down where: the inbox
    # knows the question (and its delivery is claimed), not the message.
    asked = fake.post_while_away(f"{MENTION} where is my invoice?", mentions=(BOT_ID,))
    reference = {"message_id": asked["id"], "channel_id": CHANNEL_A}
    cut = await fake._create(
        CHANNEL_A, {"content": "Your invoice is", "message_reference": reference}, echo=False
    )
    await left_by_a_crash(db, _question(asked["id"]), claimed=True)
    async with serving(fake, tmp_path, ScriptedBackend(answer)):
        await fake.wait_for(final(fake, CHANNEL_A, answer))
        await inbox_emptied(db)
    assert [m["id"] for m in fake.sent(CHANNEL_A)] == [cut["id"]]


async def test_questions_asked_while_the_bot_was_away_are_answered_once_it_is_back(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    answer = "Here is how."
    async with serving(fake, tmp_path, ScriptedBackend(answer)):
        before = await fake.send_message(f"{MENTION} how do I start?", mentions=(BOT_ID,))
        await fake.wait_for(final(fake, CHANNEL_A, answer))
    # Parley is down: a question in the channel, one in a thread, and talk not for the bot.
    missed = fake.post_while_away(f"{MENTION} where is my invoice?", mentions=(BOT_ID,))
    in_thread = fake.post_while_away(
        f"{MENTION} is the printer fixed?", channel=THREAD_ID, mentions=(BOT_ID,)
    )
    chatter = fake.post_while_away("lunch, anyone?")
    async with serving(fake, tmp_path, ScriptedBackend(answer)) as (_, _, outcomes):
        for message in (missed, in_thread, chatter, before):
            await fake.wait_for(outcome_of(outcomes, message))
    assert outcome_of(outcomes, missed)() == [Outcome.ANSWERED]
    assert outcome_of(outcomes, in_thread)() == [Outcome.ANSWERED]
    assert outcome_of(outcomes, chatter)() == [Outcome.IGNORED]
    assert outcome_of(outcomes, before)() == [Outcome.DUPLICATE]  # answered already, once

    def replies_to(message: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            m
            for m in fake.sent()
            if m.get("message_reference", {}).get("message_id") == message["id"]
        ]

    assert [len(replies_to(m)) for m in (before, missed, in_thread, chatter)] == [1, 1, 1, 0]
    assert len(fake.identifies) == 2
