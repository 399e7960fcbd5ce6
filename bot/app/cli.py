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

CONFIG_HELP = (
    "TOML file overriding the defaults (config/default.toml lists them; or $PARLEY_CONFIG)"
)

#: In the order ``parley --help`` lists them.
COMMANDS = (serve, training, policy, doctor, report, kb, evaluate)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley",
        description="Parley: a customer-support chatbot for Discord, Slack and the web.",
    )
    parser.add_argument("--config", help=CONFIG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        before = set(commands.choices)
        module.add_parser(commands)
        for name in set(commands.choices) - before:
            commands.choices[name].set_defaults(run=module.run)
    _config_anywhere(parser)
    return parser


def _config_anywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``--config`` after any subcommand too (``parley run --config my.toml``), as
    people type it. SUPPRESS keeps a subcommand's absent option from hiding the one given
    before it. argparse has no public walk over its subparsers, hence its private fields."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                if "--config" not in sub._option_string_actions:
                    sub.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
                _config_anywhere(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        config = load(args.config)
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
