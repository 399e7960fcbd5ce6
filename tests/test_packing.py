"""The packed attention of one engine round against each row's attention computed on its own."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from bot.generation.packing import Chunk, Packing, additive_mask, attend

HEADS, KV_HEADS, HEAD_DIM = 6, 2, 16
# What transformers' attention functions read from the attention layer.
LAYER = SimpleNamespace(num_key_value_groups=HEADS // KV_HEADS, is_causal=True)
SCALING = HEAD_DIM**-0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_token_attends_to_its_own_row_and_positions(dtype: torch.dtype) -> None:
    """Three decoding rows of different lengths and a prompt chunk in the middle of its row,
    in one call: each part equals that row's attention alone (decode rows over exactly their
    positions, the chunk causally), so no token sees another request's keys or its padding."""
    torch.manual_seed(0)
    lengths = [12, 30, 7]  # decoding rows 0-2: positions already cached
    chunk_row, start, count = 3, 5, 9  # row 3: prompt positions 5 .. 13 in this round
    key = torch.randn(4, KV_HEADS, 40, HEAD_DIM, dtype=dtype)
    value = torch.randn(4, KV_HEADS, 40, HEAD_DIM, dtype=dtype)
    query = torch.randn(1, HEADS, len(lengths) + count, HEAD_DIM, dtype=dtype)

    kv_len = max(lengths) + 1
    positions = torch.tensor(lengths)
    decode_allowed = torch.arange(kv_len)[None, :] <= positions[:, None]
    chunk_allowed = (
        torch.arange(start + count)[None, :] <= torch.arange(start, start + count)[:, None]
    )
    chunk = Chunk(
        chunk_row, start, count, len(lengths), additive_mask(chunk_allowed[None, None], dtype)
    )
    packing = Packing(
        len(lengths),
        positions,
        kv_len,
        additive_mask(decode_allowed[:, None, None, :], dtype),
        (chunk,),
    )
    packed, _ = attend(LAYER, query, key, value, None, parley_packing=packing, scaling=SCALING)

    def alone(q: torch.Tensor, row: int, upto: int, mask: torch.Tensor | None) -> torch.Tensor:
        out, _ = sdpa_attention_forward(
            LAYER,
            q,
            key[row : row + 1, :, :upto],
            value[row : row + 1, :, :upto],
            mask,
            scaling=SCALING,
            is_causal=False,
        )
        return out

    assert packed.shape == (1, len(lengths) + count, HEADS, HEAD_DIM)
    for row, length in enumerate(lengths):
        expected = alone(query[:, :, row : row + 1], row, length + 1, None)
        torch.testing.assert_close(packed[:, row : row + 1], expected)
    # The prompt chunk takes SDPA's grouped-query route on a CPU: bit-identical, not just close.
    expected = alone(
        query[:, :, len(lengths) :], chunk_row, start + count, chunk_allowed[None, None]
    )
    assert torch.equal(packed[:, len(lengths) :], expected)
