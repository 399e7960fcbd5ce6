"""Training data: chat JSONL in, token ids with loss only on the assistant's tokens out.

Each line is one conversation, ``{"messages": [{"role": …, "content": …}, …]}``, the common
format of OpenAI and Hugging Face fine-tuning. A conversation is rendered the way the bot will
prompt the model at run time (``PromptFormat``: the model's chat template, or the plain
transcript for models without one), so the tuned model sees in training what it sees serving.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.generation.base import ChatMessage
from bot.generation.models import PromptFormat
from bot.training import TrainingError

__all__ = [
    "IGNORE",
    "Collator",
    "Example",
    "encode",
    "encode_all",
    "read_conversations",
    "write_conversations",
]

log = logging.getLogger(__name__)

#: The label that tells the loss to skip a token (PyTorch's cross-entropy ``ignore_index``).
IGNORE = -100
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class Example:
    input_ids: list[int]
    labels: list[int]


def read_conversations(path: str | Path, strict: bool = False) -> list[list[ChatMessage]]:
    """The valid conversations in a JSONL file. A malformed line is skipped with a warning
    naming it, or, with ``strict``, stops everything with a TrainingError naming it."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"cannot read {path}: {exc}") from exc
    conversations = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            conversations.append(_parse(line))
        except ValueError as exc:
            where = f"{path}:{number}: {exc}"
            if strict:
                raise TrainingError(where) from exc
            log.warning("%s; line skipped", where)
    return conversations


def _parse(line: str) -> list[ChatMessage]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from exc
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ValueError('expected {"messages": [...]} with at least one message')
    parsed = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"message {index + 1} is not an object")
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise ValueError(f"message {index + 1} has role {role!r}, not one of {_ROLES}")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"message {index + 1} has no text content")
        if role == "system" and index > 0:
            raise ValueError(f"message {index + 1}: a system message may only come first")
        parsed.append(ChatMessage(role, content))
    if not any(m.role == "assistant" for m in parsed):
        raise ValueError("no assistant message: nothing to learn from")
    return parsed


def write_conversations(path: str | Path, conversations: Sequence[Sequence[ChatMessage]]) -> None:
    with open(path, "w", encoding="utf-8") as file:
        for messages in conversations:
            record = {"messages": [{"role": m.role, "content": m.content} for m in messages]}
            file.write(json.dumps(record, ensure_ascii=False) + "\n")


def _render(messages: Sequence[ChatMessage], tokenizer: Any) -> tuple[str, list[tuple[int, int]]]:
    """The conversation's text up to its last answer, and the character spans of the answers.

    Each answer starts where the prompt for it (``PromptFormat.render``: history plus the
    generation prompt) ends, so what is learnt is exactly what the bot will be asked to write,
    end-of-turn marker included, which teaches the model to stop."""
    prompt_format = PromptFormat(tokenizer)
    last = max(i for i, m in enumerate(messages) if m.role == "assistant")
    spans = []
    if prompt_format.has_template:
        text = _template(tokenizer, messages[: last + 1])
        for i, message in enumerate(messages[: last + 1]):
            if message.role != "assistant":
                continue
            start = len(prompt_format.render(messages[:i]))
            end = len(_template(tokenizer, messages[: i + 1]))
            if not text.startswith(prompt_format.render(messages[:i])) or end <= start:
                raise TrainingError(
                    "the model's chat template does not render a conversation as the sum of"
                    " its turns; train with a model whose template does, or one without"
                )
            spans.append((start, end))
        return text, spans
    # The transcript format: "Assistant: answer" lines; the answer's line ends with a newline
    # (where the bot stops at the next speaker) and the whole text with the end-of-text token.
    end_token = tokenizer.eos_token or ""
    text = prompt_format.render(messages[:last]) + " " + messages[last].content + end_token
    for i, message in enumerate(messages[: last + 1]):
        if message.role != "assistant":
            continue
        start = len(prompt_format.render(messages[:i]))
        tail = "\n" if i < last else end_token
        end = start + len(" " + message.content + tail)
        if text[start:end] != " " + message.content + tail:
            raise TrainingError("the transcript format changed: cannot find the answers in it")
        spans.append((start, end))
    return text, spans


def _template(tokenizer: Any, messages: Sequence[ChatMessage]) -> str:
    rendered = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages], tokenize=False
    )
    return str(rendered)


def encode(messages: Sequence[ChatMessage], tokenizer: Any, max_length: int) -> Example | None:
    """Token ids and labels (the ids on the answers' tokens, IGNORE elsewhere), cut to
    ``max_length`` tokens; None when no answer token is left after the cut."""
    text, spans = _render(messages, tokenizer)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])[:max_length]
    offsets = list(encoded["offset_mapping"])[:max_length]
    labels = [IGNORE] * len(ids)
    span = 0
    for index, (begin, finish) in enumerate(offsets):
        while span < len(spans) and begin >= spans[span][1]:
            span += 1
        if span == len(spans):
            break
        # A token belongs to the answer when it starts inside the span (an empty-offset
        # special token takes its position from where it ends).
        if spans[span][0] <= begin < spans[span][1] or (
            begin == finish and spans[span][0] < finish <= spans[span][1]
        ):
            labels[index] = ids[index]
    if all(label == IGNORE for label in labels):
        return None
    return Example(ids, labels)


def encode_all(
    conversations: Sequence[Sequence[ChatMessage]], tokenizer: Any, max_length: int
) -> list[Example]:
    examples = []
    for number, messages in enumerate(conversations, start=1):
        example = encode(messages, tokenizer, max_length)
        if example is None:
            log.warning(
                "conversation %d: no answer within the first %d tokens (raise --max-length);"
                " skipped",
                number,
                max_length,
            )
            continue
        examples.append(example)
    return examples


class Collator:
    """Pads a batch to its longest example (at most ``max_length``), right side; padding
    carries no loss and no attention."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: Sequence[Example | dict[str, Any]]) -> dict[str, Any]:
        import torch

        rows = [
            b if isinstance(b, Example) else Example(b["input_ids"], b["labels"]) for b in batch
        ]
        width = max(len(row.input_ids) for row in rows)
        ids, labels, mask = [], [], []
        for row in rows:
            pad = width - len(row.input_ids)
            ids.append(row.input_ids + [self.pad_id] * pad)
            labels.append(row.labels + [IGNORE] * pad)
            mask.append([1] * len(row.input_ids) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }
