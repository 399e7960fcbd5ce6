"""The ``parley`` command (also ``python -m bot``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from bot.app.logs import setup_logging
from bot.app.ops import OpsServer
from bot.app.wiring import build_service
from bot.config import Config, load_config
from bot.core.service import Service
from bot.errors import ConfigError, ParleyError, PlatformError

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
    _add_training_parsers(commands)
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
    from bot.evaluation.cli import add_parser as add_eval_parser

    add_eval_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        config = load_config(getattr(args, "eval_config", None) or args.config)
    except ConfigError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "model", None) and args.command in ("chat", "run"):
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, name=args.model)
        )
    setup_logging(config.log, quiet=args.command == "chat")
    if args.command in ("train", "export-training"):
        return _training_command(config, args)
    if args.command == "policy":
        from bot.app.policy_cli import explain, reload

        return explain(config, args) if args.policy_command == "explain" else reload(config, args)
    if args.command in ("kb", "eval"):
        module = "bot.knowledge.cli" if args.command == "kb" else "bot.evaluation.cli"
        try:
            return int(importlib.import_module(module).run(config, args))
        except ParleyError as exc:
            print(f"parley: {exc}", file=sys.stderr)
            return 2
    if args.command == "doctor":
        from bot.app.doctor import doctor

        return asyncio.run(doctor(config))
    if args.command == "report":
        from bot.app.report import build_report, format_report
        from bot.knowledge.embed import Embedder

        # (The embedding model loads only if there are questions to group.)
        encode = Embedder(config.knowledge.embedding_model).encode
        print(format_report(build_report(config.store.path, args.days, encode=encode)))
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


def _add_training_parsers(commands: Any) -> None:
    train = commands.add_parser(
        "train", help="fine-tune the model on support conversations (chat JSONL)"
    )
    train.add_argument("--data", required=True, help="conversations, one JSON object a line")
    train.add_argument("--out", required=True, help="folder for the tuned model")
    train.add_argument("--heldout", help="conversations to evaluate on (default: 10%% of --data)")
    train.add_argument("--model", help="base model (default: model.name)")
    train.add_argument("--epochs", type=float, default=3.0)
    train.add_argument("--lr", type=float, default=None, help="default 5e-5, 2e-4 with --lora")
    train.add_argument("--batch-size", type=int, default=4)
    train.add_argument("--grad-accum", type=int, default=1, help="batches per optimizer step")
    train.add_argument("--max-length", type=int, default=512, help="tokens per conversation")
    train.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps")
    train.add_argument(
        "--lora", action="store_true", help="train a LoRA adapter, merged at the end"
    )
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    train.add_argument("--strict", action="store_true", help="stop at a malformed line")
    train.add_argument("--resume", action="store_true", help="go on from the last checkpoint")
    export = commands.add_parser(
        "export-training", help="write stored conversations as training data (chat JSONL)"
    )
    export.add_argument(
        "--min-rating",
        choices=("up", "any"),
        default="up",
        help="up: conversations up to their last 👍 answer; any: every completed one",
    )
    export.add_argument("--out", required=True, help="the JSONL file to write")


def _training_command(config: Config, args: argparse.Namespace) -> int:
    """parley train / export-training; torch and transformers load only here."""
    from pathlib import Path

    try:
        if args.command == "export-training":
            from bot.training.export import export_training

            system = config.bot.system_prompt.format(
                name=config.bot.name, company=config.bot.company
            )
            count = export_training(config.store.path, args.min_rating, args.out, system)
            print(f"parley: {count} conversations written to {args.out}")
            return 0
        from bot.training.train import TrainSettings, train

        settings = TrainSettings(
            data=Path(args.data),
            out=Path(args.out),
            heldout=Path(args.heldout) if args.heldout else None,
            model=args.model or config.model.name,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            grad_accum=args.grad_accum,
            max_length=args.max_length,
            max_steps=args.max_steps,
            lora=args.lora,
            seed=args.seed,
            overwrite=args.overwrite,
            strict=args.strict,
            resume=args.resume,
        )
        result = train(settings, config.model)
    except ParleyError as exc:
        print(f"parley: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    if result.interrupted:
        print(
            f"parley: stopped at step {result.steps} with a checkpoint;"
            " run the same command with --resume to go on",
            file=sys.stderr,
        )
        return 130
    if result.before and result.after:
        print(
            f"parley: held-out perplexity {result.before.perplexity:.2f} before,"
            f" {result.after.perplexity:.2f} after ({result.steps} steps, {result.seconds:.0f} s)"
        )
    print(f"parley: model written to {result.out}; try it with: parley chat --model {result.out}")
    return 0


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
