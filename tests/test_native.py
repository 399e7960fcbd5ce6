"""The native decode attention (bot/generation/native.py, decode_attention.c): over a bf16 cache
with AVX-512, over a float32 one with AVX2 and FMA."""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bot.generation import native
from bot.generation.base import GenerationParams
from bot.generation.engine import Engine, Request
from bot.generation.packing import Packing, additive_mask, attend

_FLAGS = set(
    next(
        (ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), ""
    )
    .split(":")[-1]
    .split()
)
_CC = shutil.which("cc") is not None
NEEDS_BF16 = pytest.mark.skipif(
    not (_CC and "avx512f" in _FLAGS), reason="needs a C compiler and an AVX-512 CPU"
)
NEEDS_F32 = pytest.mark.skipif(
    not (_CC and {"avx2", "fma"} <= _FLAGS), reason="needs a C compiler and an AVX2 CPU"
)


@pytest.fixture
def fresh_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Build into an empty cache, and forget that build afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    native.attention_library.cache_clear()
    native.amx_library.cache_clear()
    yield
    native.attention_library.cache_clear()
    native.amx_library.cache_clear()


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


@pytest.mark.parametrize(
    ("dtype", "tolerance"),
    [
        pytest.param(torch.bfloat16, 1e-2, marks=NEEDS_BF16, id="bf16"),
        pytest.param(torch.float32, 1e-5, marks=NEEDS_F32, id="float32"),
    ],
)
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(9, 3, 64), (4, 2, 16), (8, 8, 128)])
def test_each_row_reads_exactly_its_own_positions(
    fresh_kernel: None,
    heads: int,
    kv_heads: int,
    head_dim: int,
    dtype: torch.dtype,
    tolerance: float,
) -> None:
    """Rows of different lengths (one of a single position, some not a multiple of the vector
    width) in a cache with more rows and positions than they use, whose unused positions hold
    NaN: the kernel never reads them, and each row's output is its exact attention to within
    the dtype's rounding."""
    torch.manual_seed(0)
    lengths = [1, 37, 5, 120, 64]
    key = torch.full((7, kv_heads, 130, head_dim), math.nan, dtype=dtype)
    value = torch.full_like(key, math.nan)
    for row, length in enumerate(lengths):
        key[row, :, :length] = torch.randn(kv_heads, length, head_dim) * 2
        value[row, :, :length] = torch.randn(kv_heads, length, head_dim)
    # As the model hands it over: [1, heads, tokens, d] viewed from [1, tokens, heads, d], with
    # a prompt chunk's tokens after the decoding rows'.
    query = torch.randn(1, len(lengths) + 3, heads, head_dim, dtype=dtype).transpose(1, 2)
    counts = torch.tensor(lengths, dtype=torch.int32)

    out = native.decode_attention(query, key, value, counts, len(lengths), head_dim**-0.5)

    assert out is not None and out.shape == (1, len(lengths), heads, head_dim)
    expected = _reference(query, key, value, lengths)
    torch.testing.assert_close(out.double(), expected, atol=tolerance, rtol=tolerance)
    # The engine's attention takes this route for its decoding rows when it gives lengths.
    kv_len = max(lengths)
    allowed = torch.arange(kv_len)[None, :] < counts[:, None]
    packing = Packing(
        len(lengths),
        counts - 1,
        kv_len,
        additive_mask(allowed[:, None, None, :], dtype),
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
    # More rows than the cache holds.
    query, cache = query[..., :16], cache[..., :16]
    assert native.decode_attention(query, cache, cache, lengths, 3, 0.25) is None
    # Dtypes without a kernel, or a query and cache of different dtypes.
    assert (
        native.decode_attention(query.half(), cache.half(), cache.half(), lengths, 2, 0.25) is None
    )
    assert native.decode_attention(query.float(), cache, cache, lengths, 2, 0.25) is None


@pytest.mark.parametrize(
    ("compiler", "said"),
    [
        ("no-such-compiler", "no C compiler (no-such-compiler) on PATH"),
        ("false", "false failed: 1"),
    ],
)
def test_without_a_working_compiler_attention_stays_pytorch_s(
    fresh_kernel: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    compiler: str,
    said: str,
) -> None:
    monkeypatch.setenv("CC", compiler)
    query = torch.randn(1, 4, 2, 16, dtype=torch.bfloat16)
    cache = torch.randn(2, 2, 8, 16, dtype=torch.bfloat16)
    lengths = torch.tensor([3, 8], dtype=torch.int32)
    with caplog.at_level(logging.WARNING, logger="bot.generation.native"):
        assert native.decode_attention(query, cache, cache, lengths, 2, 0.25) is None
        assert native.decode_attention(query, cache, cache, lengths, 2, 0.25) is None
    # One line, once.
    assert [r.getMessage() for r in caplog.records] == [
        f"native decode attention unavailable, using PyTorch's: {said}"
    ]


@pytest.mark.parametrize(
    ("kind", "enabled", "used"),
    [
        pytest.param("bfloat16", True, True, marks=NEEDS_BF16),
        pytest.param("bfloat16", False, False, marks=NEEDS_BF16),
        pytest.param("int8", True, True, marks=NEEDS_F32),
        pytest.param("int8", False, False, marks=NEEDS_F32),
        # Its sums in another order would not keep a float32 model's replies generate()'s.
        pytest.param("float32", True, False, marks=NEEDS_F32),
    ],
)
def test_the_engine_uses_the_kernel_in_bf16_and_int8_unless_switched_off(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, kind: str, enabled: bool, used: bool
) -> None:
    """model.native_kernels: on, every decode step's attention goes through the kernel (bf16,
    and an int8 model's float32 cache); off, or a float32 model, none does; either way each
    reply gets all its tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bot.generation.quantize import quantize_int8

    dtype = torch.bfloat16 if kind == "bfloat16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=dtype)
    if kind == "int8":
        model = quantize_int8(model)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    calls: list[int] = []
    kernel = native.decode_attention

    def counted(*args: object, **kwargs: object) -> torch.Tensor | None:
        out = kernel(*args, **kwargs)  # type: ignore[arg-type]
        calls.append(0 if out is None else out.shape[1])
        return out

    monkeypatch.setattr(native, "decode_attention", counted)
    engine = Engine(model.eval(), tokenizer, 4, 256, native_attention=enabled)
    engine.eos_ids = frozenset()  # the random model may end early; count its tokens
    params = GenerationParams(max_new_tokens=6, temperature=0.0)
    requests = [Request(list(range(100, 100 + n)), params, lambda *a: None) for n in (5, 17)]
    for request in requests:
        engine.submit(request)
    while engine.busy:
        engine.step()
    assert [len(r.output_ids) for r in requests] == [6, 6]
    layers = model.config.num_hidden_layers
    # Five decode steps for each reply, both replies' rows in one call where they overlap.
    assert (len(calls) >= 5 * layers and all(calls)) if used else calls == []
