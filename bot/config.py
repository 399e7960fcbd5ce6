"""Configuration: frozen dataclasses loaded from TOML and validated once at start-up.

The defaults written here are the single source of truth; ``config/default.toml`` documents
every key with the same default (a test keeps the two in step). A user file overrides them.
Secrets never live in files: a section names the environment variable that holds each one.
The platforms' tables (``[discord]``, ``[slack]``, ``[web]``) and the shapes of their ids are
their adapters' (``adapters/settings.py``), handed to ``load_config`` by the app layer.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from bot.errors import ConfigError
from bot.typed_tables import build

__all__ = [
    "AdminConfig",
    "AttachmentsConfig",
    "BotConfig",
    "Config",
    "HandoffConfig",
    "KnowledgeConfig",
    "LimitsConfig",
    "LogConfig",
    "ModelConfig",
    "OpsConfig",
    "Platform",
    "PolicyConfig",
    "PolicyOverride",
    "PolicySettings",
    "RemoteConfig",
    "ReviewConfig",
    "StoreConfig",
    "load_config",
]


@dataclass(frozen=True)
class BotConfig:
    name: str = "Parley"
    company: str = "Acme Cloud"
    system_prompt: str = (
        "You are {name}, the friendly customer-support assistant of {company}. "
        "Answer the customer's question briefly and politely, in plain language. "
        "If you are not sure of the answer, say so and offer to connect them with a human."
    )
    max_message_chars: int = 4000
    idle_expiry_minutes: int = 1440
    max_pending: int = 256
    history_turns: int = 40


@dataclass(frozen=True)
class ModelConfig:
    name: str = "bundled"
    allow_download: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    cache_dir: str = ""
    context_window: int = 2048
    max_new_tokens: int = 256
    temperature: float = 0.3
    top_p: float = 0.9
    repetition_penalty: float = 1.15
    queue_size: int = 64
    max_batch_size: int = 32
    threads: int = 0
    max_tokens_in_flight: int = 16384
    prefill_chunk_tokens: int = 256
    quantize: Literal["none", "int8"] = "none"
    native_kernels: bool = True
    backend: Literal["local", "remote"] = "local"


@dataclass(frozen=True)
class StoreConfig:
    path: str = "data/parley.db"
    url: str = ""
    password_env: str = "PARLEY_REDIS_PASSWORD"
    lock_ttl: float = 30.0
    prefix: str = "parley:"


@dataclass(frozen=True)
class RemoteConfig:
    base_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:8000"])
    model: str = ""
    api_key_env: str = "PARLEY_REMOTE_API_KEY"
    tokenizer: str = ""
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    retries: int = 3
    backoff: float = 0.5
    cooldown: float = 30.0
    max_in_flight: int = 256


@dataclass(frozen=True)
class DecisionConfig:
    """The don't-know's weights (bot/knowledge/scope.py), as ``parley eval --tune`` prints
    them; the defaults are fitted on the sample knowledge base's golden set."""

    similarity: float = 3.12
    margin: float = 9.04
    coverage: float = 1.17
    bias: float = 0.72


@dataclass(frozen=True)
class KnowledgeConfig:
    enabled: bool = True
    paths: list[str] = field(default_factory=lambda: ["config/knowledge"])
    auto_ingest: bool = True
    top_k: int = 4
    answer_mode: Literal["extractive", "grounded", "free"] = "extractive"
    answer_sentences: int = 3
    min_score: float = 0.26
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    off_topic: list[str] = field(default_factory=list)
    max_sources: int = 2
    embedding_model: str = "bundled"
    dont_know_message: str = (
        "I'm sorry, I don't know the answer to that one, and I'd rather not guess."
    )
    help_topics: list[str] = field(default_factory=list)
    #: Help centers read from the web: a sitemap.xml, or a start page crawled within its host.
    urls: list[str] = field(default_factory=list)
    #: How often the service brings them in step ("30m", "6h", "1d"); "" only by hand.
    sync_every: str = ""
    #: At most this many pages a site.
    pages: int = 200

    @property
    def sync_seconds(self) -> float | None:
        """``sync_every`` in seconds; None when it is off (or unreadable: load_config says)."""
        found = _EVERY.fullmatch(self.sync_every.strip())
        if found is None:
            return None
        return float(found.group(1)) * {"m": 60, "h": 3600, "d": 86400}[found.group(2)]


_EVERY = re.compile(r"(\d+(?:\.\d+)?)\s*([mhd])")


@dataclass(frozen=True)
class LimitsConfig:
    user_per_minute: float = 6.0
    user_burst: int = 5
    channel_per_minute: float = 30.0
    channel_burst: int = 20
    bot_messages_per_channel_minute: int = 20
    bot_turns_in_a_row: int = 3
    allow_bots: list[str] = field(default_factory=list)
    recover_per_minute: float = 30.0
    recover_within_minutes: float = 60.0


@dataclass(frozen=True)
class HandoffConfig:
    phrases: list[str] = field(
        default_factory=lambda: [
            "talk to a human",
            "talk to a person",
            "talk to someone",
            "speak to a human",
            "speak to a person",
            "speak to someone",
            "real person",
            "human agent",
            "live agent",
            "representative",
        ]
    )
    staff_users: list[str] = field(default_factory=list)
    staff_roles: list[str] = field(default_factory=list)
    quiet_minutes: int = 120
    dont_knows_in_a_row: int = 2
    #: When people answer: "09:00-17:00" on ``days`` in ``timezone`` ("": at any time).
    hours: str = ""
    days: list[str] = field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"])
    timezone: str = "UTC"


@dataclass(frozen=True)
class ReviewConfig:
    """Answers staff approve first (policy ``autonomy = "draft"``)."""

    #: Shown to the customer while staff look at the answer ("": nothing).
    note: str = "A member of our team will check my answer before it is sent."
    #: A draft nobody decided on within this long is handed to a person.
    expire_minutes: float = 60.0


Trigger = Literal["mention", "all", "question"]
#: How far the bot acts on its own: "auto" answers; "draft" sends the answer to staff to
#: approve, edit or reject; "shadow" writes it for the team to read (``parley report``) and
#: posts nothing.
Autonomy = Literal["auto", "draft", "shadow"]


@dataclass(frozen=True)
class PolicySettings:
    """What an override may set; None (a key left out) takes the default's value."""

    trigger: Trigger | None = None
    continue_threads: bool | None = None
    allow_users: list[str] | None = None
    deny_users: list[str] | None = None
    allow_roles: list[str] | None = None
    allow_channels: list[str] | None = None
    deny_channels: list[str] | None = None
    dms: bool | None = None
    channels: bool | None = None
    admins: list[str] | None = None
    persona: str | None = None
    system_prompt: str | None = None
    knowledge: list[str] | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    quota: int | None = None
    autonomy: Autonomy | None = None


@dataclass(frozen=True)
class PolicyOverride(PolicySettings):
    """Where an override applies ("" or "any": everywhere) and what it sets."""

    name: str = ""
    platform: str = ""
    workspace: str = ""
    channel: str = ""
    dm: bool | Literal["any"] = "any"


@dataclass(frozen=True)
class PolicyConfig:
    trigger: Trigger = "mention"
    continue_threads: bool = True
    allow_users: list[str] = field(default_factory=list)
    deny_users: list[str] = field(default_factory=list)
    allow_roles: list[str] = field(default_factory=list)
    allow_channels: list[str] = field(default_factory=list)
    deny_channels: list[str] = field(default_factory=list)
    dms: bool = True
    channels: bool = True
    admins: list[str] = field(default_factory=list)
    persona: str = ""
    system_prompt: str = ""
    knowledge: list[str] = field(default_factory=list)
    max_new_tokens: int = 0
    temperature: float = -1.0
    quota: int = 0
    autonomy: Autonomy = "auto"
    overrides: list[PolicyOverride] = field(default_factory=list)


@dataclass(frozen=True)
class OpsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464
    shutdown_grace: float = 10.0


@dataclass(frozen=True)
class AdminConfig:
    """The support team's console (``bot/app/console``): on only while the environment holds
    its token, on this address only."""

    host: str = "127.0.0.1"
    port: int = 9465
    token_env: str = "PARLEY_ADMIN_TOKEN"
    #: Hours a login lasts.
    session_hours: float = 12.0
    #: Where the Quality page looks for ``parley eval`` runs (each ``eval.json`` below it).
    eval_dir: str = "data/eval"


@dataclass(frozen=True)
class AttachmentsConfig:
    """Files attached to a question: read as part of it (text, CSV, JSON, logs, PDF)."""

    enabled: bool = True
    #: A larger file is not downloaded; the customer is told so in one line.
    max_bytes: int = 2_000_000
    #: Tokens of a file's text kept with its turn (the rest is left out, and the reply says so).
    max_tokens: int = 1000
    #: Files read from one message; further ones get a one-line notice.
    max_files: int = 3


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class Platform:
    """A platform an adapter brings: the dataclass of its ``[name]`` table (None: it has no
    settings) and the shape of each kind of id the policy may name (None: any non-empty id)."""

    ID_KINDS: ClassVar[tuple[str, ...]] = ("user", "channel", "workspace", "role")

    name: str
    section: type | None = None
    ids: Mapping[str, re.Pattern[str]] | None = None


S = typing.TypeVar("S")


@dataclass(frozen=True)
class Config:
    bot: BotConfig = field(default_factory=BotConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    remote: RemoteConfig = field(default_factory=RemoteConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    log: LogConfig = field(default_factory=LogConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    handoff: HandoffConfig = field(default_factory=HandoffConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ops: OpsConfig = field(default_factory=OpsConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    attachments: AttachmentsConfig = field(default_factory=AttachmentsConfig)
    #: Each platform's table, built from its ``Platform.section``, by platform name.
    sections: Mapping[str, Any] = field(default_factory=dict)
    #: The platforms this config was checked against, to read it again the same way.
    platforms: tuple[Platform, ...] = field(default=(), compare=False, repr=False)
    source: str = field(default="(defaults)", compare=False)

    @property
    def source_path(self) -> str | None:
        """The user file this came from; None for the built-in defaults."""
        return None if self.source == "(defaults)" else self.source

    def section(self, cls: type[S]) -> S:
        """The table of the platform whose section is ``cls`` (its defaults when absent)."""
        found = self.sections.get(typing.cast(Any, cls).NAME)
        return found if isinstance(found, cls) else cls()

    def secret(self, env_name: str) -> str | None:
        """The value of a secret's environment variable, or None when unset or empty."""
        return os.environ.get(env_name) or None


def load_config(
    path: str | os.PathLike[str] | None = None, platforms: Iterable[Platform] = ()
) -> Config:
    """Load the defaults, overridden by ``path`` (or ``$PARLEY_CONFIG``), and validate them,
    with a table for each of ``platforms`` that has settings.

    Raises ConfigError with one line naming the file and the key.
    """
    platforms = tuple(platforms)
    defaults = {p.name: p.section() for p in platforms if p.section is not None}
    if path is None:
        path = os.environ.get("PARLEY_CONFIG") or None
    if path is None:
        return Config(sections=defaults, platforms=platforms)
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read: {exc}") from None
    tables = {p.name: p.section for p in platforms if p.section is not None}
    sections = dict(defaults)
    for name in [key for key in data if key in tables]:
        value = data.pop(name)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{name}' must be a table ([{name}])")
        sections[name] = build(tables[name], value, source, f"{name}.")
    # The platforms' tables are built above, from their own classes.
    config = build(Config, data, source, unset={"source", "sections", "platforms"})
    validate_policy(config.policy, source, platforms)
    check_hours(config.handoff, source)
    if config.model.repetition_penalty <= 0:
        raise ConfigError(f"{source}: 'model.repetition_penalty' must be above 0 (1 turns it off)")
    files = config.attachments
    for name in ("max_bytes", "max_tokens", "max_files"):
        if getattr(files, name) < 1:
            raise ConfigError(f"{source}: 'attachments.{name}' must be at least 1")
    if config.knowledge.answer_sentences < 1:
        raise ConfigError(f"{source}: 'knowledge.answer_sentences' must be at least 1")
    every = config.knowledge.sync_every
    if every.strip() and config.knowledge.sync_seconds is None:
        raise ConfigError(
            f"{source}: 'knowledge.sync_every' is {every!r}; write it as 30m, 6h or 1d"
        )
    bad = [u for u in config.knowledge.urls if not u.startswith(("http://", "https://"))]
    if bad:
        raise ConfigError(f"{source}: 'knowledge.urls' has {bad[0]!r}; give http(s) addresses")
    return dataclasses.replace(config, sections=sections, platforms=platforms, source=source)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)")


def check_hours(config: HandoffConfig, source: str) -> None:
    """Refuse support hours, days or a time zone that cannot be read, in one line."""
    if config.hours and not (
        (found := _HOURS.fullmatch(config.hours)) and found.group(1, 2) < found.group(3, 4)
    ):
        raise ConfigError(
            f"{source}: 'handoff.hours' must look like \"09:00-17:00\" (start before end),"
            f" not {config.hours!r}"
        )
    unknown = [day for day in config.days if day not in WEEKDAYS]
    if unknown:
        raise ConfigError(f"{source}: 'handoff.days' has {unknown[0]!r}; use {', '.join(WEEKDAYS)}")
    try:
        zoneinfo.ZoneInfo(config.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{source}: 'handoff.timezone' {config.timezone!r} is not a time zone"
            ' (for example "Europe/Berlin" or "America/New_York")'
        ) from None


_ID_KINDS = {
    "allow_users": "user",
    "deny_users": "user",
    "admins": "user",
    "allow_roles": "role",
    "allow_channels": "channel",
    "deny_channels": "channel",
}


def validate_policy(config: PolicyConfig, source: str, platforms: Iterable[Platform] = ()) -> None:
    """Refuse ids of the wrong shape for their platform (or, where the entry names none, for
    every platform), and channels both allowed and denied, naming the entry."""
    known = {p.name: p for p in platforms}
    entries: list[tuple[str, str, PolicySettings | PolicyConfig]] = [("policy", "", config)]
    for index, override in enumerate(config.overrides):
        label = f"policy.overrides[{index}]" + (f" ({override.name})" if override.name else "")
        if override.platform and override.platform not in known:
            raise ConfigError(f"{source}: {label}: unknown platform {override.platform!r}")
        entries.append((label, override.platform, override))
        for key, kind in (("channel", "channel"), ("workspace", "workspace")):
            value = getattr(override, key)
            if value and not _id_ok(known, override.platform, kind, value):
                raise ConfigError(
                    f"{source}: {label}: {key} {value!r} is not a {override.platform} {kind} id"
                )
    for label, platform, entry in entries:
        for key, kind in _ID_KINDS.items():
            for value in getattr(entry, key) or []:
                if not _id_ok(known, platform, kind, value):
                    shaped = [name for name, p in known.items() if p.ids is not None]
                    shape = f"{platform} {kind}" if platform else f"{' or '.join(shaped)} {kind}"
                    raise ConfigError(f"{source}: {label}: {key} has {value!r}, not a {shape} id")
        both = set(entry.allow_channels or []) & set(entry.deny_channels or [])
        if both:
            raise ConfigError(
                f"{source}: {label}: channel {sorted(both)[0]!r} is both allowed and denied"
            )


def _id_ok(known: Mapping[str, Platform], platform: str, kind: str, value: str) -> bool:
    """Whether ``value`` is a ``kind`` id of ``platform`` ("": of any platform with shapes)."""
    chosen = [known[platform]] if platform else [p for p in known.values() if p.ids is not None]
    if not value:
        return False
    return not chosen or any(p.ids is None or p.ids[kind].fullmatch(value) for p in chosen)
