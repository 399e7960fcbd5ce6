"""The key/value memory of every running request: one row per request in a preallocated buffer.

Each layer keeps one ``[rows, kv_heads, length, head_dim]`` tensor for keys and one for values.
A request owns a row for its whole life; its tokens sit at positions ``0 .. len - 1`` of that
row, so nothing is ever recomputed and no request's cache depends on another's. The engine keeps
the rows of decoding requests contiguous at the front, so a decode step reads one slice view of
the buffer (no gather) and masks each row past its own length.

The object is handed to the model's own ``forward`` as its cache: the model calls ``update`` once
per layer with the new keys and values; ``plan`` says, before each forward, which rows and
positions the new tokens belong to (a ``Packing``, see packing.py).
"""

from __future__ import annotations

from typing import Any

from bot.generation.packing import Packing

__all__ = ["SlotCache"]

# Growth granularity: few reallocations, little slack.
_ROW_STEP = 4
_LENGTH_STEP = 16
# While growing, freed pages go back to the system after this many tensors: each trim costs a
# few milliseconds on the engine thread, and between trims the old tensors still take memory.
_TRIM_EVERY = 8


class SlotCache:
    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype: Any, device: Any) -> None:
        import torch

        self._torch = torch
        self.layers = layers
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = device
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.rows = 0
        self.length = 0
        self._packing = Packing()
        self._row_index: Any = None

    @classmethod
    def for_model(cls, model: Any) -> SlotCache:
        config = (
            model.config.get_text_config()
            if hasattr(model.config, "get_text_config")
            else model.config
        )
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        parameter = next(model.parameters())
        dtype = parameter.dtype
        if not dtype.is_floating_point:  # a quantised model keeps float activations
            import torch

            dtype = torch.float32
        return cls(config.num_hidden_layers, kv_heads, head_dim, dtype, parameter.device)

    @property
    def cells(self) -> int:
        """Token positions allocated (rows × length)."""
        return self.rows * self.length

    @property
    def bytes_per_token(self) -> int:
        element = self._torch.tensor([], dtype=self.dtype).element_size()
        return 2 * self.layers * self.kv_heads * self.head_dim * element

    def reserve(self, rows: int, length: int, in_use: int, max_cells: int = 0) -> None:
        """Make room for ``rows`` rows of ``length`` positions, keeping rows ``< in_use``; the
        rounding up never takes more than ``max_cells`` positions (unless the request does)."""
        if rows <= self.rows and length <= self.length:
            return
        new_length = max(self.length, -(-length // _LENGTH_STEP) * _LENGTH_STEP)
        new_rows = max(self.rows, -(-rows // _ROW_STEP) * _ROW_STEP)
        if max_cells:
            new_rows = max(rows, min(new_rows, max_cells // new_length))
        shape = (new_rows, self.kv_heads, new_length, self.head_dim)
        if not self.keys:
            self.keys, self.values = [None] * self.layers, [None] * self.layers
        # One tensor at a time, each old one dropped as soon as it is copied: growing costs a
        # few layers' worth of memory on top, not a second copy of the whole cache.
        grown = 0
        for tensors in (self.keys, self.values):
            for layer, old in enumerate(tensors):
                # Zeros, not empty: masked positions still enter the weighted sum (as weight
                # 0 × value), and uninitialised memory may hold NaN, which 0 × NaN spreads.
                new = self._torch.zeros(shape, dtype=self.dtype, device=self.device)
                if in_use and old is not None:
                    new[:in_use, :, : self.length] = old[:in_use]
                tensors[layer] = new
                del old
                grown += 1
                if grown % _TRIM_EVERY == 0:
                    _give_back_freed_memory()
        _give_back_freed_memory()
        self.rows, self.length = new_rows, new_length
        self._row_index = None

    def release(self) -> None:
        """Give the memory back (the engine is idle)."""
        self.keys, self.values = [], []
        self.rows = self.length = 0
        self._row_index = None
        _give_back_freed_memory()

    def move(self, source: int, target: int, upto: int) -> None:
        """Copy row ``source``'s first ``upto`` positions onto row ``target``."""
        if source == target or upto <= 0:
            return
        for tensor in (*self.keys, *self.values):
            tensor[target, :, :upto] = tensor[source, :, :upto]

    def swap(self, a: int, b: int, upto: int) -> None:
        if a == b or upto <= 0:
            return
        for tensor in (*self.keys, *self.values):
            saved = tensor[a, :, :upto].clone()
            tensor[a, :, :upto] = tensor[b, :, :upto]
            tensor[b, :, :upto] = saved

    # -- the plan for the next forward ---------------------------------------------------------
    def plan(self, packing: Packing) -> None:
        """Which rows and positions the next forward's tokens belong to (see packing.py)."""
        if self._row_index is None or self._row_index.numel() < packing.decoding:
            self._row_index = self._torch.arange(self.rows, device=self.device)
        self._packing = packing

    # -- what the model calls -----------------------------------------------------------------
    def update(
        self, key_states: Any, value_states: Any, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[Any, Any]:
        """Store the forward's new keys and values ``[1, kv_heads, T, head_dim]`` in their rows;
        the whole layer goes back to ``packing.attend``, which reads each row's part."""
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        packing = self._packing
        if packing.decoding:
            index = self._row_index[: packing.decoding]
            new = slice(0, packing.decoding)
            keys[index, :, packing.positions] = key_states[0, :, new].transpose(0, 1)
            values[index, :, packing.positions] = value_states[0, :, new].transpose(0, 1)
        for chunk in packing.chunks:
            new = slice(chunk.offset, chunk.offset + chunk.count)
            keys[chunk.row, :, chunk.start : chunk.end] = key_states[0, :, new]
            values[chunk.row, :, chunk.start : chunk.end] = value_states[0, :, new]
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        # Only consulted when no position ids are given; the engine always gives them.
        return 0


def _give_back_freed_memory() -> None:
    """Return freed heap pages to the system (glibc). Without it the old tensors of a grown
    cache stay resident: glibc keeps large freed blocks on its heap for reuse, and a bigger
    cache cannot reuse them."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> Any:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()
