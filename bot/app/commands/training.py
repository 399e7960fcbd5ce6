"""``parley train`` (fine-tune the model on support conversations) and ``parley
export-training`` (the stored conversations as training data)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from bot.config import Config
from bot.errors import ParleyError

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
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


def run(config: Config, args: argparse.Namespace) -> int:
    """torch and transformers load only here."""
    try:
        if args.command == "export-training":
            system = config.bot.system_prompt.format(
                name=config.bot.name, company=config.bot.company
            )
            if not config.store.url and not Path(config.store.path).is_file():
                raise ParleyError(f"no conversation store at {config.store.path}")
            count = asyncio.run(_export(config, args.min_rating, args.out, system))
            print(f"parley: {count} conversations written to {args.out}")
            return 0
        from bot.training.card import TrainSettings
        from bot.training.train import train

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


async def _export(config: Config, min_rating: Any, out: str, system: str) -> int:
    from bot.storage import build_store
    from bot.training.export import export_training

    store = build_store(config)
    await store.open()
    try:
        return await export_training(store, min_rating, out, system)
    finally:
        await store.close()
