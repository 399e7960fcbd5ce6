"""Per-channel settings: matching, decisions, validation, reload, triggers and quotas."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.memory import MemoryAdapter
from bot.app.wiring import load
from bot.config import (
    Config,
    LimitsConfig,
    PolicyConfig,
    PolicyOverride,
    StoreConfig,
)
from bot.core.policy import Policy, Verdict, looks_like_question
from bot.core.service import Outcome, Service
from bot.errors import ConfigError
from bot.events import Event
from bot.storage.sqlite import SQLiteStore
from tests.scripted import ScriptedBackend

GUILD, HELP, CATEGORY, GENERAL = (
    "100000000000000001",
    "200000000000000002",
    "300000000000000003",
    "400000000000000004",
)
ALICE, BOB, MOD_ROLE, ADMIN = (
    "500000000000000005",
    "600000000000000006",
    "700000000000000007",
    "800000000000000008",
)

POLICY = PolicyConfig(
    deny_users=[BOB],
    admins=[ADMIN],
    overrides=[
        PolicyOverride(name="help desk", platform="discord", channel=HELP, trigger="all"),
        PolicyOverride(
            name="staff category", platform="discord", channel=CATEGORY, allow_roles=[MOD_ROLE]
        ),
        PolicyOverride(name="no discord dms", platform="discord", dm=True, dms=False),
        PolicyOverride(name="dm only", platform="slack", workspace="T0DMONLY", channels=False),
        PolicyOverride(
            name="slack questions", platform="slack", workspace="T0ACME", trigger="question"
        ),
        PolicyOverride(
            name="slack quiet", platform="slack", channel="C0QUIET", deny_channels=["C0QUIET"]
        ),
        PolicyOverride(name="web persona", platform="web", persona="Penny", max_new_tokens=64),
    ],
)


def _event(platform: str = "discord", **fields: object) -> Event:
    values: dict[str, object] = {
        "workspace": GUILD if platform == "discord" else "T0ACME",
        "channel": GENERAL if platform == "discord" else "C0GENERAL",
        "user": ALICE if platform == "discord" else "U0ALICE",
        "text": "hello there",
        "addressed": False,
    }
    values.update(fields)
    return Event(platform=platform, **values)  # type: ignore[arg-type]


CASES = [
    # (event fields, bot already in the thread, rule, verdict)
    (dict(addressed=True), False, "default", Verdict.ANSWER),
    (dict(), False, "default", Verdict.NOT_TRIGGERED),
    (dict(channel=HELP), False, "help desk", Verdict.ANSWER),
    (dict(channel=HELP, mentions_others=True), False, "help desk", Verdict.NOT_TRIGGERED),
    (
        dict(channel="900000000000000009", parents=(HELP,), thread="900000000000000009"),
        False,
        "help desk",
        Verdict.ANSWER,
    ),
    (dict(channel=GENERAL, thread="910000000000000000"), True, "default", Verdict.ANSWER),
    (dict(channel=GENERAL, thread="910000000000000000"), False, "default", Verdict.NOT_TRIGGERED),
    (
        dict(channel=GENERAL, thread="910000000000000000", mentions_others=True),
        True,
        "default",
        Verdict.NOT_TRIGGERED,
    ),
    (dict(user=BOB, addressed=True), False, "default", Verdict.DENIED_USER),
    (dict(user=BOB, channel=HELP), False, "help desk", Verdict.DENIED_USER),
    (dict(parents=(CATEGORY,), addressed=True), False, "staff category", Verdict.DENIED_ROLE),
    (
        dict(parents=(CATEGORY,), addressed=True, roles=(MOD_ROLE,)),
        False,
        "staff category",
        Verdict.ANSWER,
    ),
    (
        dict(parents=(CATEGORY,), addressed=True, user=ADMIN),
        False,
        "staff category",
        Verdict.ANSWER,
    ),
    (
        dict(is_dm=True, addressed=True, channel="920000000000000000"),
        False,
        "no discord dms",
        Verdict.DENIED_DM,
    ),
    (dict(is_dm=True, addressed=True, user=ADMIN), False, "no discord dms", Verdict.ANSWER),
    (dict(user=ADMIN), False, "default", Verdict.NOT_TRIGGERED),
    (
        dict(platform="slack", workspace="T0DMONLY", addressed=True),
        False,
        "dm only",
        Verdict.DENIED_OUTSIDE_DM,
    ),
    (
        dict(platform="slack", workspace="T0DMONLY", addressed=True, is_dm=True),
        False,
        "dm only",
        Verdict.ANSWER,
    ),
    (
        dict(platform="slack", text="how do I export invoices"),
        False,
        "slack questions",
        Verdict.ANSWER,
    ),
    (
        dict(platform="slack", text="our invoices are wrong?"),
        False,
        "slack questions",
        Verdict.ANSWER,
    ),
    (dict(platform="slack", text="thanks all"), False, "slack questions", Verdict.NOT_TRIGGERED),
    (
        dict(platform="slack", workspace="T0OTHER", text="how?"),
        False,
        "default",
        Verdict.NOT_TRIGGERED,
    ),
    (
        dict(platform="slack", workspace="T0OTHER", channel="C0QUIET", addressed=True),
        False,
        "slack quiet",
        Verdict.DENIED_CHANNEL,
    ),
    (
        dict(platform="slack", is_dm=True, addressed=True, channel="D0ALICE"),
        False,
        "slack questions",
        Verdict.ANSWER,
    ),
    (
        dict(platform="web", workspace="", channel="browser-1", user="visitor", addressed=True),
        False,
        "web persona",
        Verdict.ANSWER,
    ),
    (
        dict(platform="console", workspace="", channel="terminal", user="me", addressed=True),
        False,
        "default",
        Verdict.ANSWER,
    ),
]


@pytest.mark.parametrize(("fields", "in_thread", "rule", "verdict"), CASES)
def test_matcher(fields: dict[str, object], in_thread: bool, rule: str, verdict: Verdict) -> None:
    fields = dict(fields)
    platform = str(fields.pop("platform", "discord"))
    decision = Policy(POLICY).decide(_event(platform, **fields), bot_in_thread=in_thread)
    assert (decision.rule, decision.verdict) == (rule, verdict), decision.reason


def test_an_override_fills_in_from_the_defaults() -> None:
    _, settings = Policy(POLICY).match(_event("web", workspace="", channel="b", user="v"))
    assert settings.persona == "Penny" and settings.max_new_tokens == 64
    assert settings.deny_users == [BOB] and settings.trigger == "mention"


def test_question_detection() -> None:
    assert looks_like_question("Can I pay by invoice")
    assert looks_like_question("my card was charged twice?")
    assert not looks_like_question("Thanks, that worked")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[policy]\ntriger = "all"\n', "unknown key 'policy.triger'"),
        (
            '[policy]\ntrigger = "always"\n',
            "'policy.trigger' must be 'mention' or 'all' or 'question'",
        ),
        (
            '[[policy.overrides]]\nplatform = "discord"\nchannel = "general"\n',
            "policy.overrides[0]: channel 'general' is not a discord channel id",
        ),
        (
            '[[policy.overrides]]\nplatform = "slack"\nallow_users = ["123456789012345678"]\n',
            "policy.overrides[0]: allow_users has '123456789012345678', not a slack user id",
        ),
        (
            '[[policy.overrides]]\nname = "x"\nchannel = "C0AB"\n'
            'allow_channels = ["C0AB"]\ndeny_channels = ["C0AB"]\n',
            "policy.overrides[0] (x): channel 'C0AB' is both allowed and denied",
        ),
        (
            '[policy]\nallow_users = ["alice"]\n',
            "policy: allow_users has 'alice', not a discord or slack user id",
        ),
        ('[[policy.overrides]]\nplatform = "teams"\n', "unknown platform 'teams'"),
        ('[[policy.overrides]]\ncolour = "red"\n', "unknown key 'policy.overrides[0].colour'"),
        ("[policy]\noverrides = 3\n", "'policy.overrides' must be a list of tables"),
    ],
)
def test_validation_names_the_entry(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value).startswith(str(path))
    assert expected in str(caught.value)


async def _service(
    tmp_path: Path, policy: PolicyConfig, config_file: Path | None = None
) -> Service:
    config = Config(
        store=StoreConfig(path=str(tmp_path / "parley.db")),
        limits=LimitsConfig(
            user_per_minute=0, channel_per_minute=0, bot_messages_per_channel_minute=0
        ),
        policy=policy,
        source=str(config_file) if config_file else "(defaults)",
    )
    service = Service(config, ScriptedBackend("answer"), SQLiteStore(config.store.path))
    await service.start()
    return service


async def test_trigger_modes_through_the_service(tmp_path: Path) -> None:
    policy = PolicyConfig(
        overrides=[
            PolicyOverride(channel="help", platform="web", trigger="all"),
            PolicyOverride(channel="ask", platform="web", trigger="question"),
        ]
    )
    service = await _service(tmp_path, policy)
    chat = MemoryAdapter(service, platform="web")
    cases = {
        ("help", "my order is late", False, False): Outcome.ANSWERED,
        ("help", "@carol can you look at this", False, True): Outcome.IGNORED,
        ("ask", "is the API down?", False, False): Outcome.ANSWERED,
        ("ask", "good morning", False, False): Outcome.IGNORED,
        ("lobby", "my order is late", False, False): Outcome.IGNORED,
        ("lobby", "hey bot, my order is late", True, False): Outcome.ANSWERED,
    }
    replies = {
        case: chat.send(case[1], channel=case[0], addressed=case[2], mentions_others=case[3])
        for case in cases
    }
    await chat.drain()
    assert {case: reply.outcome for case, reply in replies.items()} == cases
    # Continuing a thread the bot answered in needs no new mention.
    await chat.send("first", channel="lobby", thread="t1", addressed=True).wait()
    follow = chat.send("and another thing", channel="lobby", thread="t1", addressed=False)
    await chat.drain()
    assert follow.outcome is Outcome.ANSWERED
    await service.close()


async def test_denied_users_get_silence_counted_by_reason(tmp_path: Path) -> None:
    service = await _service(tmp_path, PolicyConfig(deny_users=["U0MALLORY"]))
    chat = MemoryAdapter(service)
    reply = chat.send("hello", user="U0MALLORY")
    await chat.drain()
    assert reply.outcome is Outcome.DENIED and reply.text is None and not reply.started
    assert 'parley_denied_total{reason="denied_user"} 1.0' in service.metrics.render().decode()
    await service.close()


async def test_per_channel_persona_and_reply_length(tmp_path: Path) -> None:
    policy = PolicyConfig(
        overrides=[PolicyOverride(channel="vip", persona="Penny", max_new_tokens=32)]
    )
    service = await _service(tmp_path, policy)
    backend = service.backend
    assert isinstance(backend, ScriptedBackend)
    chat = MemoryAdapter(service)
    await chat.send("hi", channel="vip").wait()
    await chat.send("hi", channel="other").wait()
    assert backend.prompts[0][0].content.startswith("You are Penny")
    assert backend.prompts[1][0].content.startswith("You are Parley")
    await service.close()


async def test_quota_notice_once_and_reset_at_midnight(tmp_path: Path) -> None:
    service = await _service(tmp_path, PolicyConfig(quota=2, admins=["boss"]))
    chat = MemoryAdapter(service)
    assert [await chat.send(f"q{i}").wait() for i in range(2)] == ["answer", "answer"]
    over = chat.send("q3")
    silent = chat.send("q4")
    boss = chat.send("q5", user="boss")
    await chat.drain()
    assert over.outcome is Outcome.QUOTA and "limit of 2 questions" in (over.text or "")
    assert silent.outcome is Outcome.QUOTA and silent.text is None
    assert boss.outcome is Outcome.ANSWERED
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    service.clock = lambda: tomorrow
    assert await chat.send("a new day").wait() == "answer"
    await service.close()


async def test_reload_keeps_the_old_policy_when_the_file_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "parley.toml"
    path.write_text('[policy]\ntrigger = "all"\n')
    service = await _service(tmp_path, load(path).policy, config_file=path)
    assert service.policy.config.trigger == "all"
    path.write_text('[policy]\ntrigger = "question"\n')
    assert service.reload_policy() is None
    assert service.policy.config.trigger == "question"
    path.write_text('[policy]\ntrigger = "sometimes"\n')
    error = service.reload_policy()
    assert error is not None and "policy.trigger" in error
    assert service.policy.config.trigger == "question"
    await service.close()


def test_policy_explain_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "parley.toml"
    path.write_text(
        f'[[policy.overrides]]\nname = "help desk"\nplatform = "discord"\nchannel = "{HELP}"\n'
        'trigger = "all"\n'
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "--config",
            str(path),
            "policy",
            "explain",
            "--platform",
            "discord",
            "--channel",
            "999999999999999999",
            "--parent",
            HELP,
            "--user",
            ALICE,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "rule:     help desk" in result.stdout
    assert "decision: answer — trigger = 'all'" in result.stdout


def test_policy_dataclass_defaults_match_the_documented_ones() -> None:
    assert dataclasses.asdict(PolicyConfig())["overrides"] == []
