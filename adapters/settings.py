"""The platforms' own settings: each adapter's config table and the shape of its ids.

The core knows no platform; ``bot.config.load_config`` builds and checks these tables (and the
ids in ``[policy]``) from the ``PLATFORMS`` the app layer hands it. Kept apart from the adapters
themselves so that reading a config never imports discord.py or slack-bolt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from bot.config import Platform

__all__ = ["PLATFORMS", "DiscordConfig", "SlackConfig", "WebConfig"]

Switch = bool | Literal["auto"]


@dataclass(frozen=True)
class WebConfig:
    NAME: ClassVar[str] = "web"

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    messages_per_minute: float = 10.0
    burst: int = 5
    max_connections: int = 1000
    embed_origins: list[str] = field(default_factory=lambda: ["*"])
    handoff_message: str = (
        "I've passed our conversation to the {company} support team, who can read it in full"
        " and will get back to you. I'll stay quiet here until then."
    )


@dataclass(frozen=True)
class DiscordConfig:
    NAME: ClassVar[str] = "discord"

    enabled: Switch = "auto"
    token_env: str = "DISCORD_TOKEN"
    api_base: str = "https://discord.com/api/v10"
    gateway_url: str = ""
    edit_interval: float = 1.0
    shards: int = 0
    shard_ids: list[int] = field(default_factory=list)
    command_guilds: list[str] = field(default_factory=list)
    allow_guilds: list[str] = field(default_factory=list)
    allow_channels: list[str] = field(default_factory=list)
    allow_roles: list[str] = field(default_factory=list)
    deny_users: list[str] = field(default_factory=list)
    allow_bots: list[str] = field(default_factory=list)
    guild_ready_timeout: float = 2.0
    catch_up_minutes: float = 60.0
    catch_up_messages: int = 50
    review_channel: str = ""


@dataclass(frozen=True)
class SlackConfig:
    NAME: ClassVar[str] = "slack"

    enabled: Switch = "auto"
    mode: Literal["socket", "http"] = "socket"
    bot_token_env: str = "SLACK_BOT_TOKEN"
    app_token_env: str = "SLACK_APP_TOKEN"
    signing_secret_env: str = "SLACK_SIGNING_SECRET"
    api_base: str = "https://slack.com/api/"
    http_host: str = "127.0.0.1"
    http_port: int = 3000
    edit_interval: float = 1.0
    continue_threads: bool = True
    review_channel: str = ""


# Discord ids are snowflakes whatever they name.
_SNOWFLAKE = re.compile(r"\d{15,21}")

PLATFORMS = (
    Platform("web", WebConfig),
    Platform("discord", DiscordConfig, ids=dict.fromkeys(Platform.ID_KINDS, _SNOWFLAKE)),
    Platform(
        "slack",
        SlackConfig,
        # Users (U/W), channels (C/G/D), teams (T, E for an Enterprise Grid), user groups (S).
        ids={
            "user": re.compile(r"[UW][A-Z0-9]{2,}"),
            "channel": re.compile(r"[CGD][A-Z0-9]{2,}"),
            "workspace": re.compile(r"[TE][A-Z0-9]{2,}"),
            "role": re.compile(r"S[A-Z0-9]{2,}"),
        },
    ),
    Platform("console"),
)
