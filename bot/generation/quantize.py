"""Optional int8 dynamic quantisation of a model's Linear layers (CPU only).

Weights are stored as int8 with a per-channel scale and activations are quantised on the fly, so
every matrix product reads a quarter of the bytes and uses the CPU's integer dot-product units.
On a 2-core machine that roughly doubles a batched decode step (see README, Performance); the
bench prints its cost in greedy agreement and perplexity beside the speed.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

__all__ = ["quantize_int8"]

log = logging.getLogger(__name__)


def quantize_int8(model: Any) -> Any:
    """The model with its ``nn.Linear`` layers replaced by dynamically quantised ones.

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
        spec = {torch.nn.Linear: per_channel_dynamic_qconfig}
        quantized: Any = quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    return quantized
