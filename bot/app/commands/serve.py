"""``parley run`` (every enabled adapter, until Ctrl-C) and ``parley chat`` (the terminal)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import sys
import threading
from typing import Any

from bot.app.console import ConsoleServer
from bot.app.ops import OpsServer
from bot.app.wiring import build_service
from bot.config import Config
from bot.core.service import Service
from bot.errors import ConfigError, ParleyError, PlatformError

__all__ = ["add_parser", "run"]

log = logging.getLogger("parley")


def add_parser(commands: Any) -> None:
    run = commands.add_parser("run", help="start every enabled adapter and serve until Ctrl-C")
    chat = commands.add_parser(
        "chat", help="chat in the terminal (answers each line of piped input)"
    )
    chat.add_argument(
        "--conversation", default="terminal", help="name of the conversation to continue"
    )
    for command in (run, chat):
        command.add_argument(
            "--model", help="serve this model instead of model.name (e.g. a 'parley train' folder)"
        )


def run(config: Config, args: argparse.Namespace) -> int:
    try:
        if args.command == "chat":
            return asyncio.run(_chat(config, args.conversation))
        return asyncio.run(_run(config))
    except ConfigError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    except ParleyError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


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
    console: ConsoleServer | None = None
    try:
        adapters = [module.create(config, service) for module in modules]
        if config.ops.enabled:
            ops = await _start_ops(config, service, adapters)
        console = await _start_console(config, service)
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
        if console is not None:
            await console.close()
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


async def _start_console(config: Config, service: Service) -> ConsoleServer | None:
    """The support team's console, when the environment holds its token."""
    token = config.secret(config.admin.token_env)
    if token is None:
        log.info("the console is off: set %s to turn it on", config.admin.token_env)
        return None
    from bot.knowledge.embed import Embedder

    embedder = Embedder(config.knowledge.embedding_model)
    one_at_a_time = threading.Lock()  # an Embedder is for one thread at a time

    def encode(texts: list[str]) -> Any:
        with one_at_a_time:
            return embedder.encode(texts)

    # The embedding model loads only when the gaps page first has questions to group.
    console = ConsoleServer(
        config.admin, token, service.store, encode, knowledge=service.conversations.knowledge
    )
    try:
        await console.start()
    except OSError as exc:
        log.error(
            "no console: cannot listen on %s:%s (%s)", config.admin.host, config.admin.port, exc
        )
        return None
    print(f"parley: the console at {console.url}", flush=True)
    return console


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
