"""bf16 Linear weights laid out once for oneDNN (bot/generation/prepack.py): same outputs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from bot.generation.prepack import PackedLinear, prepack_bf16_linears


def _model(folder: Path, dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).eval()


def test_packed_bf16_model_gives_bit_for_bit_the_same_logits_and_replies(
    tiny_model_dir: Path,
) -> None:
    plain = _model(tiny_model_dir, torch.bfloat16)
    packed = copy.deepcopy(plain)
    linears = sum(type(m) is torch.nn.Linear for m in plain.modules())
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        # A CPU without bf16 units for oneDNN: the model is left as it is.
        assert prepack_bf16_linears(packed) == 0 and type(packed.lm_head) is torch.nn.Linear
        return
    assert prepack_bf16_linears(packed) == linears > 0
    assert not any(type(m) is torch.nn.Linear for m in packed.modules())
    assert isinstance(packed.lm_head, PackedLinear)
    prompt = torch.tensor([list(range(100, 140))])
    with torch.inference_mode():
        # A prompt (many rows per product) and one token (a lone decode step).
        for ids in (prompt, prompt[:, :1]):
            assert torch.equal(plain(ids).logits, packed(ids).logits)
        greedy = {"max_new_tokens": 12, "do_sample": False}
        assert torch.equal(plain.generate(prompt, **greedy), packed.generate(prompt, **greedy))


def test_a_float32_model_is_left_as_it_is(tiny_model_dir: Path) -> None:
    model = _model(tiny_model_dir, torch.float32)
    assert prepack_bf16_linears(model) == 0
    assert type(model.lm_head) is torch.nn.Linear
