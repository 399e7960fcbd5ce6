"""The engine's one native kernel (decode_attention.c), built on first use for this machine.

It is compiled with the system C compiler (``$CC`` or ``cc``) for the CPU it runs on, cached
under ``$XDG_CACHE_HOME/parley/kernels`` (``~/.cache/...``) by a hash of its source, flags and
CPU, and loaded with ctypes: no build step at install, nothing downloaded. Where it cannot be
built (no compiler, a CPU without AVX-512) ``decode_attention`` is None, one line says why, and
the engine keeps PyTorch's attention.
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

__all__ = ["decode_attention", "kernel_library"]

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("decode_attention.c")
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared"]
_HEAD_DIMS = (16, 32, 64, 128)
_MAX_GROUP = 8


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
    (not bf16 on a CPU, another shape, or no kernel on this machine)."""
    heads, head_dim = query.shape[1], query.shape[3]
    kv_heads = key.shape[1]
    if not (
        query.device.type == "cpu"
        and query.dtype == key.dtype == value.dtype == torch.bfloat16
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
    library = kernel_library()
    if library is None:
        return None
    out = torch.empty((1, rows, heads, head_dim), dtype=query.dtype)
    failed = library.parley_decode_attention(
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


@cache
def kernel_library() -> Any:
    """The loaded kernel, built if needed; None (said once) where it cannot be built."""
    try:
        library = ctypes.CDLL(str(_build()))
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("native decode attention unavailable, using PyTorch's: %s", exc)
        return None
    function = library.parley_decode_attention
    pointer, stride, number = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    function.argtypes = [
        *(pointer, stride, stride),
        *(pointer, pointer, stride, stride, stride),
        *(pointer, number, number, number, number, ctypes.c_float, pointer, number),
    ]
    function.restype = ctypes.c_int
    return library


def _build() -> Path:
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise OSError(f"no C compiler ({os.environ.get('CC', 'cc')}) on PATH")
    source = _SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join([compiler, *_FLAGS]).encode() + _cpu()).hexdigest()
    folder = _cache_dir()
    target = folder / f"decode_attention-{digest[:16]}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    # Built beside its final name, then renamed: another process never loads half a file.
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        built = Path(scratch) / target.name
        result = subprocess.run(
            [compiler, *_FLAGS, "-o", str(built), str(_SOURCE), "-lm"],
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
