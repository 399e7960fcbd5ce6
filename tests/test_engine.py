"""The batching engine's scheduling, driven step by step on the tiny model (no thread)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config
from bot.generation.base import ChatMessage, GenerationParams
from bot.generation.engine import Engine, Request
from bot.generation.local import LocalBackend
from bot.generation.sampling import greedy_tokens
from tests.conftest import make_config
from tests.reference import greedy_reference


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    return model.eval(), tokenizer


class Log:
    """What a request received: deltas in order, and how it ended."""

    def __init__(self) -> None:
        self.deltas: list[str] = []
        self.done = False
        self.error: BaseException | None = None

    def __call__(self, delta: str, done: bool, error: BaseException | None) -> None:
        if delta:
            self.deltas.append(delta)
        self.done = self.done or done
        self.error = self.error or error


def _engine(model_and_tokenizer: tuple[Any, Any], **args: Any) -> Engine:
    model, tokenizer = model_and_tokenizer
    args.setdefault("max_batch_size", 8)
    engine = Engine(model, tokenizer, context_window=512, **args)
    engine.eos_ids = frozenset()  # the random model may end early; these tests count tokens
    return engine


def _request(length: int, max_new: int) -> tuple[Request, Log]:
    log = Log()
    return Request(
        list(range(100, 100 + length)), GenerationParams(max_new_tokens=max_new), log
    ), log


def _run(engine: Engine, limit: int = 1000) -> None:
    for _ in range(limit):
        if not engine.busy:
            return
        engine.step()
    raise AssertionError("the engine did not finish")


def test_concurrent_requests_share_each_decode_step(model_and_tokenizer: tuple[Any, Any]) -> None:
    engine = _engine(model_and_tokenizer)
    requests = [_request(10 + i, 20) for i in range(6)]
    for request, _ in requests:
        engine.submit(request)
    _run(engine)
    assert [(len(r.output_ids), log.done, log.error) for r, log in requests] == [
        (20, True, None)
    ] * 6
    # One after another would take 6 × 20 steps; batched, about 20.
    assert engine.steps <= 21


def test_a_request_joins_the_running_batch_at_the_next_step(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    engine = _engine(model_and_tokenizer)
    first, _ = _request(12, 40)
    engine.submit(first)
    for _ in range(5):
        engine.step()
    second, _ = _request(12, 10)
    engine.submit(second)
    engine.step()
    assert second.output_ids  # it did not wait for the first to drain
    _run(engine)
    assert len(first.output_ids) == 40 and len(second.output_ids) == 10


def test_a_long_prompt_is_prefilled_in_chunks_while_others_keep_decoding(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    engine = _engine(model_and_tokenizer, prefill_chunk_tokens=16)
    forwards: list[int] = []
    hook = engine.model.register_forward_hook(lambda module, args, out: forwards.append(1))
    short, _ = _request(8, 30)
    engine.submit(short)
    engine.step()
    long, _ = _request(160, 5)
    engine.submit(long)
    try:
        while not long.output_ids:
            before = len(short.output_ids)
            engine.step()
            assert len(short.output_ids) == before + 1
    finally:
        hook.remove()
    # 160 tokens in chunks of 16 (less what the short one's prompt used), each chunk in the
    # same forward as the short one's next token.
    assert len(short.output_ids) >= 10
    assert len(forwards) == engine.steps
    _run(engine)


def test_finished_and_cancelled_requests_free_their_row_for_the_queue(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    engine = _engine(model_and_tokenizer, max_batch_size=2)
    a, a_log = _request(10, 50)
    b, _ = _request(10, 3)
    c, _ = _request(10, 6)
    d, _ = _request(10, 6)
    for request in (a, b, c, d):
        engine.submit(request)
    engine.step()
    assert not c.output_ids and not d.output_ids  # two rows only
    for _ in range(3):
        engine.step()
    assert len(b.output_ids) == 3 and c.output_ids  # b left, c took its row at once
    engine.abort(a.id)
    engine.step()
    assert a_log.done and a_log.error is None
    assert d.output_ids  # a's row went to d the step after the abort
    _run(engine)
    assert len(a.output_ids) < 50 and len(c.output_ids) == 6 and len(d.output_ids) == 6


def test_a_failed_forward_fails_its_requests_and_the_engine_goes_on(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    engine = _engine(model_and_tokenizer)
    decoding, decoding_log = _request(10, 20)
    engine.submit(decoding)
    engine.step()
    prefilling, prefilling_log = _request(12, 5)
    engine.submit(prefilling)

    def out_of_memory(module: Any, args: Any, kwargs: Any) -> None:
        raise RuntimeError("out of memory")

    hook = engine.model.register_forward_pre_hook(out_of_memory, with_kwargs=True)
    try:
        engine.step()  # one forward: the first one's next token and the second one's prompt
    finally:
        hook.remove()
    for log in (decoding_log, prefilling_log):
        assert log.done and isinstance(log.error, RuntimeError)
    assert engine.load == 0
    later, later_log = _request(10, 4)
    engine.submit(later)
    _run(engine)
    assert len(later.output_ids) == 4 and later_log.done and later_log.error is None


def test_tokens_in_flight_limit_makes_requests_wait_not_grow(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    engine = _engine(model_and_tokenizer, max_tokens_in_flight=100)
    big, _ = _request(60, 20)
    small, _ = _request(10, 5)
    lone, _ = _request(150, 2)
    engine.submit(big)
    engine.submit(small)
    engine.step()
    assert big.output_ids and not small.output_ids  # 2 rows × 80 positions > 100
    assert engine.cache.cells <= 128  # one row, rounded up
    _run(engine)
    assert len(small.output_ids) == 5
    engine.submit(lone)  # alone it may exceed the limit: it would never run otherwise
    _run(engine)
    assert len(lone.output_ids) == 2


def test_stop_string_ends_one_request_and_not_its_neighbours(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    engine = _engine(model_and_tokenizer)
    tokenizer = model_and_tokenizer[1]
    prompt = list(range(300, 320))
    free_log = Log()
    free = Request(prompt, GenerationParams(max_new_tokens=12), free_log)
    engine.submit(free)
    _run(engine)
    text = "".join(free_log.deltas)
    assert text == tokenizer.decode(free.output_ids, skip_special_tokens=True)
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop.strip(), f"the random model wrote a blank middle: {text!r}"
    cut_log, other_log = Log(), Log()
    cut = Request(prompt, GenerationParams(max_new_tokens=12, stop=(stop,)), cut_log)
    other = Request(prompt, GenerationParams(max_new_tokens=12), other_log)
    engine.submit(cut)
    engine.submit(other)
    _run(engine)
    assert "".join(cut_log.deltas) == text[: text.index(stop)]
    assert "".join(other_log.deltas) == text


@asynccontextmanager
async def _started(tiny_model_dir: Path, tmp_path: Path, **model: Any) -> AsyncIterator[Any]:
    """A local backend on the tiny model with these ``model`` settings, closed after the block."""
    config: Config = make_config(tiny_model_dir, tmp_path, **model)
    backend = LocalBackend(config.model)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


async def test_int8_backend_answers(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Its own copy of the model, so no other test's model maps the same file.
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    async with _started(model_dir, tmp_path, quantize="int8") as backend:
        messages = [ChatMessage("user", "How do I reset my password?")]
        params = GenerationParams(max_new_tokens=6)
        text = "".join([d async for d in backend.stream(messages, params)])
        assert text
        assert backend.loaded is not None
        model = backend.loaded.model
        layer = model.model.layers[0]
        assert "Quantized" in repr(layer.self_attn.q_proj) and "Quantized" in repr(
            layer.mlp.up_proj
        )
        assert "Quantized" in repr(layer.mlp.down_proj) and "Quantized" in repr(model.lm_head)
        # The model file, read through a mapping, is no longer mapped: neither those
        # weights nor the replaced layers' keep its pages in memory.
        assert not _mapped(model_dir)


def _mapped(folder: Path) -> set[str]:
    """The files of ``folder`` mapped into this process's memory (Linux)."""
    prefix = str(folder.resolve())
    paths = (line.split()[5:6] for line in Path("/proc/self/maps").read_text().splitlines())
    return {path[0] for path in paths if path and path[0].startswith(prefix)}


async def test_bfloat16_backend_answers_on_the_cpu(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """model.dtype = "bfloat16" on the CPU: weights, key/value cache and attention mask all in
    bf16, the Linear weights laid out for AMX or oneDNN where the CPU has bf16 units (else a
    warning that bf16 is emulated), and a lone greedy reply the same as generate()'s in bf16."""
    import torch

    from bot.generation.prepack import cpu_has_bf16_units

    async with _started(tiny_model_dir, tmp_path, device="cpu", dtype="bfloat16") as backend:
        messages = [ChatMessage("user", "How do I reset my password?")]
        params = GenerationParams(max_new_tokens=8)
        text = "".join([d async for d in backend.stream(messages, params)])
        loaded, engine = backend.loaded, backend._engine
        assert loaded is not None and engine is not None
        assert loaded.model.dtype == torch.bfloat16 and engine.cache.dtype == torch.bfloat16
        emulated = [r for r in caplog.records if "PyTorch emulates it" in r.getMessage()]
        if cpu_has_bf16_units():
            assert type(loaded.model.lm_head).__name__ in ("AmxLinear", "PackedLinear")
            assert not emulated
        else:
            assert len(emulated) == 1 and emulated[0].levelname == "WARNING"
        prompt = backend._parts()[1].encode(messages)
        reference = greedy_reference(loaded.model, prompt, 8, sorted(engine.eos_ids))
        expected = loaded.tokenizer.decode(reference, skip_special_tokens=True)
        assert text and text == expected


def test_a_repetition_penalty_steers_away_from_tokens_already_written(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    engine = _engine(model_and_tokenizer)
    plain, _ = _request(12, 40)
    strict = Request(
        list(plain.prompt_ids), GenerationParams(max_new_tokens=40, repetition_penalty=1e6), Log()
    )
    for request in (plain, strict):
        engine.submit(request)
    _run(engine)
    # The random model repeats itself when left alone; under an overwhelming penalty it does not.
    assert len(set(plain.output_ids)) < len(plain.output_ids)
    assert len(set(strict.output_ids)) == len(strict.output_ids) == 40


def test_the_greedy_pick_is_argmax_with_its_tie_rule() -> None:
    import torch

    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 49152, generator=generator)
    logits[1, 100] = logits[1, 40000] = 50.0  # a tie in different blocks: the first wins
    logits[2, 130] = logits[2, 129] = 50.0  # a tie inside a block
    logits[3] = float("-inf")  # nothing allowed: argmax says 0
    logits[4, 7000] = float("nan")  # argmax takes NaN as the largest
    logits[5, 49151] = 50.0  # the very last token
    assert greedy_tokens(logits) == logits.argmax(dim=-1).tolist()
    assert greedy_tokens(logits)[:3] == [greedy_tokens(logits)[0], 100, 129]
    odd = logits[:, :1000]  # not a multiple of the block, and not contiguous
    assert greedy_tokens(odd) == odd.argmax(dim=-1).tolist()
    bf16 = logits.bfloat16()
    assert greedy_tokens(bf16) == bf16.argmax(dim=-1).tolist()
