"""``parley train``: fine-tune a causal LM on support conversations with transformers' Trainer.

The output folder is a model ``model.name`` serves as it is: weights, tokenizer, chat template
and a README.md model card with the data, the settings and held-out loss and perplexity before
and after. While training, checkpoints live in ``OUT/checkpoints`` (Ctrl-C saves one, --resume
goes on from the last); they are removed once the model is written. This module imports
transformers: the CLI imports it only for ``parley train``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from bot.config import ModelConfig
from bot.generation.base import ChatMessage
from bot.generation.models import load_model
from bot.training import TrainingError
from bot.training.card import Figures, TrainResult, TrainSettings, model_card
from bot.training.data import Collator, Example, encode_all, read_conversations

__all__ = ["evaluate", "train"]

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


def train(
    settings: TrainSettings, model_config: ModelConfig, callbacks: Sequence[Any] = ()
) -> TrainResult:
    """Train as ``settings`` say; raises TrainingError or ModelLoadError with one clear line."""
    started = time.monotonic()
    conversations = read_conversations(settings.data, settings.strict)
    if not conversations:
        raise TrainingError(f"{settings.data}: no conversations to train on")
    heldout_conversations: list[list[ChatMessage]] = []
    if settings.heldout is not None:
        heldout_conversations = read_conversations(settings.heldout, settings.strict)
        if not heldout_conversations:
            raise TrainingError(f"{settings.heldout}: no held-out conversations")
    else:
        conversations, heldout_conversations = _split(
            conversations, settings.heldout_fraction, settings.seed
        )
    checkpoints = _prepare_out(settings)

    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    config = dataclasses.replace(model_config, name=settings.model, dtype="float32")
    # Loaded in float32 whatever the device: training updates need the precision; on a GPU
    # bf16 autocast does the speed-up.
    loaded = load_model(config)
    model, tokenizer = loaded.model, loaded.tokenizer
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    if pad_id is None:
        raise TrainingError(f"model '{settings.model}' has neither a padding nor an end token")
    train_set = encode_all(conversations, tokenizer, settings.max_length)
    heldout_set = encode_all(heldout_conversations, tokenizer, settings.max_length)
    if not train_set:
        raise TrainingError(f"{settings.data}: no conversation has an answer to learn from")
    collator = Collator(pad_id)
    before = evaluate(model, heldout_set, collator, settings.batch_size)
    if before is not None:
        log.info("held-out before: loss %.4f, perplexity %.2f", before.loss, before.perplexity)

    set_seed(settings.seed)
    if settings.lora:
        model = _with_lora(model, settings.lora_rank)
    cuda = loaded.device == "cuda"
    steps_per_epoch = math.ceil(len(train_set) / (settings.batch_size * settings.grad_accum))
    total_steps = (
        settings.max_steps
        if settings.max_steps > 0
        else math.ceil(steps_per_epoch * settings.epochs)
    )
    arguments = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=total_steps // 20,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        seed=settings.seed,
        data_seed=settings.seed,
        logging_steps=max(1, total_steps // 20),
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=2,
        eval_strategy="no",
        report_to="none",
        disable_tqdm=not settings.progress,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        dataloader_pin_memory=cuda,
        remove_unused_columns=False,
    )
    recorder = _Recorder()
    stopper = _StopOnInterrupt()
    trainer: Any = Trainer(
        model=model,
        args=arguments,
        train_dataset=_Examples(train_set),
        data_collator=collator,
        callbacks=[recorder, stopper, *callbacks],
    )
    resume_from = _last_checkpoint(checkpoints) if settings.resume else None
    loop_started = time.monotonic()
    with stopper.catching_ctrl_c():
        trainer.train(resume_from_checkpoint=resume_from)
    progress: dict[str, Any] = {
        "train_examples": len(train_set),
        "heldout_examples": len(heldout_set),
        "train_tokens": sum(len(example.input_ids) for example in train_set),
        "train_seconds": time.monotonic() - loop_started,
        "epochs_done": float(trainer.state.epoch or 0.0),
    }
    if stopper.requested:
        return TrainResult(
            settings.out,
            before,
            None,
            trainer.state.global_step,
            time.monotonic() - started,
            interrupted=True,
            losses=recorder.losses,
            **progress,
        )
    model = trainer.model
    if settings.lora:
        model = model.merge_and_unload()
    after = evaluate(model, heldout_set, collator, settings.batch_size)
    result = TrainResult(
        settings.out,
        before,
        after,
        trainer.state.global_step,
        time.monotonic() - started,
        losses=recorder.losses,
        **progress,
    )
    _save(model, tokenizer, settings, result, loaded.source, loaded.device)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return result


def _split(
    conversations: list[list[ChatMessage]], fraction: float, seed: int
) -> tuple[list[list[ChatMessage]], list[list[ChatMessage]]]:
    if len(conversations) < 2 or fraction <= 0:
        log.warning("too few conversations to hold some out: no evaluation figures")
        return conversations, []
    order = list(range(len(conversations)))
    random.Random(seed).shuffle(order)
    count = min(len(order) - 1, max(1, round(len(order) * fraction)))
    held = set(order[:count])
    return (
        [c for i, c in enumerate(conversations) if i not in held],
        [c for i, c in enumerate(conversations) if i in held],
    )


def _prepare_out(settings: TrainSettings) -> Path:
    out, checkpoints = settings.out, settings.out / CHECKPOINTS
    if settings.resume:
        if _last_checkpoint(checkpoints) is None:
            raise TrainingError(f"{out}: no checkpoint to resume from")
        return checkpoints
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not settings.overwrite:
            raise TrainingError(
                f"{out} already exists: pass --overwrite to replace it, or --resume to go on"
            )
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    checkpoints.mkdir(parents=True, exist_ok=True)
    return checkpoints


def _last_checkpoint(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder))


def _with_lora(model: Any, rank: int) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.05,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def evaluate(
    model: Any, examples: Sequence[Example], collator: Collator, batch_size: int
) -> Figures | None:
    """Mean loss per answer token over ``examples`` and its perplexity (None for no examples):
    summed per token, so long and short conversations weigh by their answers' length."""
    if not examples:
        return None
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = {
                k: v.to(device) for k, v in collator(examples[start : start + batch_size]).items()
            }
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            labels = batch["labels"][:, 1:]
            total += float(
                F.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                    labels.reshape(-1),
                    ignore_index=-100,
                    reduction="sum",
                )
            )
            tokens += int((labels != -100).sum())
    model.train(was_training)
    loss = total / max(tokens, 1)
    return Figures(loss, math.exp(min(loss, 50.0)), tokens)


def _save(
    model: Any,
    tokenizer: Any,
    settings: TrainSettings,
    result: TrainResult,
    source: str,
    device: str,
) -> None:
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(out)
    # The tokenizer carries the chat template, so the model answers in the format it learnt.
    tokenizer.save_pretrained(out)
    (out / "README.md").write_text(model_card(settings, result, source, device), encoding="utf-8")


class _Examples:
    """A list as the map-style dataset Trainer expects."""

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]


class _Recorder(TrainerCallback):  # type: ignore[misc]
    """The training loss as Trainer logs it."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


class _StopOnInterrupt(TrainerCallback):  # type: ignore[misc]
    """Ctrl-C finishes the step, saves a checkpoint and stops; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        self.requested = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control

    def catching_ctrl_c(self) -> Any:
        import contextlib

        @contextlib.contextmanager
        def scope() -> Any:
            if threading.current_thread() is not threading.main_thread():
                yield
                return

            def handler(signum: int, frame: Any) -> None:
                if self.requested:
                    raise KeyboardInterrupt
                log.warning("stopping after this step, with a checkpoint (Ctrl-C again: now)")
                self.request()

            previous = signal.signal(signal.SIGINT, handler)
            try:
                yield
            finally:
                signal.signal(signal.SIGINT, previous)

        return scope()
