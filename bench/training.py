"""The fine-tuning benchmark: does ``parley train`` teach the bundled model the support voice?

Fine-tunes the bundled SmolLM2-135M-Instruct on the first ``--train`` conversations of
``config/training/sample.jsonl`` and measures perplexity on the assistant's tokens of the 40
held-out conversations (``config/training/heldout.jsonl``) before and after. Target: after <
0.8 × before. Sized to finish in under 15 minutes on a 2-core CPU; on a GPU pass ``--train
230 --epochs 3`` for the whole set. Results: a table on stdout and ``bench/results/training.json``.

    python -m bench.training [--train 64] [--epochs 1] [--lora] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MODEL_CACHE = ROOT / ".cache" / "models"
SAMPLE = ROOT / "config" / "training" / "sample.jsonl"
HELDOUT = ROOT / "config" / "training" / "heldout.jsonl"
TARGET = 0.8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__)
    parser.add_argument("--train", type=int, default=64, help="training conversations used")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--keep", help="write the tuned model here (default: a temporary folder)")
    parser.add_argument("--tag", default="", help="suffix for the results file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from bot.config import ModelConfig
    from bot.generation.models import _converted_gguf, bundled_gguf
    from bot.training.card import TrainSettings
    from bot.training.train import train

    model_dir = _converted_gguf(bundled_gguf(), MODEL_CACHE)
    with tempfile.TemporaryDirectory(prefix="parley-bench-training-") as scratch:
        data = Path(scratch) / "train.jsonl"
        lines = [line for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
        data.write_text("\n".join(lines[: args.train]) + "\n", encoding="utf-8")
        out = Path(args.keep) if args.keep else Path(scratch) / "model"
        settings = TrainSettings(
            data=data,
            out=out,
            heldout=HELDOUT,
            model=str(model_dir),
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            max_length=args.max_length,
            lora=args.lora,
            overwrite=True,
            save_steps=10_000,
        )
        result = train(settings, ModelConfig(cache_dir=str(MODEL_CACHE)))
    assert result.before is not None and result.after is not None
    ratio = result.after.perplexity / result.before.perplexity
    rows = [
        ("model", "bundled SmolLM2-135M-Instruct" + (" + LoRA (merged)" if args.lora else "")),
        ("device", _device()),
        ("training conversations", f"{result.train_examples} × {args.epochs:g} epoch(s)"),
        (
            "held-out conversations",
            f"{result.heldout_examples} ({result.after.tokens} answer tokens)",
        ),
        ("optimizer steps", f"{result.steps} (batch {args.batch_size}, lr {args.lr:g})"),
        ("training time", f"{result.train_seconds:.0f} s, {result.tokens_per_second:.0f} tokens/s"),
        ("total time", f"{result.seconds:.0f} s (load, evaluate twice, train, save)"),
        ("held-out loss", f"{result.before.loss:.3f} → {result.after.loss:.3f}"),
        ("held-out perplexity", f"{result.before.perplexity:.2f} → {result.after.perplexity:.2f}"),
        (
            "after / before",
            f"{ratio:.3f} (target < {TARGET}: {'met' if ratio < TARGET else 'MISSED'})",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.training " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": _device(),
        "lora": args.lora,
        "train_conversations": result.train_examples,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "steps": result.steps,
        "train_seconds": round(result.train_seconds, 1),
        "total_seconds": round(result.seconds, 1),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "heldout_loss_before": round(result.before.loss, 4),
        "heldout_loss_after": round(result.after.loss, 4),
        "heldout_perplexity_before": round(result.before.perplexity, 3),
        "heldout_perplexity_after": round(result.after.perplexity, 3),
        "ratio": round(ratio, 4),
        "target_met": ratio < TARGET,
    }
    name = f"training{'-' + args.tag if args.tag else ''}.json"
    (RESULTS / name).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0 if ratio < TARGET else 1


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


if __name__ == "__main__":
    sys.exit(main())
