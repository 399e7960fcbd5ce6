"""The engine's native kernels, built on first use for this machine: the decoding rows'
attention (decode_attention.c: over a bf16 cache with AVX-512, over a float32 one with AVX2)
and bf16 matrix products on AMX tiles (amx_linear.c).

Each is compiled with the system C compiler (``$CC`` or ``cc``) for the CPU it runs on, cached
under ``$XDG_CACHE_HOME/parley/kernels`` (``~/.cache/...``) by a hash of its source, flags and
CPU, and loaded with ctypes: no build step at install, nothing downloaded. Where one cannot be
built (no compiler, a CPU without the instructions it needs) its loader gives None, one line says
why, and the engine keeps PyTorch's attention or oneDNN's products.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "amx_library",
    "amx_linear",
    "attention_library",
    "decode_attention",
    "has_decode_attention",
    "pack_for_amx",
]

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared"]
_HEAD_DIMS = (16, 32, 64, 128)
_MAX_GROUP = 8
#: The attention kernel's entry point for each cache dtype; the library holds those its CPU runs.
_ATTENTION_KERNELS = {
    torch.bfloat16: "parley_decode_attention",
    torch.float32: "parley_decode_attention_f32",
}


def decode_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    lengths: torch.Tensor,
    rows: int,
    scaling: float,
) -> torch.Tensor | None:
    """Attention of decoding rows ``0 .. rows - 1``: row ``r``'s query is token ``r`` of
    ``query`` [1, heads, tokens, head_dim] and it reads positions ``0 .. lengths[r] - 1`` of
    row ``r`` of the layer's cache ``key``/``value`` [cache rows, kv_heads, positions,
    head_dim]. Returns [1, rows, heads, head_dim], or None where the kernel does not apply
    (not bf16 or float32 on a CPU, another shape, or no kernel for it on this machine).

    In float32 its sums run in another order than PyTorch's, so its results differ from
    ``generate()``'s in the last bits: the engine uses it only where the model's own products
    already do (int8)."""
    heads, head_dim = query.shape[1], query.shape[3]
    kv_heads = key.shape[1]
    if not (
        query.device.type == "cpu"
        and query.dtype == key.dtype == value.dtype
        and has_decode_attention(query.dtype)
        and head_dim in _HEAD_DIMS
        and heads % kv_heads == 0
        and heads // kv_heads <= _MAX_GROUP
        and query.stride(3) == key.stride(3) == value.stride(3) == 1
        and key.stride() == value.stride()
        and lengths.dtype == torch.int32
        and lengths.is_contiguous()
        # The C code trusts these bounds: stay inside every tensor it reads or writes.
        and 0 < rows <= min(query.shape[2], key.shape[0], lengths.numel())
    ):
        return None
    kernel = getattr(attention_library(), _ATTENTION_KERNELS[query.dtype])
    out = torch.empty((1, rows, heads, head_dim), dtype=query.dtype)
    failed = kernel(
        query.data_ptr(),
        query.stride(1),
        query.stride(2),
        key.data_ptr(),
        value.data_ptr(),
        key.stride(0),
        key.stride(1),
        key.stride(2),
        lengths.data_ptr(),
        rows,
        heads,
        kv_heads,
        head_dim,
        scaling,
        out.data_ptr(),
        torch.get_num_threads(),
    )
    if failed:
        raise RuntimeError(f"decode attention kernel failed (code {failed})")
    return out


def has_decode_attention(dtype: torch.dtype) -> bool:
    """Whether this machine has the decode attention kernel for a cache of ``dtype`` (building
    it on first ask)."""
    name = _ATTENTION_KERNELS.get(dtype)
    return name is not None and hasattr(attention_library(), name)


@cache
def attention_library() -> Any:
    """The decode attention kernels, built if needed; None (said once) where they cannot be."""
    try:
        library = ctypes.CDLL(str(_build("decode_attention.c")))
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("native decode attention unavailable, using PyTorch's: %s", exc)
        return None
    pointer, stride, number = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    for name in _ATTENTION_KERNELS.values():
        # Each is there only where this CPU can run it (decode_attention.c).
        function = getattr(library, name, None)
        if function is not None:
            function.argtypes = [
                *(pointer, stride, stride),
                *(pointer, pointer, stride, stride, stride),
                *(pointer, number, number, number, number, ctypes.c_float, pointer, number),
            ]
            function.restype = ctypes.c_int
    return library


def pack_for_amx(weight: torch.Tensor) -> torch.Tensor | None:
    """A Linear's bf16 ``weight`` [out, in] laid out as amx_linear.c reads it, or None where
    the kernel does not apply (not bf16, a size not a multiple of 32, no kernel here)."""
    out_features, in_features = weight.shape
    if not (
        weight.dtype == torch.bfloat16
        and weight.device.type == "cpu"
        and out_features % 32 == 0
        and in_features % 32 == 0
        and amx_library() is not None
    ):
        return None
    # [N/32, 2, 16, K/32, 16, 2] -> [N/32, K/32, 2, 16 input pairs, 16 outputs, 2]
    blocks = weight.detach().reshape(out_features // 32, 2, 16, in_features // 32, 16, 2)
    return blocks.permute(0, 3, 1, 4, 2, 5).contiguous()


def amx_linear(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` for a weight laid out by ``pack_for_amx``; ``x`` [..., in] in bf16."""
    out_features, in_features = packed.shape[0] * 32, packed.shape[1] * 32
    if x.dtype != torch.bfloat16 or x.shape[-1] != in_features:
        raise ValueError(f"expected bf16 [..., {in_features}], got {x.dtype} {list(x.shape)}")
    # Called 211 times a decode step: no reshaping views where the input is contiguous.
    rows = x if x.is_contiguous() else x.reshape(-1, in_features)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    count = rows.numel() // in_features
    row_stride = in_features if rows is x else rows.stride(0)
    out = torch.empty((*x.shape[:-1], out_features), dtype=torch.bfloat16)
    if count:
        failed = amx_library().parley_amx_linear(
            rows.data_ptr(),
            row_stride,
            count,
            in_features,
            packed.data_ptr(),
            out_features,
            out.data_ptr(),
            out_features,
            torch.get_num_threads(),
        )
        if failed:
            raise RuntimeError(f"AMX product kernel failed (code {failed})")
    return out


@cache
def amx_library() -> Any:
    """The AMX product kernel, built if needed and granted the tile registers; None (said
    once) where it cannot be."""
    try:
        library = ctypes.CDLL(str(_build("amx_linear.c")))
        if library.parley_amx_init() != 0:
            raise OSError("the system does not lend this process the AMX tile registers")
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("native AMX products unavailable, using oneDNN's: %s", exc)
        return None
    pointer, stride = ctypes.c_void_p, ctypes.c_long
    function = library.parley_amx_linear
    function.argtypes = [
        *(pointer, stride, stride, stride),
        *(pointer, stride, pointer, stride, ctypes.c_int),
    ]
    function.restype = ctypes.c_int
    return library


def _build(name: str) -> Path:
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise OSError(f"no C compiler ({os.environ.get('CC', 'cc')}) on PATH")
    path = _HERE / name
    source = path.read_bytes()
    digest = hashlib.sha256(source + " ".join([compiler, *_FLAGS]).encode() + _cpu()).hexdigest()
    folder = _cache_dir()
    target = folder / f"{path.stem}-{digest[:16]}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    # Built beside its final name, then renamed: another process never loads half a file.
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        built = Path(scratch) / target.name
        result = subprocess.run(
            [compiler, *_FLAGS, "-o", str(built), str(path), "-lm"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            first = next((ln for ln in result.stderr.splitlines() if "error" in ln), "")
            raise OSError(f"{Path(compiler).name} failed: {first.strip() or result.returncode}")
        os.replace(built, target)
    return target


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "parley" / "kernels"


def _cpu() -> bytes:
    """The CPU's model and flags: a cache shared between machines never serves a build for
    another CPU."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return b""
    wanted = [ln for ln in lines if ln.startswith(("model name", "flags"))][:2]
    return "\n".join(wanted).encode()
