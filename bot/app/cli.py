"""The ``parley`` command (also ``python -m bot``). Every subcommand is a module of
``bot/app/commands/`` with the same two functions: ``add_parser(commands)`` declares it, and
``run(config, args) -> int`` runs it (the exit status)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from bot.app.commands import doctor, evaluate, kb, policy, report, serve, training
from bot.app.logs import setup_logging
from bot.app.wiring import load
from bot.errors import ConfigError, ParleyError

__all__ = ["COMMANDS", "main"]

#: In the order ``parley --help`` lists them.
COMMANDS = (serve, training, policy, doctor, report, kb, evaluate)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley",
        description="Parley: a customer-support chatbot for Discord, Slack and the web.",
    )
    parser.add_argument(
        "--config", help="TOML file overriding config/default.toml (or $PARLEY_CONFIG)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        before = set(commands.choices)
        module.add_parser(commands)
        for name in set(commands.choices) - before:
            commands.choices[name].set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        config = load(getattr(args, "eval_config", None) or args.config)
    except ConfigError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "model", None) and args.command in ("chat", "run"):
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, name=args.model)
        )
    setup_logging(config.log, quiet=args.command == "chat")
    try:
        return int(args.run(config, args))
    except ParleyError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
