"""`parley policy explain` and `parley policy reload`."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from bot.config import Config
from bot.core.policy import Policy
from bot.events import Event

__all__ = ["add_parser", "explain", "reload", "run"]


def add_parser(commands: Any) -> None:
    policy = commands.add_parser("policy", help="explain or reload the per-channel settings")
    policy_commands = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    explain = policy_commands.add_parser(
        "explain", help="which rule applies to a message, and what the bot would do"
    )
    explain.add_argument("--platform", required=True)
    explain.add_argument("--channel", required=True)
    explain.add_argument("--user", required=True)
    explain.add_argument("--workspace", default="", help="guild or team id")
    explain.add_argument("--roles", nargs="*", default=[], help="role or user-group ids")
    explain.add_argument("--parent", nargs="*", default=[], help="category or parent channel ids")
    explain.add_argument("--thread", default=None)
    explain.add_argument("--dm", action="store_true", help="a direct message")
    explain.add_argument("--mention", action="store_true", help="the message mentions the bot")
    explain.add_argument("--text", default="hello", help="the message text")
    reload = policy_commands.add_parser(
        "reload", help="ask the running service to re-read its config (via the ops port)"
    )
    reload.add_argument("--url", default=None, help="ops base URL (default from [ops])")


def run(config: Config, args: argparse.Namespace) -> int:
    return explain(config, args) if args.policy_command == "explain" else reload(config, args)


def explain(config: Config, args: argparse.Namespace) -> int:
    event = Event(
        platform=args.platform,
        workspace=args.workspace,
        channel=args.channel,
        thread=args.thread,
        user=args.user,
        text=args.text,
        addressed=args.mention or args.dm,
        is_dm=args.dm,
        roles=tuple(args.roles),
        parents=tuple(args.parent),
    )
    decision = Policy(config.policy).decide(event)
    settings = decision.settings
    print(f"rule:     {decision.rule}  (from {config.source})")
    print(f"decision: {'answer' if decision.answer else 'stay silent'} — {decision.reason}")
    print(
        f"trigger:  {settings.trigger}, continue_threads = {str(settings.continue_threads).lower()}"
    )
    print(f"persona:  {settings.persona or config.bot.name}")
    if settings.quota:
        print(f"quota:    {settings.quota} answers per user per day")
    return 0


def reload(config: Config, args: argparse.Namespace) -> int:
    url = (args.url or f"http://{config.ops.host}:{config.ops.port}").rstrip("/")
    request = urllib.request.Request(f"{url}/policy/reload", method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print("policy reloaded")
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"parley: not reloaded: {json.load(exc).get('error', exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"parley: cannot reach the running service at {url}: {exc}", file=sys.stderr)
        return 1
