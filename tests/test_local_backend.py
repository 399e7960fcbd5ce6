"""The local transformers backend through its public API, on the tiny random model."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.config import Config
from bot.core.conversation import ConversationManager
from bot.errors import Busy, ModelLoadError
from bot.generation.base import ChatMessage, GenerationParams
from bot.generation.detok import IncrementalDecoder
from bot.generation.local import LocalBackend
from bot.storage.base import Turn
from bot.storage.sqlite import SQLiteStore
from tests.conftest import make_config

QUESTION = [
    ChatMessage("system", "You are a support assistant."),
    ChatMessage("user", "How do I reset my password?"),
]


@pytest.fixture
async def backend(tiny_config: Config) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(tiny_config.model)
    await backend.start()
    yield backend
    await backend.close()


async def _until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    async with asyncio.timeout(seconds):
        # The engine thread changes these counters; there is no event to wait on.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_stream_yields_text_and_honours_max_new_tokens(backend: LocalBackend) -> None:
    assert backend.loaded is not None
    tokenizer = backend.loaded.tokenizer
    deltas = [d async for d in backend.stream(QUESTION, GenerationParams(max_new_tokens=9))]
    text = "".join(deltas)
    assert text and len(deltas) > 1
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 9 + 2


async def test_greedy_is_deterministic_and_sampling_uses_its_seed(backend: LocalBackend) -> None:
    async def run(params: GenerationParams) -> str:
        return "".join([d async for d in backend.stream(QUESTION, params)])

    greedy = GenerationParams(max_new_tokens=10)
    assert await run(greedy) == await run(greedy)
    sampled = GenerationParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    assert await run(sampled) == await run(sampled)


async def test_stop_string_ends_the_reply_before_it(backend: LocalBackend) -> None:
    # Seeded sampling: the random model's greedy output is too monotonous to cut.
    params = GenerationParams(max_new_tokens=12, temperature=1.0, top_p=1.0, seed=3)
    full = await _consume(backend, params)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), f"seeded sample has a blank middle: {full!r}"
    params = dataclasses.replace(params, stop=(stop,))
    cut = await _consume(backend, params)
    assert cut == full[: full.index(stop)]


async def test_cancelling_a_stream_frees_its_place(backend: LocalBackend) -> None:
    params = GenerationParams(max_new_tokens=200)
    async with contextlib.aclosing(backend.stream(QUESTION, params)) as stream:
        await anext(stream)
        assert backend.in_flight == 1
    assert backend.in_flight == 0
    engine = backend._engine
    assert engine is not None
    await _until(lambda: engine.load == 0)

    task = asyncio.create_task(_consume(backend, params))
    await _until(lambda: engine.load == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(lambda: engine.load == 0)
    assert backend.in_flight == 0


async def _consume(backend: LocalBackend, params: GenerationParams) -> str:
    return "".join([d async for d in backend.stream(QUESTION, params)])


async def test_busy_when_the_admission_queue_is_full(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = make_config(tiny_model_dir, tmp_path, max_batch_size=1, queue_size=1)
    backend = LocalBackend(config.model)
    await backend.start()
    params = GenerationParams(max_new_tokens=500)
    holders = [asyncio.create_task(_consume(backend, params)) for _ in range(2)]
    await _until(lambda: backend.in_flight == 2)
    with pytest.raises(Busy):
        await _consume(backend, params)
    for task in holders:
        task.cancel()
    await asyncio.gather(*holders, return_exceptions=True)
    assert backend.in_flight == 0
    await backend.close()


async def test_concurrent_streams_all_complete(backend: LocalBackend) -> None:
    params = GenerationParams(max_new_tokens=8)
    alone = await _consume(backend, params)
    together = await asyncio.gather(*[_consume(backend, params) for _ in range(4)])
    assert together == [alone] * 4


async def test_trimming_fits_the_window_and_keeps_the_newest_turns(
    backend: LocalBackend, tmp_path: Path, tiny_config: Config
) -> None:
    manager = ConversationManager(
        SQLiteStore(tmp_path / "x.db"), backend, tiny_config.bot, tiny_config.model
    )
    now = datetime.now(UTC)
    history = [
        Turn(
            "user" if i % 2 == 0 else "assistant", f"turn {i}: " + "words and more words " * 6, now
        )
        for i in range(60)
    ]
    prompt = manager.answerer.build_prompt(history, "the current question")
    budget = backend.context_window - tiny_config.model.max_new_tokens
    assert backend.count_tokens(prompt.messages) <= budget
    assert prompt.messages[0].role == "system"
    assert prompt.messages[-1].content == "the current question"
    kept = prompt.messages[1:-1]
    assert 0 < len(kept) < 60
    assert [m.content for m in kept] == [t.content for t in history[-len(kept) :]]
    # One more turn would not have fitted.
    longer = [prompt.messages[0], ChatMessage("user", history[-len(kept) - 1].content)]
    assert backend.count_tokens([*longer, *prompt.messages[1:]]) > budget
    assert not prompt.cut


async def test_a_message_longer_than_the_window_is_cut_with_a_note(
    backend: LocalBackend, tmp_path: Path, tiny_config: Config
) -> None:
    manager = ConversationManager(
        SQLiteStore(tmp_path / "x.db"), backend, tiny_config.bot, tiny_config.model
    )
    prompt = manager.answerer.build_prompt([], "please help " * 2000)
    assert prompt.cut
    budget = backend.context_window - tiny_config.model.max_new_tokens
    assert backend.count_tokens(prompt.messages) <= budget
    assert prompt.messages[-1].content.startswith("please help")


def test_incremental_decoding_keeps_multibyte_characters_whole(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    text = "Grüße aus Köln 😀 — naïve café, 東京 and 👍🏽 done"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(i) for i in ids]
    assert "".join(deltas) + decoder.flush() == text
    assert not any("\ufffd" in d for d in deltas)


def test_stop_strings_are_held_back_until_they_cannot_match(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    ids = tokenizer("Hello there\nCustomer: next", add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer, stop=("\nCustomer:",))
    shown = "".join(decoder.push(i) for i in ids) + decoder.flush()
    assert shown == "Hello there"
    assert decoder.stopped


async def test_a_missing_model_is_a_clear_error(tmp_path: Path, tiny_config: Config) -> None:
    model = dataclasses.replace(tiny_config.model, name="no-such-org/no-such-model")
    backend = LocalBackend(model)
    with pytest.raises(ModelLoadError, match="allow_download"):
        await backend.start()
