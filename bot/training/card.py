"""What a training run takes and gives: its settings, its figures, and the model card
(README.md) written beside the weights, so whoever serves the model knows how it was made."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["Figures", "TrainResult", "TrainSettings", "model_card"]


@dataclass(frozen=True)
class TrainSettings:
    data: Path
    out: Path
    heldout: Path | None = None
    model: str = "bundled"
    epochs: float = 3.0
    #: None: 5e-5 for full fine-tuning, 2e-4 with LoRA (the adapter is small and starts at 0).
    lr: float | None = None
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    lora: bool = False
    lora_rank: int = 16
    seed: int = 42
    overwrite: bool = False
    strict: bool = False
    resume: bool = False
    #: Share of the data held out for evaluation when no --heldout file is given.
    heldout_fraction: float = 0.1
    #: Stop after this many optimizer steps (-1: run all epochs).
    max_steps: int = -1
    save_steps: int = 200
    progress: bool = True

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 2e-4 if self.lora else 5e-5


@dataclass(frozen=True)
class Figures:
    """Held-out loss (mean per answer token) and its perplexity."""

    loss: float
    perplexity: float
    tokens: int


@dataclass
class TrainResult:
    out: Path
    before: Figures | None
    after: Figures | None
    steps: int
    seconds: float
    interrupted: bool = False
    losses: list[float] = field(default_factory=list)
    train_examples: int = 0
    heldout_examples: int = 0
    #: Tokens in one pass over the training set, padding left out.
    train_tokens: int = 0
    #: Seconds in the training loop itself (no loading or evaluation).
    train_seconds: float = 0.0
    #: Passes over the training set done (fractional when stopped by max_steps).
    epochs_done: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return (
            self.train_tokens * self.epochs_done / self.train_seconds if self.train_seconds else 0.0
        )


def model_card(settings: TrainSettings, result: TrainResult, source: str, device: str) -> str:
    def figures(f: Figures | None) -> str:
        return f"{f.loss:.4f} | {f.perplexity:.2f}" if f else "n/a | n/a"

    heldout = (
        f"`{settings.heldout}`"
        if settings.heldout
        else f"{settings.heldout_fraction:.0%} of the training file, drawn with the seed"
    )
    before, after = result.before, result.after
    change = (
        f"Perplexity after / before: {after.perplexity / before.perplexity:.3f}.\n"
        if before and after
        else ""
    )
    rows = [
        ("base model", f"`{settings.model}` ({source})"),
        ("method", f"LoRA rank {settings.lora_rank}, merged" if settings.lora else "full"),
        ("epochs", f"{settings.epochs:g}"),
        ("learning rate", f"{settings.learning_rate:g}"),
        ("batch size", str(settings.batch_size)),
        ("gradient accumulation", str(settings.grad_accum)),
        ("max length", f"{settings.max_length} tokens"),
        ("seed", str(settings.seed)),
        ("optimizer steps", str(result.steps)),
        ("device", device),
        ("time", f"{result.seconds:.0f} s ({result.tokens_per_second:.0f} tokens/s training)"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"""# Fine-tuned support model

Made by `parley train` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Serve it with
`model.name = "{settings.out}"` in the config, or try it with `parley chat --model {settings.out}`.

## Data

- training: `{settings.data}` (sha256 {_digest(settings.data)}):
  {result.train_examples} conversations
- held-out: {heldout}: {result.heldout_examples} conversations

Loss counts only the assistant's tokens; the rest of each conversation is context.

## Settings

| setting | value |
|---|---|
{table}

## Evaluation on the held-out conversations

| | loss per answer token | perplexity |
|---|---|---|
| before | {figures(before)} |
| after | {figures(after)} |

{change}"""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
