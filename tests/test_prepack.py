"""Linear products laid out for the CPU (bot/generation/prepack.py): bf16 weights laid out once
(oneDNN's layout gives the same outputs bit for bit; Parley's AMX kernel the same products to
within bf16 rounding, each row's the same whatever else is in the batch)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from bot.generation import native
from bot.generation.prepack import (
    AmxLinear,
    PackedLinear,
    cpu_has_bf16_units,
    prepack_bf16_linears,
)

HAS_AMX = "amx_bf16" in Path("/proc/cpuinfo").read_text()


def _model(folder: Path, dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).eval()


def test_onednn_laid_out_bf16_model_gives_bit_for_bit_the_same_logits_and_replies(
    tiny_model_dir: Path,
) -> None:
    plain = _model(tiny_model_dir, torch.bfloat16)
    packed = copy.deepcopy(plain)
    linears = sum(type(m) is torch.nn.Linear for m in plain.modules())
    if not cpu_has_bf16_units():
        # A CPU without bf16 units for oneDNN: the model is left as it is.
        assert prepack_bf16_linears(packed) == 0 and type(packed.lm_head) is torch.nn.Linear
        return
    assert prepack_bf16_linears(packed, native=False) == linears > 0
    assert all(type(m) is not torch.nn.Linear for m in packed.modules())
    assert isinstance(packed.lm_head, PackedLinear)
    prompt = torch.tensor([list(range(100, 140))])
    with torch.inference_mode():
        # A prompt (many rows per product) and one token (a lone decode step).
        for ids in (prompt, prompt[:, :1]):
            assert torch.equal(plain(ids).logits, packed(ids).logits)
        greedy = {"max_new_tokens": 12, "do_sample": False}
        assert torch.equal(plain.generate(prompt, **greedy), packed.generate(prompt, **greedy))


@pytest.mark.skipif(not HAS_AMX, reason="needs a CPU with AMX")
def test_amx_products_match_and_do_not_depend_on_the_batch() -> None:
    """Rows 1-70 (one or two tiles of rows, and more than one block of 32), inputs that are
    strided views: within bf16 rounding of the exact product, and each row's output bit for bit
    the same whether it is computed alone or with any number of others."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 64, bias=False).to(torch.bfloat16)
    packed = native.pack_for_amx(linear.weight)
    assert packed is not None
    layer = AmxLinear(linear, packed)
    wide = torch.randn(70, 2 * 96, dtype=torch.bfloat16)
    x = wide[:, ::2]  # every other column: rows 2 * 96 apart, not contiguous
    with torch.inference_mode():
        whole = layer(x)
        exact = x.double() @ linear.weight.double().T
        torch.testing.assert_close(whole.double(), exact, atol=2e-2, rtol=1e-2)
        for rows in (1, 5, 16, 17, 32, 33, 64):
            assert torch.equal(layer(x[:rows]), whole[:rows])
        assert torch.equal(layer(x[40:41]), whole[40:41])
        # As the model calls it: [batch, tokens, features], contiguous or rows apart.
        assert torch.equal(layer(x.reshape(2, 35, 96)), whole.reshape(2, 35, 64))
        wide[:, :96] = x
        assert torch.equal(layer(wide[:, :96]), whole)


@pytest.mark.skipif(not HAS_AMX, reason="needs a CPU with AMX")
def test_amx_laid_out_model_answers_like_the_plain_one(tiny_model_dir: Path) -> None:
    plain = _model(tiny_model_dir, torch.bfloat16)
    tiled = copy.deepcopy(plain)
    linears = sum(type(m) is torch.nn.Linear for m in plain.modules())
    assert prepack_bf16_linears(tiled) == linears
    assert all(type(m) not in (torch.nn.Linear, PackedLinear) for m in tiled.modules())
    assert isinstance(tiled.lm_head, AmxLinear)
    prompt = torch.tensor([list(range(100, 140))])
    with torch.inference_mode():
        for ids in (prompt, prompt[:, :1]):
            mine, theirs = tiled(ids).logits.float(), plain(ids).logits.float()
            torch.testing.assert_close(mine, theirs, atol=0.05, rtol=0.02)
            assert torch.equal(mine.argmax(-1), theirs.argmax(-1))


def test_shapes_the_amx_kernel_does_not_take_stay_with_onednn() -> None:
    assert native.pack_for_amx(torch.randn(64, 48, dtype=torch.bfloat16)) is None  # 48 inputs
    assert native.pack_for_amx(torch.randn(40, 64, dtype=torch.bfloat16)) is None  # 40 outputs
    assert native.pack_for_amx(torch.randn(64, 64)) is None  # float32
    with_bias = torch.nn.Sequential(torch.nn.Linear(64, 64).to(torch.bfloat16))
    if cpu_has_bf16_units():
        assert prepack_bf16_linears(with_bias) == 1 and type(with_bias[0]) is PackedLinear


def test_a_float32_model_is_left_as_it_is(tiny_model_dir: Path) -> None:
    model = _model(tiny_model_dir, torch.float32)
    assert prepack_bf16_linears(model) == 0
    assert type(model.lm_head) is torch.nn.Linear


def test_without_the_amx_kernel_the_weights_go_to_onednn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No working compiler (or no AMX): one line says so, and the model still gets oneDNN's
    laid-out weights."""
    if not cpu_has_bf16_units():
        pytest.skip("a CPU without bf16 units keeps nn.Linear")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "false")
    native.amx_library.cache_clear()
    try:
        model = torch.nn.Sequential(*[torch.nn.Linear(64, 64, bias=False) for _ in range(2)])
        with caplog.at_level(logging.WARNING, logger="bot.generation.native"):
            assert prepack_bf16_linears(model.to(torch.bfloat16)) == 2
        assert [type(m) for m in model] == [PackedLinear, PackedLinear]
        assert [r.getMessage() for r in caplog.records] == [
            "native AMX products unavailable, using oneDNN's: false failed: 1"
        ]
    finally:
        native.amx_library.cache_clear()
