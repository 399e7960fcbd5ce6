"""int8 replies do not depend on who else is being served (bot/generation/quantize.py)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from bot.generation.base import ChatMessage, GenerationParams
from bot.generation.engine import Engine, Request
from bot.generation.models import PromptFormat
from bot.generation.quantize import quantize_int8, row_scaled
from tests.test_engine import Log


def _quantized_linear(seed: int = 0) -> tuple[Any, Any]:
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    torch.manual_seed(seed)
    linear = torch.nn.Sequential(torch.nn.Linear(96, 160, bias=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(linear, {"0": per_channel_dynamic_qconfig}, dtype=torch.qint8)
    return linear[0], row_scaled(quantized[0])


def test_each_row_is_quantised_alone_whatever_shares_its_step() -> None:
    import torch

    linear, layer = _quantized_linear()
    # Rows five orders of magnitude apart, as a step's rows are not, but a shared scale's
    # failure shows best; and an all-zero row.
    rows = torch.randn(12, 96) * torch.logspace(-2, 3, 12)[:, None]
    rows[5] = 0
    together = layer(rows)
    for i in range(len(rows)):
        assert torch.equal(layer(rows[i : i + 1]), together[i : i + 1])
    assert torch.equal(layer(rows.flip(0)).flip(0), together)
    assert not together[5].any()
    # Each row keeps its own precision: within 3 % of float for every row, the smallest too.
    exact = linear(rows).detach()
    error = (together - exact).norm(dim=1) / exact.norm(dim=1).clamp_min(1e-30)
    assert float(error[torch.arange(12) != 5].max()) < 0.03


def test_a_lone_int8_reply_is_the_reply_it_gets_beside_seven_others(bundled_dir: Path) -> None:
    """Greedy, the bundled model in int8: one conversation decoded alone, then again with seven
    others in flight (joining before and after it, prompts of other lengths)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(bundled_dir))
    model = AutoModelForCausalLM.from_pretrained(str(bundled_dir), dtype=torch.float32)
    model = quantize_int8(model.eval())
    questions = [
        "How do I reset my password?",
        "Can I get a refund for the unused months if I downgrade from Pro to Basic?",
        "Hi",
        "The mobile app crashes when I open a PDF. What can I do? It started yesterday.",
        "Do you support two-factor authentication?",
        "Where can I find last year's invoices, and can they show my company's VAT number?",
        "Why is the dashboard so slow today?",
        "What happens to shared links when I delete a folder?",
    ]
    format_ = PromptFormat(tokenizer)
    prompts = [
        format_.encode(
            [ChatMessage("system", "You are a helpful support assistant."), ChatMessage("user", q)]
        )
        for q in questions
    ]

    def replies(order: list[int]) -> dict[int, list[int]]:
        engine = Engine(model, tokenizer, max_batch_size=8, context_window=1024)
        requests = {}
        for i in order:
            request = Request(prompts[i], GenerationParams(max_new_tokens=40), Log())
            requests[i] = request
            engine.submit(request)
            engine.step()  # the next one joins a step later, as customers do
        while engine.busy:
            engine.step()
        return {i: list(r.output_ids) for i, r in requests.items()}

    alone = {i: replies([i])[i] for i in (0, 3)}
    crowd = replies([2, 5, 0, 7, 1, 3, 6, 4])
    assert all(len(alone[i]) > 5 for i in alone)
    assert crowd[0] == alone[0]
    assert crowd[3] == alone[3]
