"""Greedy replies from the batching engine are token for token those of ``model.generate``.

Requests of different lengths join and leave at different steps, prompts are prefilled in small
chunks, shared beginnings of prompts are copied from another row's cache, and fewer rows than
requests force rows to be reused: none of it may change a token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.generation.base import GenerationParams
from bot.generation.engine import Engine, Request
from tests.reference import greedy_reference

QUESTIONS = [
    "How do I reset my password?",
    "hi",
    "I was charged twice for the same month on my invoice and I would like a refund, please. "
    "The second charge appeared on the third of the month, after I had already paid by card.",
    "Can I change the e-mail address of my account?",
    "Why is the dashboard so slow today? It takes a minute to open the billing page.",
]


def _load(folder: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    return model.eval(), tokenizer


def _prompt(tokenizer: Any, question: str, turns: int) -> list[int]:
    messages = [{"role": "system", "content": "You are the support assistant of Acme Cloud."}]
    for i in range(turns):
        messages += [
            {"role": "user", "content": f"Earlier question number {i}?"},
            {"role": "assistant", "content": f"Earlier answer number {i}, with some detail."},
        ]
    messages.append({"role": "user", "content": question})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _staggered(engine: Engine, requests: list[Request], joins: list[int]) -> None:
    """Submit request i before step ``joins[i]``, step until all are done."""
    step = 0
    pending = sorted(zip(joins, range(len(requests)), strict=True))
    while pending or engine.busy:
        while pending and pending[0][0] <= step:
            engine.submit(requests[pending.pop(0)[1]])
        engine.step()
        step += 1
        assert step < 2000, "the engine stopped making progress"


def _check(folder: Path, max_new: list[int], joins: list[int], **engine_args: Any) -> Engine:
    model, tokenizer = _load(folder)
    prompts = [_prompt(tokenizer, q, turns=i % 3) for i, q in enumerate(QUESTIONS)]
    engine = Engine(model, tokenizer, context_window=1024, **engine_args)
    eos = sorted(engine.eos_ids)
    expected = [greedy_reference(model, p, n, eos) for p, n in zip(prompts, max_new, strict=True)]
    done: list[int] = []
    requests = [
        Request(
            p, GenerationParams(max_new_tokens=n), lambda d, end, e, i=i: end and done.append(i)
        )
        for i, (p, n) in enumerate(zip(prompts, max_new, strict=True))
    ]
    _staggered(engine, requests, joins)
    assert sorted(done) == list(range(len(requests)))
    # The prompts share their system prompt: later ones copy it from a row in the cache, and
    # their tokens must not change for it.
    assert engine.reused > 0
    for i, (request, want) in enumerate(zip(requests, expected, strict=True)):
        assert request.output_ids == want, f"request {i} differs from model.generate"
    return engine


def test_greedy_matches_generate_with_joins_leaves_and_chunked_prefill(
    tiny_model_dir: Path,
) -> None:
    _check(
        tiny_model_dir,
        max_new=[24, 5, 30, 12, 18],
        joins=[0, 0, 3, 9, 10],
        max_batch_size=3,
        prefill_chunk_tokens=16,
    )


def test_greedy_matches_generate_when_all_arrive_together(tiny_model_dir: Path) -> None:
    engine = _check(
        tiny_model_dir,
        max_new=[16, 16, 16, 16, 16],
        joins=[0, 0, 0, 0, 0],
        max_batch_size=8,
        prefill_chunk_tokens=4096,
    )
    # All five prompts would fit one forward, but each later one waits a round to copy the
    # beginning they all share instead of computing it again.
    tokenizer = engine.tokenizer
    prompts = [_prompt(tokenizer, q, turns=i % 3) for i, q in enumerate(QUESTIONS)]
    columns = zip(*prompts, strict=False)  # up to the shortest prompt
    shared = next(i for i, column in enumerate(columns) if len(set(column)) > 1)
    assert shared > 16 and engine.reused >= 4 * shared


def test_a_lone_request_matches_generate_without_a_decode_mask(tiny_model_dir: Path) -> None:
    """Alone, a request's decode steps read its whole row: no mask, as in generate()'s own."""
    model, tokenizer = _load(tiny_model_dir)
    engine = Engine(model, tokenizer, max_batch_size=4, context_window=1024)
    prompt = _prompt(tokenizer, QUESTIONS[2], turns=2)
    expected = greedy_reference(model, prompt, 20, sorted(engine.eos_ids))
    masks = []
    plan = engine.cache.plan

    def noted(packing: Any) -> None:
        masks.append(packing.decode_mask)
        plan(packing)

    engine.cache.plan = noted  # type: ignore[method-assign]
    request = Request(prompt, GenerationParams(max_new_tokens=20), lambda *a: None)
    engine.submit(request)
    while engine.busy:
        engine.step()
    assert request.output_ids == expected
    assert len(masks) == len(expected) and all(m is None for m in masks)


@pytest.mark.bundled
def test_bundled_model_greedy_matches_generate(bundled_dir: Path) -> None:
    _check(
        bundled_dir,
        max_new=[20, 8, 24, 12, 16],
        joins=[0, 1, 2, 6, 12],
        max_batch_size=3,
        prefill_chunk_tokens=32,
    )
