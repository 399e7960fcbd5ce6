"""What the generation tests compare the engine with: ``model.generate``'s greedy reply."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def greedy_reference(model: Any, prompt: list[int], max_new: int, eos: Sequence[int]) -> list[int]:
    """The token ids ``model.generate`` writes after ``prompt``, greedy, one request alone."""
    import torch

    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=list(eos),
            pad_token_id=eos[0],
        )
    return list(out[0, len(prompt) :].tolist())
