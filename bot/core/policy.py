"""Per-channel settings: who may ask, where, when the bot answers, and with which persona.

The adapters only convert; this module decides, once, for every platform. The defaults in
``[policy]`` apply everywhere; the first ``[[policy.overrides]]`` entry that matches an event
replaces what it sets.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import Enum

from bot.config import PolicyConfig, PolicyOverride, PolicySettings, Trigger
from bot.events import Event

__all__ = ["Decision", "Policy", "Verdict", "looks_like_question"]

_QUESTION_WORDS = re.compile(
    r"^(how|what|why|when|where|who|which|can|could|is|are|do|does|did|will|would|should|"
    r"may|any(one|body)|help)\b",
    re.IGNORECASE,
)


def looks_like_question(text: str) -> bool:
    text = text.strip()
    return text.endswith("?") or bool(_QUESTION_WORDS.match(text))


class Verdict(Enum):
    ANSWER = "answer"
    NOT_TRIGGERED = "not_triggered"
    DENIED_USER = "denied_user"
    DENIED_ROLE = "denied_role"
    DENIED_CHANNEL = "denied_channel"
    DENIED_DM = "denied_dm"
    DENIED_OUTSIDE_DM = "denied_outside_dm"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    rule: str  # which entry matched: "default" or the override's name / index
    settings: PolicyConfig  # the effective settings for this event
    reason: str
    admin: bool = False

    @property
    def answer(self) -> bool:
        return self.verdict is Verdict.ANSWER


class Policy:
    def __init__(self, config: PolicyConfig) -> None:
        self.config = config

    def match(self, event: Event) -> tuple[str, PolicyConfig]:
        for index, override in enumerate(self.config.overrides):
            if _applies(override, event):
                changed = {
                    f.name: getattr(override, f.name)
                    for f in dataclasses.fields(PolicySettings)
                    if getattr(override, f.name) is not None
                }
                rule = override.name or f"overrides[{index}]"
                return rule, dataclasses.replace(self.config, overrides=[], **changed)
        return "default", self.config

    def decide(self, event: Event, bot_in_thread: bool = False) -> Decision:
        """Whether to answer ``event``; ``bot_in_thread``: the bot answered in its thread."""
        rule, settings = self.match(event)
        admin = event.user in settings.admins

        def decision(verdict: Verdict, reason: str) -> Decision:
            return Decision(verdict, rule, settings, reason, admin)

        if not admin:
            denied = _denied(settings, event)
            if denied is not None:
                return decision(*denied)
        trigger = _triggered(settings.trigger, settings.continue_threads, event, bot_in_thread)
        if trigger is None:
            return decision(Verdict.NOT_TRIGGERED, f"trigger = {settings.trigger!r} not met")
        return decision(Verdict.ANSWER, trigger + (" (admin)" if admin else ""))


def _applies(override: PolicyOverride, event: Event) -> bool:
    if override.platform and override.platform != event.platform:
        return False
    if override.workspace and override.workspace != event.workspace:
        return False
    places = (event.channel, *event.parents)
    if override.channel and override.channel not in places:
        return False
    return override.dm == "any" or override.dm == event.is_dm


def _denied(settings: PolicyConfig, event: Event) -> tuple[Verdict, str] | None:
    places = {event.channel, *event.parents}
    if event.is_dm and not settings.dms:
        return Verdict.DENIED_DM, "direct messages are off here"
    if not event.is_dm and not settings.channels:
        return Verdict.DENIED_OUTSIDE_DM, "the bot answers direct messages only"
    if event.user in settings.deny_users:
        return Verdict.DENIED_USER, "the user is denied"
    if settings.allow_users and event.user not in settings.allow_users:
        return Verdict.DENIED_USER, "the user is not in allow_users"
    if settings.allow_roles and not set(event.roles) & set(settings.allow_roles):
        return Verdict.DENIED_ROLE, "the user has none of allow_roles"
    if places & set(settings.deny_channels):
        return Verdict.DENIED_CHANNEL, "the channel is denied"
    if not event.is_dm and settings.allow_channels and not places & set(settings.allow_channels):
        return Verdict.DENIED_CHANNEL, "the channel is not in allow_channels"
    return None


def _triggered(
    trigger: Trigger, continue_threads: bool, event: Event, bot_in_thread: bool
) -> str | None:
    if event.addressed:
        return "addressed (mention, DM or reply)"
    if event.mentions_others:
        return None  # addressed to someone else: never the bot's to answer
    if continue_threads and event.thread and bot_in_thread:
        return "a thread the bot is answering in"
    if trigger == "all":
        return "trigger = 'all'"
    if trigger == "question" and looks_like_question(event.text):
        return "trigger = 'question' and it looks like one"
    return None
