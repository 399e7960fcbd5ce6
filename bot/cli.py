"""The ``parley`` command (also ``python -m bot``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from bot.config import Config, load_config
from bot.errors import ConfigError, ParleyError, PlatformError
from bot.logs import setup_logging
from bot.ops import OpsServer
from bot.service import Service, build_service

log = logging.getLogger("parley")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley",
        description="Parley: a customer-support chatbot for Discord, Slack and the web.",
    )
    parser.add_argument(
        "--config", help="TOML file overriding config/default.toml (or $PARLEY_CONFIG)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="start every enabled adapter and serve until Ctrl-C")
    chat = commands.add_parser(
        "chat", help="chat in the terminal (answers each line of piped input)"
    )
    chat.add_argument(
        "--conversation", default="terminal", help="name of the conversation to continue"
    )
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
    commands.add_parser(
        "doctor", help="check the model server (or local model) and the store, one line each"
    )
    report = commands.add_parser("report", help="what the bot did lately, and what to improve")
    report.add_argument("--days", type=float, default=7.0, help="the period to report on")
    from bot.knowledge.cli import add_parser as add_kb_parser

    add_kb_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log, quiet=args.command == "chat")
    if args.command == "policy":
        from bot.policy_cli import explain, reload

        return explain(config, args) if args.policy_command == "explain" else reload(config, args)
    if args.command == "kb":
        from bot.knowledge.cli import run as run_kb

        try:
            return run_kb(config, args)
        except ParleyError as exc:
            print(f"parley: {exc}", file=sys.stderr)
            return 2
    if args.command == "doctor":
        from bot.doctor import doctor

        return asyncio.run(doctor(config))
    if args.command == "report":
        from bot.report import build_report, format_report

        print(format_report(build_report(config.store.path, args.days)))
        return 0
    try:
        if args.command == "chat":
            return asyncio.run(_chat(config, args.conversation))
        if args.command == "run":
            return asyncio.run(_run(config))
    except ConfigError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    except ParleyError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


async def _chat(config: Config, conversation: str) -> int:
    from adapters.console import chat

    async with build_service(config) as service:
        await chat(service, conversation)
    return 0


def _enabled(config: Config) -> list[Any]:
    """The adapter modules that will start; raises ConfigError before anything loads."""
    import adapters

    modules = [importlib.import_module(f"adapters.{name}") for name in adapters.RUNNABLE]
    return [module for module in modules if module.enabled(config)]


async def _run(config: Config) -> int:
    modules = _enabled(config)
    if not modules:
        print(
            "parley: nothing to run: web.enabled is false, and no platform is configured: set"
            " DISCORD_TOKEN for Discord, or SLACK_BOT_TOKEN with SLACK_APP_TOKEN (Socket Mode)"
            " or SLACK_SIGNING_SECRET (HTTP) for Slack; or try 'parley chat' in this terminal",
            file=sys.stderr,
        )
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    service = build_service(config)
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, service.reload_policy)
    await service.start()
    ops: OpsServer | None = None
    try:
        adapters = [module.create(config, service) for module in modules]
        if config.ops.enabled:
            ops = await _start_ops(config, service, adapters)
        running = [asyncio.create_task(a.run(), name=a.name) for a in adapters]
        waiter = asyncio.create_task(stop.wait())
        announcer = asyncio.create_task(_announce(adapters))
        done, _ = await asyncio.wait([*running, waiter], return_when=asyncio.FIRST_COMPLETED)
        announcer.cancel()
        failure = next((t.exception() for t in done if t is not waiter and t.exception()), None)
        log.info("shutting down: finishing the replies in flight")
        waiter.cancel()
        # Replies in flight finish (or end with a notice) while the adapters can still post.
        await service.conversations.close(config.ops.shutdown_grace)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, waiter, announcer, return_exceptions=True)
        if isinstance(failure, PlatformError):
            print(f"parley: {failure}", file=sys.stderr)
            return 2
        if failure is not None:
            raise failure
        return 0
    finally:
        if ops is not None:
            await ops.close()
        await service.close()


async def _announce(adapters: list[Any]) -> None:
    """Print where a served page is (the web chat) once it listens: the line to click."""
    for adapter in adapters:
        serving = getattr(adapter, "serving", None)
        if serving is not None and hasattr(adapter, "url"):
            await serving.wait()
            print(f"parley: {adapter.name} chat at {adapter.url} (Ctrl-C stops)", flush=True)


async def _start_ops(config: Config, service: Service, adapters: list[Any]) -> OpsServer | None:
    ops = OpsServer(config.ops, service, adapters)
    try:
        await ops.start()
    except OSError as exc:
        # Health checks are worth having, not worth refusing to answer customers over.
        log.error(
            "no /healthz or /metrics: cannot listen on %s:%s (%s)",
            config.ops.host,
            config.ops.port,
            exc,
        )
        return None
    return ops
