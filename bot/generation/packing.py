"""One forward for a whole engine round: every decoding row's next token and every prompt chunk.

The engine lays the round's tokens out side by side in one sequence, ``[1, T]``: first one token
for each decoding row (rows ``0 .. decoding - 1`` of the cache), then each prompt chunk. The
model's layers work token by token, so its matrix products see all ``T`` tokens at once (many
rows per product is what makes them fast on a CPU or GPU); only attention must know whose token
is whose. ``attend`` is registered with transformers as the ``"parley"`` attention: given the
round's ``Packing`` it runs the decoding tokens as one batched attention over their cache rows
(on a CPU, in bf16 or for an int8 model, through the native kernel, native.py, which reads each
row only up to its own length), and each chunk against its own row; without one
(``model.generate``, the tests' references) it is transformers' own SDPA attention, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ATTENTION", "Chunk", "Packing", "additive_mask", "use_packed_attention"]

#: The name under which ``attend`` is registered with transformers.
ATTENTION = "parley"


@dataclass(frozen=True)
class Chunk:
    """Prompt tokens ``start .. start + count - 1`` of cache row ``row``, at ``offset`` in the
    round's sequence; ``mask`` [1, 1, count, start + count] is their causal mask (0 / -inf)."""

    row: int
    start: int
    count: int
    offset: int
    mask: Any

    @property
    def end(self) -> int:
        return self.start + self.count


@dataclass(frozen=True)
class Packing:
    """What one forward holds: ``decoding`` rows' next tokens at ``positions`` (a tensor), read
    over their first ``kv_len`` cache positions through ``decode_mask`` [decoding, 1, 1, kv_len]
    (None for a lone row: it reads them all; each row's own count, ``positions + 1``, is
    ``lengths``, int32), then ``chunks``."""

    decoding: int = 0
    positions: Any = None
    kv_len: int = 0
    decode_mask: Any = None
    chunks: tuple[Chunk, ...] = field(default=())
    lengths: Any = None


def attend(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    parley_packing: Packing | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention-function signature. With a packing, ``key`` and ``value`` are the
    layer's whole cache (``SlotCache.update``) and ``query`` is ``[1, heads, T, head_dim]``."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from bot.generation.native import decode_attention

    if parley_packing is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)  # type: ignore[no-any-return]
    packing = parley_packing
    # On a CPU, SDPA's own grouped-query path (each key/value head read by its group of query
    # heads, never copied per head) with an additive mask is faster than transformers' routes:
    # for prompt chunks by 13-25 % with bit-identical output (bf16 and fp32); for one-token
    # decode queries the native kernel is faster still (2-3x: README, Performance), in bf16
    # with SDPA's grouped path where it cannot run. A float32 model's decode stays on
    # transformers' route: faster there than SDPA's grouped path, and the one generate() takes
    # (an int8 model's, whose replies are not generate()'s anyway, takes the native kernel).
    cpu = query.device.type == "cpu"
    parts = []
    if packing.decoding:
        rows, kv_len = packing.decoding, packing.kv_len
        scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
        # The engine gives lengths only where the kernel may run; it checks the rest itself.
        native = (
            None
            if packing.lengths is None
            else decode_attention(query, key, value, packing.lengths, rows, scaling)
        )
        if native is not None:
            parts.append(native)
        else:
            # [1, heads, rows, d] -> [rows, heads, 1, d]: a batch of one-token queries.
            step = query[0, :, :rows].transpose(0, 1).unsqueeze(2)
            keys, values = key[:rows, :, :kv_len], value[:rows, :, :kv_len]
            if cpu and query.dtype == torch.bfloat16:
                out = _grouped(step, keys, values, packing.decode_mask, kwargs)
            else:
                out, _ = sdpa_attention_forward(
                    module, step, keys, values, packing.decode_mask, **kwargs
                )
            parts.append(out.transpose(0, 1))  # [rows, 1, heads, d] -> [1, rows, heads, d]
    for chunk in packing.chunks:
        queries = query[:, :, chunk.offset : chunk.offset + chunk.count]
        keys = key[chunk.row : chunk.row + 1, :, : chunk.end]
        values = value[chunk.row : chunk.row + 1, :, : chunk.end]
        if cpu:
            out = _grouped(queries, keys, values, chunk.mask, kwargs)
        else:
            out, _ = sdpa_attention_forward(module, queries, keys, values, chunk.mask, **kwargs)
        parts.append(out)
    return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)), None


def _grouped(query: Any, key: Any, value: Any, mask: Any, kwargs: dict[str, Any]) -> Any:
    """SDPA with grouped-query attention, laid out as transformers' attention functions
    return it: ``[batch, queries, heads, head_dim]``."""
    import torch

    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, scale=kwargs.get("scaling"), enable_gqa=True
    )
    return out.transpose(1, 2).contiguous()


def use_packed_attention(model: Any) -> None:
    """Switch ``model`` to ``attend``; its masks stay SDPA's, so calls without a packing (and
    ``model.generate``) behave exactly as before."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, attend)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)
    model.set_attn_implementation(ATTENTION)
    if model.config._attn_implementation != ATTENTION:
        raise RuntimeError(
            f"{type(model).__name__} does not take a pluggable attention function "
            "(transformers' AttentionInterface), which the local engine needs"
        )


def additive_mask(allowed: Any, dtype: Any) -> Any:
    """A boolean attention mask as 0 / -inf in the model's dtype: the CPU attention kernel
    adds a float mask faster than it applies a boolean one (bf16, 32 rows: about 15%)."""
    import torch

    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
        ~allowed, float("-inf")
    )
