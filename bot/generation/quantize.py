"""Optional int8 dynamic quantisation of a model's Linear layers (CPU only).

Weights are stored as int8 with a per-channel scale and activations are quantised on the fly, so
a matrix product reads a quarter of the bytes and uses the CPU's integer dot-product units. The
bench prints the cost in greedy agreement and perplexity beside the speed (README, Performance).

A reply must not depend on who else is being served. PyTorch's dynamic kernel takes one activation
scale for the whole input, so a step's rows would share one: a customer's numbers, and so their
greedy reply, would change with the other conversations in flight (the same 32 conversations gave
1,090 tokens in one run and 1,061 in the next). ``row_scaled`` gives each row a scale of its own
with the same kernel: it scales every row to the same range before the product (a guard row pins
the kernel's range to exactly that) and back after. Integer products are exact, so a row's
result is the same bit for bit whatever rows share its step (``tests/test_quantize.py``), and each
row keeps all 7 bits of the range instead of a share of the largest row's.

Every Linear is quantised, the output layer and each MLP's ``down_proj`` included: with one
scale per row their int8 costs little (held-out perplexity on this project's documents: float32
52.1, this 58.5; the per-tensor scale gave 175 for every Linear and 61-64 even with those two
kept in float), and no float product is left whose BLAS kernel rounds a row differently with the
number of rows beside it (MKL's float32 one does below 12 rows).
"""

from __future__ import annotations

import functools
import gc
import logging
import warnings
from typing import Any

__all__ = ["is_quantized", "quantize_int8", "row_scaled"]

log = logging.getLogger(__name__)


def quantize_int8(model: Any) -> Any:
    """The model with its ``nn.Linear`` layers replaced by dynamically quantised ones, each
    input row quantised with its own scale.

    Returns the model unchanged (with a warning in the log) when it is not on the CPU: the
    quantised kernels exist only there.
    """
    import torch

    device = next(model.parameters()).device
    if device.type != "cpu":
        log.warning("model.quantize = 'int8' is CPU only; keeping %s on %s", model.dtype, device)
        return model
    with warnings.catch_warnings():
        # torch.ao.quantization and its qint8 tensors are deprecated in favour of torchao, which
        # this machine lacks; the API still works and is what the measured speed-up comes from.
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        # One scale per output channel: per-tensor scales lose more of the small rows.
        spec = {
            name: per_channel_dynamic_qconfig
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)
        }
        quantized: Any = quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    for name in spec:
        parent, _, child = name.rpartition(".")
        holder = quantized.get_submodule(parent) if parent else quantized
        setattr(holder, child, row_scaled(getattr(holder, child)))
    # A model loaded from safetensors reads its weights from the file mapped into memory, and
    # that mapping stays resident as long as any weight points into it: the float weights left
    # (the embedding), and the replaced layers until the collector frees the reference cycles
    # they are in. Copying out the first and collecting the second unmaps it: on the bundled
    # model the service's peak at N = 32 fell from about 1,880 to 1,352 MB.
    for parameter in quantized.parameters():
        parameter.data = parameter.data.clone()
    gc.collect()
    return quantized


def is_quantized(model: Any) -> bool:
    """Whether some of ``model``'s Linear layers are dynamically quantised (``quantize_int8``)."""
    return any(getattr(module, "row_scaled", False) for module in model.modules())


def row_scaled(inner: Any) -> Any:
    """``inner``, a dynamically quantised Linear, quantising each input row with its own scale."""
    return _row_scaled_class()(inner)


@functools.cache
def _row_scaled_class() -> type:
    # Built on first use: the rest of the service imports torch lazily.
    import torch

    class RowScaledLinear(torch.nn.Module):
        """A dynamically quantised Linear whose every input row is quantised with its own scale.

        Each row is scaled so that its largest magnitude is 1, and a guard row holding -1 and 1
        is appended, so the kernel's per-tensor range is exactly [-1, 1] whatever the batch; the
        products are scaled back row by row. The guard costs one more row of a product that
        streams its weights once, whatever the rows.
        """

        row_scaled = True
        guard: torch.Tensor

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner
            self.in_features = inner.in_features
            self.out_features = inner.out_features
            guard = torch.zeros(1, inner.in_features)
            guard[0, 0], guard[0, 1] = -1.0, 1.0
            self.register_buffer("guard", guard, persistent=False)

        def forward(self, x: Any) -> Any:
            rows = x.reshape(-1, self.in_features)
            # The smallest normal float keeps an all-zero row at zero instead of NaN.
            peak = rows.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
            # Never past 1 in magnitude (which would move the kernel's range): a division rounds
            # correctly, and 1 is a float.
            scaled = torch.cat([rows / peak, self.guard])
            out = self.inner(scaled)[:-1].mul_(peak)
            return out.reshape(*x.shape[:-1], self.out_features)

    return RowScaledLinear
