"""Fine-tuning: data, loss masking, training the tiny model, serving the result, bad input,
Ctrl-C and resume, and exporting rated conversations from the store."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from bot.app import cli
from bot.config import Config, ModelConfig, StoreConfig
from bot.events import ConversationKey
from bot.generation.base import ChatMessage, GenerationParams
from bot.generation.local import LocalBackend
from bot.storage import build_store
from bot.training import TrainingError
from bot.training.data import IGNORE, encode, read_conversations
from bot.training.export import export_training

CONVERSATIONS = [
    [
        ("user", "How much is the Personal plan?"),
        ("assistant", "Personal is $4 a month, or $40 a year, with 200 GB."),
        ("user", "And Family?"),
        ("assistant", "Family is $10 a month for 2 TB shared by up to 6 people."),
    ],
    [
        ("user", "I forgot my password."),
        ("assistant", 'Choose "Forgot password?" on the sign-in page; the link works 60 minutes.'),
    ],
    [
        ("user", "When is support open?"),
        ("assistant", "Monday to Friday, 8 am to 8 pm Eastern time."),
    ],
    [
        ("user", "Do you ship the Box to Canada?"),
        ("assistant", "Yes: standard delivery takes 5 to 8 business days and costs $10."),
    ],
]


def write_data(path: Path, conversations: list[list[tuple[str, str]]] = CONVERSATIONS) -> Path:
    with path.open("w", encoding="utf-8") as file:
        for turns in conversations:
            messages = [{"role": role, "content": text} for role, text in turns]
            file.write(json.dumps({"messages": messages}) + "\n")
    return path


def settings(tmp_path: Path, model: Path, **changes: Any) -> Any:
    from bot.training.card import TrainSettings

    data = write_data(tmp_path / "data.jsonl")
    values: dict[str, Any] = {
        "data": data,
        "heldout": data,
        "out": tmp_path / "tuned",
        "model": str(model),
        "max_steps": 12,
        "batch_size": 2,
        "lr": 3e-3,
        "max_length": 128,
        "progress": False,
    }
    values.update(changes)
    return TrainSettings(**values)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def answered(tokenizer: Any, example: Any) -> str:
    return str(
        tokenizer.decode(
            [
                t
                for t, label in zip(example.input_ids, example.labels, strict=True)
                if label != IGNORE
            ]
        )
    )


def test_only_the_answers_carry_loss_in_the_chat_template(tokenizer: Any) -> None:
    messages = [ChatMessage("system", "Be brief.")] + [
        ChatMessage(role, text)  # type: ignore[arg-type]
        for role, text in CONVERSATIONS[0]
    ]
    example = encode(messages, tokenizer, 512)
    assert example is not None
    assert answered(tokenizer, example) == (
        "Personal is $4 a month, or $40 a year, with 200 GB.<|im_end|>\n"
        "Family is $10 a month for 2 TB shared by up to 6 people.<|im_end|>\n"
    )
    # Everything else (system, questions, role markers) is context only.
    context = [
        t for t, label in zip(example.input_ids, example.labels, strict=True) if label == IGNORE
    ]
    assert "How much is the Personal plan?" in tokenizer.decode(context)
    assert "Be brief." in tokenizer.decode(context)


def test_a_model_without_template_learns_from_the_transcript(tokenizer: Any) -> None:
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    plain.chat_template = None
    messages = [ChatMessage(role, text) for role, text in CONVERSATIONS[0]]  # type: ignore[arg-type]
    example = encode(messages, plain, 512)
    assert example is not None
    assert plain.decode(example.input_ids).startswith("Customer: How much is the Personal plan?\n")
    assert answered(plain, example) == (
        " Personal is $4 a month, or $40 a year, with 200 GB.\n"
        " Family is $10 a month for 2 TB shared by up to 6 people.<|im_end|>"
    )


def test_truncation_keeps_the_first_tokens_and_drops_conversations_without_answers(
    tokenizer: Any,
) -> None:
    messages = [ChatMessage(role, text) for role, text in CONVERSATIONS[0]]  # type: ignore[arg-type]
    full = encode(messages, tokenizer, 512)
    cut = encode(messages, tokenizer, 40)
    assert full is not None and cut is not None
    assert cut.input_ids == full.input_ids[:40] and cut.labels == full.labels[:40]
    assert encode(messages, tokenizer, 5) is None


def test_malformed_lines_are_named_and_skipped_or_stop_strict_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_data(tmp_path / "data.jsonl")
    with path.open("a") as file:
        file.write("\n{not json\n")
        file.write(json.dumps({"messages": [{"role": "user", "content": "only a question"}]}))
        file.write("\n" + json.dumps({"messages": [{"role": "robot", "content": "hi"}]}) + "\n")
    with caplog.at_level(logging.WARNING):
        conversations = read_conversations(path)
    assert len(conversations) == len(CONVERSATIONS)
    warnings = [r.getMessage() for r in caplog.records]
    assert any(f"{path}:6: not JSON" in w for w in warnings)
    assert any(f"{path}:7: no assistant message" in w for w in warnings)
    assert any(f"{path}:8: message 1 has role 'robot'" in w for w in warnings)
    with pytest.raises(TrainingError, match=r"data\.jsonl:6: not JSON"):
        read_conversations(path, strict=True)


async def answer_with(folder: Path) -> str:
    backend = LocalBackend(ModelConfig(name=str(folder), max_new_tokens=8, context_window=256))
    await backend.start()
    try:
        text = ""
        params = GenerationParams(max_new_tokens=8)
        async for delta in backend.stream([ChatMessage("user", "How much is Personal?")], params):
            text += delta
        return text
    finally:
        await backend.close()


async def test_training_lowers_the_loss_and_the_folder_serves(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from bot.training.train import train

    result = train(settings(tmp_path, tiny_model_dir), ModelConfig())
    assert result.steps == 12 and not result.interrupted
    assert result.losses[-1] < result.losses[0]
    assert result.before is not None and result.after is not None
    assert result.after.loss < result.before.loss
    out = result.out
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "chat_template.jinja").is_file() or "chat_template" in (
        out / "tokenizer_config.json"
    ).read_text()
    assert not (out / "checkpoints").exists()
    card = (out / "README.md").read_text()
    assert "data.jsonl" in card and f"{result.after.perplexity:.2f}" in card
    assert f"{result.before.perplexity:.2f}" in card and "| learning rate | 0.003 |" in card
    assert await answer_with(out)


async def test_a_lora_export_is_merged_and_serves(tmp_path: Path, tiny_model_dir: Path) -> None:
    from bot.training.train import train

    result = train(settings(tmp_path, tiny_model_dir, lora=True, lr=1e-2), ModelConfig())
    assert result.after is not None and result.before is not None
    assert result.after.loss < result.before.loss
    assert not (result.out / "adapter_config.json").exists()
    assert "LoRA rank 16, merged" in (result.out / "README.md").read_text()
    assert await answer_with(result.out)


def test_ctrl_c_leaves_a_checkpoint_that_resume_finishes(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from transformers import TrainerCallback

    from bot.training.train import train

    class CtrlC(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 3:
                os.kill(os.getpid(), signal.SIGINT)

    first = settings(tmp_path, tiny_model_dir, max_steps=6, save_steps=100)
    stopped = train(first, ModelConfig(), callbacks=[CtrlC()])
    assert stopped.interrupted and stopped.steps in (3, 4)
    assert list((first.out / "checkpoints").glob("checkpoint-*"))
    assert not (first.out / "config.json").exists()

    import dataclasses

    resumed = train(dataclasses.replace(first, resume=True), ModelConfig())
    assert not resumed.interrupted and resumed.steps == 6
    assert (first.out / "config.json").is_file()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("empty", "no conversations to train on"),
        ("unknown-model", "neither a local folder nor in the Hugging Face cache"),
        ("existing-out", "already exists: pass --overwrite"),
        ("strict", "data.jsonl:3: not JSON"),
        ("nothing-to-resume", "no checkpoint to resume from"),
    ],
)
def test_bad_input_stops_with_one_line(
    case: str,
    expected: str,
    tmp_path: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = write_data(tmp_path / "data.jsonl", CONVERSATIONS[:2])
    out = tmp_path / "tuned"
    args = ["train", "--data", str(data), "--out", str(out), "--model", str(tiny_model_dir)]
    if case == "empty":
        data.write_text("\n")
    elif case == "unknown-model":
        args[-1] = "no-such-org/no-such-model"
    elif case == "existing-out":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "strict":
        with data.open("a") as file:
            file.write("{oops\n")
        args.append("--strict")
    elif case == "nothing-to-resume":
        args.append("--resume")
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("parley: ") and expected in err
    assert len(err.splitlines()) == 1
    if case == "existing-out":
        assert (out / "keep.txt").read_text() == "mine"


async def _rated_conversations(config: Config) -> None:
    store = build_store(config)
    await store.open()
    liked = ConversationKey("web", "", "tab-1")
    other = ConversationKey("web", "", "tab-2")
    try:
        await store.append(liked, "user", "Hi, I'm ann@example.com, how much is Personal?")
        await store.append(liked, "assistant", "Personal is $4 a month.", message_id="r1")
        await store.append(liked, "user", "Refund?")
        await store.append(liked, "assistant", "It failed", status="failed", message_id="r2")
        await store.append(liked, "user", "And Family?")
        await store.append(liked, "assistant", "Family is $10 a month.", message_id="r3")
        await store.append(liked, "user", "And Business?")
        await store.append(liked, "assistant", "Business is $8 per user.", message_id="r4")
        await store.reset(liked)
        await store.append(liked, "user", "New topic")
        await store.append(liked, "assistant", "Sure.", message_id="r5")
        await store.append(other, "user", "Is it down?")
        await store.append(other, "assistant", "See the status page.", message_id="r6")
        assert await store.add_feedback(liked, "r3", "u1", "up")
        assert await store.add_feedback(liked, "r4", "u1", "down")
        assert await store.add_feedback(liked, "r5", "u1", "down")
    finally:
        await store.close()


async def _export(config: Config, out: Path) -> int:
    store = build_store(config)
    await store.open()
    try:
        return await export_training(store, "any", out)
    finally:
        await store.close()


def test_export_writes_rated_conversations_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store_config: StoreConfig
) -> None:
    asyncio.run(_rated_conversations(Config(store=store_config)))

    config = tmp_path / "parley.toml"
    url = f'url = "{store_config.url}"\n' if store_config.url else ""
    config.write_text(f'[store]\npath = "{store_config.path}"\n{url}')
    out = tmp_path / "rated.jsonl"
    assert cli.main(["--config", str(config), "export-training", "--out", str(out)]) == 0
    assert "1 conversations written" in capsys.readouterr().out
    (conversation,) = read_conversations(out, strict=True)
    assert conversation[0].role == "system" and "Acme Cloud" in conversation[0].content
    assert [(m.role, m.content) for m in conversation[1:]] == [
        ("user", "Hi, I'm [email], how much is Personal?"),
        ("assistant", "Personal is $4 a month."),
        ("user", "And Family?"),
        ("assistant", "Family is $10 a month."),
    ]

    assert asyncio.run(_export(Config(store=store_config), out)) == 3
    texts = [[m.content for m in c] for c in read_conversations(out, strict=True)]
    assert ["New topic", "Sure."] in texts and ["Is it down?", "See the status page."] in texts
    assert all("It failed" not in t and "Refund?" not in t for t in texts)
