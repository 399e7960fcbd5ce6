"""bf16 Linear weights laid out once for the CPU's matrix units, instead of at every call.

On a CPU, a bf16 ``nn.Linear`` runs through oneDNN, which first rearranges the weight into the
blocked layout its AMX / AVX512-BF16 kernels read, on every call: for this model's small
matrices that rearranging costs as much as the product. Two ways round it, both chosen once at
load:

- ``AmxLinear``: on a CPU with AMX, Parley's own product kernel (amx_linear.c, built by
  native.py) over weights laid out in its tiles. With a decode step's few rows it streams the
  weights about 1.7-1.8 times as fast as oneDNN, and each row's sums run in the same order
  whatever the number of rows: a reply's numbers do not depend on what shares its step.
- ``PackedLinear``: elsewhere, or with ``model.native_kernels = false``, ``torch.ops.mkldnn``
  keeps the weight rearranged once (PyTorch's own compiler does the same when it freezes a
  model), so each call is oneDNN's product alone, bit for bit the same as ``nn.Linear``.

README, Performance, has the figures; tests/test_prepack.py the checks.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from bot.generation.native import amx_linear, pack_for_amx

__all__ = [
    "AmxLinear",
    "PackedLinear",
    "cpu_has_bf16_units",
    "prepack_bf16_linears",
]

log = logging.getLogger(__name__)


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 itself (AVX512-BF16 or AMX). Elsewhere PyTorch emulates
    bf16 in float32: on an AVX2-only CPU a decode step at 32 rows took 3.2 times as long as in
    float32 (README, Performance)."""
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def prepack_bf16_linears(model: torch.nn.Module, native: bool = True) -> int:
    """Replace the ``nn.Linear`` layers of a bf16 model on a CPU with ``AmxLinear`` where
    ``native`` and the AMX kernel can take them, else ``PackedLinear``, in place; how many
    were replaced (0 on other devices or dtypes, or a CPU without bf16 units).

    For inference only: the laid-out weights take no gradient."""
    parameter = next(model.parameters())
    if not (
        parameter.device.type == "cpu"
        and parameter.dtype == torch.bfloat16
        and cpu_has_bf16_units()
    ):
        return 0
    replaced = tiled = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and child.weight.dtype == torch.bfloat16:
                packed = pack_for_amx(child.weight) if native and child.bias is None else None
                layer = PackedLinear(child) if packed is None else AmxLinear(child, packed)
                setattr(parent, name, layer)
                replaced += 1
                tiled += packed is not None
    log.info(
        "bf16 weights of %d linear layers laid out (%d for AMX, the rest for oneDNN)",
        replaced,
        tiled,
    )
    return replaced


class PackedLinear(torch.nn.Module):
    """An ``nn.Linear`` whose weight oneDNN has already rearranged."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        # An opaque oneDNN tensor, so a plain attribute rather than a parameter.
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> Any:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed"


class AmxLinear(torch.nn.Module):
    """An ``nn.Linear`` without bias whose weight is laid out for Parley's AMX kernel."""

    def __init__(self, linear: torch.nn.Linear, packed: torch.Tensor) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.packed_weight = packed

    def forward(self, x: torch.Tensor) -> Any:
        return amx_linear(x, self.packed_weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, AMX tiles"
