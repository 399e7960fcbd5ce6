"""bf16 Linear weights laid out once for the CPU's matrix units, instead of at every call.

On a CPU, a bf16 ``nn.Linear`` runs through oneDNN, which first rearranges the weight into the
blocked layout its AMX / AVX512-BF16 kernels read, on every call: for this model's small
matrices that rearranging costs as much as the product. ``torch.ops.mkldnn`` keeps a weight
rearranged once (PyTorch's own compiler does the same when it freezes a model), so each call is
the product alone. Outputs are bit for bit the same (tests/test_prepack.py); on the bundled
model a 32-row decode step takes about 15 % less time and a lone reply about 25 % less
(README, Performance).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

__all__ = ["PackedLinear", "prepack_bf16_linears"]

log = logging.getLogger(__name__)


def prepack_bf16_linears(model: torch.nn.Module) -> int:
    """Replace the ``nn.Linear`` layers of a bf16 model on a CPU with ``PackedLinear``, in
    place; how many were replaced (0 on other devices or dtypes, or a CPU without bf16 units).

    For inference only: the packed weights take no gradient."""
    parameter = next(model.parameters())
    if not (
        parameter.device.type == "cpu"
        and parameter.dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    ):
        return 0
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and child.weight.dtype == torch.bfloat16:
                setattr(parent, name, PackedLinear(child))
                replaced += 1
    log.info("bf16 weights of %d linear layers laid out for oneDNN", replaced)
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
