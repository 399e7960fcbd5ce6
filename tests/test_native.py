"""The native bf16 decode attention (bot/generation/native.py, decode_attention.c)."""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bot.generation import native
from bot.generation.engine import _additive
from bot.generation.packing import Packing, attend

CAN_BUILD = "avx512f" in Path("/proc/cpuinfo").read_text() and shutil.which("cc") is not None


@pytest.fixture
def fresh_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Build into an empty cache, and forget that build afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    native.kernel_library.cache_clear()
    yield
    native.kernel_library.cache_clear()


def _reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, lengths: list[int]):
    """Each row's attention over exactly its positions, in float64."""
    heads, kv_heads = query.shape[1], key.shape[1]
    out = torch.empty(1, len(lengths), heads, query.shape[3], dtype=torch.float64)
    for row, length in enumerate(lengths):
        for head in range(heads):
            kv = head // (heads // kv_heads)
            q = query[0, head, row].double()
            k, v = key[row, kv, :length].double(), value[row, kv, :length].double()
            weights = torch.softmax(k @ q / math.sqrt(q.numel()), dim=0)
            out[0, row, head] = weights @ v
    return out


@pytest.mark.skipif(not CAN_BUILD, reason="needs a C compiler and an AVX-512 CPU")
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(9, 3, 64), (4, 2, 16), (8, 8, 128)])
def test_each_row_reads_exactly_its_own_positions(
    fresh_kernel: None, heads: int, kv_heads: int, head_dim: int
) -> None:
    """Rows of different lengths (one of a single position) in a cache with more rows and
    positions than they use, whose unused positions hold NaN: the kernel never reads them, and
    each row's output is its exact attention to within bf16 rounding."""
    torch.manual_seed(0)
    lengths = [1, 37, 5, 120, 64]
    key = torch.full((7, kv_heads, 130, head_dim), math.nan, dtype=torch.bfloat16)
    value = torch.full_like(key, math.nan)
    for row, length in enumerate(lengths):
        key[row, :, :length] = torch.randn(kv_heads, length, head_dim) * 2
        value[row, :, :length] = torch.randn(kv_heads, length, head_dim)
    # As the model hands it over: [1, heads, tokens, d] viewed from [1, tokens, heads, d], with
    # a prompt chunk's tokens after the decoding rows'.
    query = torch.randn(1, len(lengths) + 3, heads, head_dim, dtype=torch.bfloat16).transpose(1, 2)
    counts = torch.tensor(lengths, dtype=torch.int32)

    out = native.decode_attention(query, key, value, counts, len(lengths), head_dim**-0.5)

    assert out is not None and out.shape == (1, len(lengths), heads, head_dim)
    expected = _reference(query, key, value, lengths)
    torch.testing.assert_close(out.double(), expected, atol=1e-2, rtol=1e-2)
    # The engine's attention takes this route for its decoding rows in bf16.
    kv_len = max(lengths)
    allowed = torch.arange(kv_len)[None, :] < counts[:, None]
    packing = Packing(
        len(lengths),
        counts - 1,
        kv_len,
        _additive(allowed[:, None, None, :], torch.bfloat16),
        lengths=counts,
    )
    layer = type("Layer", (), {"num_key_value_groups": heads // kv_heads, "is_causal": True})
    routed, _ = attend(layer, query[:, :, : len(lengths)], key, value, None, parley_packing=packing)
    assert torch.equal(routed, out)


def test_shapes_it_does_not_handle_are_left_to_pytorch() -> None:
    query = torch.randn(1, 4, 2, 24, dtype=torch.bfloat16)  # head_dim 24
    cache = torch.randn(2, 2, 8, 24, dtype=torch.bfloat16)
    lengths = torch.tensor([3, 8], dtype=torch.int32)
    assert native.decode_attention(query, cache, cache, lengths, 2, 0.2) is None
    # float32 stays on transformers' route (the one generate() takes).
    query, cache = query[..., :16].float(), cache[..., :16].float()
    assert native.decode_attention(query, cache, cache, lengths, 2, 0.25) is None


def test_without_a_compiler_the_engine_keeps_pytorch_attention(
    fresh_kernel: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CC", "no-such-compiler")
    query = torch.randn(1, 4, 2, 16, dtype=torch.bfloat16)
    cache = torch.randn(2, 2, 8, 16, dtype=torch.bfloat16)
    lengths = torch.tensor([3, 8], dtype=torch.int32)
    with caplog.at_level(logging.WARNING, logger="bot.generation.native"):
        assert native.decode_attention(query, cache, cache, lengths, 2, 0.25) is None
        assert native.decode_attention(query, cache, cache, lengths, 2, 0.25) is None
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "native decode attention unavailable, using PyTorch's: no C compiler "
        "(no-such-compiler) on PATH"
    ]
