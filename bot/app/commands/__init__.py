"""The ``parley`` subcommands, one module each, each with ``add_parser(commands)`` and
``run(config, args) -> int`` (bot/app/cli.py lists them)."""
