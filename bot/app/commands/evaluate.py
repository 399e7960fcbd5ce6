"""``parley eval GOLDEN.jsonl``: what the bot will tell customers, measured before go-live."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any

from bot.config import Config
from bot.evaluation.golden import load_golden
from bot.evaluation.report import table, write_html, write_json
from bot.evaluation.run import Result, evaluate
from bot.evaluation.score import figures, parse_floors, short_of
from bot.evaluation.tune import cross_validate, refusals, tune

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "eval",
        help="answer a golden set of questions through the real answer path and score the"
        " answers (facts, citations, unsupported specifics, don't-knows)",
    )
    parser.add_argument("golden", metavar="GOLDEN.jsonl", help="the golden set (README)")
    parser.add_argument(
        "--kb",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="answer from these articles, ingested into a temporary store"
        " (default: knowledge.paths)",
    )
    parser.add_argument(
        "--mode",
        choices=["extractive", "grounded", "free"],
        help="answer this way instead of knowledge.answer_mode (compare them on your articles)",
    )
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    parser.add_argument(
        "--out", default="data/eval", help="folder for eval.json and eval.html (data/eval)"
    )
    parser.add_argument(
        "--min",
        default="",
        metavar="FIGURE=VALUE,…",
        help="exit 1 when a figure falls short, e.g. fact=0.6,unsupported=0.05"
        " (for unsupported, refused and latencies: a ceiling)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="questions in flight at once (16)"
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="fit the don't-know decision ([knowledge.decision]) to this golden set and print it",
    )
    parser.add_argument(
        "--max-refused",
        type=float,
        default=0.10,
        help="with --tune: the share of answerable questions it may refuse (0.10)",
    )


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // total
    end = "\n" if done == total else ""
    bar = "#" * filled + "." * (width - filled)
    print(f"\r[{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)


def run(config: Config, args: argparse.Namespace) -> int:
    floors = parse_floors(args.min)
    if args.mode:
        knowledge = dataclasses.replace(config.knowledge, answer_mode=args.mode)
        config = dataclasses.replace(config, knowledge=knowledge)
    items = load_golden(args.golden)
    if args.limit > 0:
        items = items[: args.limit]
    settings = {
        "golden": args.golden,
        "knowledge": ", ".join(args.kb or config.knowledge.paths),
        "config": config.source,
        "answer mode": config.knowledge.answer_mode,
        "model": config.model.name if config.model.backend == "local" else "remote",
        "questions": len(items),
    }
    results = asyncio.run(
        evaluate(config, items, args.kb, concurrency=args.concurrency, progress=_progress)
    )
    found = figures(results)
    print(
        table(
            found,
            f"{args.golden}: {found.answerable} answerable, {found.out_of_scope} out of scope",
        )
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "eval.json", results, found, settings)
    write_html(out / "eval.html", results, found, settings)
    print(f"\nEvery question and why: {out / 'eval.html'} (and {out / 'eval.json'})")
    if args.tune:
        _print_tuning(config, results, args.max_refused)
    missed = short_of(found, floors)
    for line in missed:
        print(f"parley eval: {line}", file=sys.stderr)
    return 1 if missed else 0


def _print_tuning(config: Config, results: list[Result], max_refused: float) -> None:
    knowledge = config.knowledge
    now = refusals(results, knowledge.decision, knowledge.min_score)
    tuning = tune(results, knowledge.min_score, max_refused)
    print()
    if tuning is None:
        print(
            "--tune needs answerable and out-of-scope questions, and a decision that refuses at"
            f" most {max_refused:.0%} of the answerable ones."
        )
        return
    print(
        f"The don't-know for these articles. Now: out of scope caught {now[0]:.2f}, answerable"
        f" refused {now[1]:.2f}. Fitted: caught {tuning.dont_know_recall:.2f}, refused"
        f" {tuning.refused:.2f}."
    )
    halves = cross_validate(results, knowledge.min_score, max_refused)
    if halves is not None:
        print(
            f"Fitted on one half of the set and measured on the other: caught {halves[0]:.2f},"
            f" refused {halves[1]:.2f} (what to expect on new questions)."
        )
    if now[0] - now[1] >= tuning.dont_know_recall - tuning.refused:
        print(
            "The decision you have does at least as well on these questions: keep it. The"
            " fitted one, for reference:\n"
        )
    else:
        print("Paste into your config file:\n")
    print(tuning.config_lines())
