"""The systems the generation bench compares, each run in its own process: Parley's local
backend (fp32, int8, bf16) and transformers' own ways (one ``generate()`` at a time, a static
batch, its continuous batching)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.quality import perplexity
from bench.workload import (
    MODEL_CACHE,
    NEW_TOKENS,
    ROOT,
    Measured,
    chat_messages,
    load_tokenizer,
    model_dir,
    pct,
    rss_mb,
)

PARLEY = ("parley-fp32", "parley-int8", "parley-bf16")

SYSTEMS = (*PARLEY, "generate-1by1", "generate-static", "generate-batch")


# -- the systems, each in its own process -------------------------------------------------------
def _parley_config(quantize: str, device: str, dtype: str = "auto") -> Any:
    from bot.config import ModelConfig

    return ModelConfig(
        name=str(model_dir()),
        device=device,  # type: ignore[arg-type]
        dtype=dtype,  # type: ignore[arg-type]
        cache_dir=str(MODEL_CACHE),
        max_new_tokens=NEW_TOKENS,
        temperature=0.0,
        quantize=quantize,  # type: ignore[arg-type]
    )


async def parley_run(
    backend: Any, conversations: list[Any], arrivals: list[float], new_tokens: int = NEW_TOKENS
) -> Measured:
    from bot.generation.base import GenerationParams

    params = GenerationParams(max_new_tokens=new_tokens, temperature=0.0)
    engine = backend._engine
    before = engine.generated
    start = time.perf_counter()

    async def one(conversation: Any, delay: float) -> tuple[float, float, str]:
        await asyncio.sleep(max(0.0, start + delay - time.perf_counter()))
        sent = time.perf_counter()
        first = None
        parts = []
        async for delta in backend.stream(chat_messages(conversation), params):
            first = first or time.perf_counter()
            parts.append(delta)
        end = time.perf_counter()
        return (first or end) - sent, end - sent, "".join(parts)

    results = await asyncio.gather(
        *[one(c, d) for c, d in zip(conversations, arrivals, strict=True)]
    )
    wall = time.perf_counter() - start
    return Measured(
        engine.generated - before,
        wall,
        [r[0] for r in results],
        [r[1] for r in results],
        rss_mb(),
        [r[2] for r in results],
    )


async def parley_worker(
    system: str, sizes: list[int], conversations: list[Any], args: Any, out: dict[str, Any]
) -> dict[str, Any]:
    backend = await parley_backend(system, args.device, conversations)
    try:
        for n in sizes:
            repeats = 3 if n == 1 else 1
            runs = [await parley_run(backend, conversations[:n], [0.0] * n) for _ in range(repeats)]
            best = sorted(runs, key=lambda m: m.wall)[len(runs) // 2]
            out["runs"][str(n)] = best.row() | {"outputs": best.outputs}
        if args.staggered and system == args.staggered_system:
            out["staggered"] = await _staggered(backend, conversations, args)
        loaded = backend.loaded
        if loaded is not None and args.perplexity:
            out["perplexity"] = perplexity(loaded.model, loaded.tokenizer)
    finally:
        await backend.close()
    return out


async def _staggered(backend: Any, conversations: list[Any], args: Any) -> dict[str, Any]:
    rng = random.Random(11)
    arrivals, clock = [], 0.0
    for _ in range(args.staggered):
        arrivals.append(clock)
        clock += rng.expovariate(args.rate)
    mix = [i % len(conversations) for i in range(args.staggered)]
    # The reference is each prompt of the mix alone (up to its first token): time to first token
    # grows with the prompt (0.08 s at 70 tokens, 0.26 s at 336 here), so a lone prompt shorter
    # or longer than the mix would mix up prompt length with load.
    alone = {}
    for i in sorted(set(mix)):
        alone[i] = (await parley_run(backend, [conversations[i]], [0.0], new_tokens=1)).ttft[0]
    measured = await parley_run(backend, [conversations[i] for i in mix], arrivals)
    lone = [alone[i] for i in mix]
    slowdown = [ttft / alone[i] for ttft, i in zip(measured.ttft, mix, strict=True)]
    return {
        "requests": args.staggered,
        "rate_per_s": args.rate,
        "lone_ttft_p50_s": round(pct(lone, 50), 3),
        "lone_ttft_p95_s": round(pct(lone, 95), 3),
        **measured.row(),
        "ttft_p99_s": round(pct(measured.ttft, 99), 3),
        "p95_over_lone": round(pct(measured.ttft, 95) / pct(lone, 95), 2),
        "slowdown_p95": round(pct(slowdown, 95), 2),
    }


def hf_worker(
    system: str, sizes: list[int], conversations: list[Any], args: Any, out: dict[str, Any]
) -> dict[str, Any]:
    import torch

    model, tokenizer, prompts, eos, device = hf_model(conversations, args.device)
    run = {"generate-1by1": one_by_one, "generate-static": _static, "generate-batch": _cb}[system]
    with torch.inference_mode():
        run(model, tokenizer, prompts[:2], eos, device)  # warm-up
        for n in sizes:
            repeats = 3 if n == 1 else 1
            runs = [run(model, tokenizer, prompts[:n], eos, device) for _ in range(repeats)]
            best = sorted(runs, key=lambda m: m.wall)[len(runs) // 2]
            out["runs"][str(n)] = best.row() | {"outputs": best.outputs}
    return out


def hf_model(conversations: list[Any], device: str) -> tuple[Any, Any, list[list[int]], Any, str]:
    """The plain transformers model the baselines run (fp32 on a CPU, bf16 on CUDA), with the
    conversations' prompt ids and its end-of-turn ids."""
    import torch
    from transformers import AutoModelForCausalLM

    from bot.generation.models import PromptFormat

    device = "cuda" if device == "cuda" else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = load_tokenizer()
    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir()), dtype=dtype)
    model.to(device).eval()
    prompt_format = PromptFormat(tokenizer)
    prompts = [prompt_format.encode(chat_messages(c)) for c in conversations]
    return model, tokenizer, prompts, _eos_ids(model, tokenizer), device


async def parley_backend(system: str, device: str, conversations: list[Any]) -> Any:
    """The local backend of one Parley row, started and warmed up."""
    from bot.generation.local import LocalBackend

    quantize = "int8" if system.endswith("int8") else "none"
    dtype = "bfloat16" if system.endswith("bf16") else "auto"
    backend = LocalBackend(_parley_config(quantize, device, dtype))
    await backend.start()
    await parley_run(backend, conversations[:2], [0.0, 0.0])
    return backend


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    from bot.generation.sampling import end_of_turn_ids

    return sorted(end_of_turn_ids(model, tokenizer))


class _FirstToken:
    """A generate() streamer that notes when the first new token of a call appears."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:  # the first call carries the prompt
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def _cut(ids: list[int], eos: list[int]) -> list[int]:
    for i, token in enumerate(ids):
        if token in eos:
            return ids[: i + 1]
    return ids


def one_by_one(
    model: Any, tokenizer: Any, prompts: list[list[int]], eos: list[int], device: str
) -> Measured:
    import torch

    start = time.perf_counter()
    ttft, total, outputs, tokens = [], [], [], 0
    for prompt in prompts:
        streamer = _FirstToken()
        ids = torch.tensor([prompt], device=device)
        result = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos[0],
            streamer=streamer,
        )
        end = time.perf_counter()
        new = _cut(result[0, len(prompt) :].tolist(), eos)
        tokens += len(new)
        ttft.append((streamer.first or end) - start)
        total.append(end - start)
        outputs.append(tokenizer.decode(new, skip_special_tokens=True))
    return Measured(tokens, time.perf_counter() - start, ttft, total, rss_mb(), outputs)


def _static(
    model: Any, tokenizer: Any, prompts: list[list[int]], eos: list[int], device: str
) -> Measured:
    import torch

    start = time.perf_counter()
    width = max(len(p) for p in prompts)
    pad = eos[0]
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    streamer = _FirstToken()
    result = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=pad,
        streamer=streamer,
    )
    end = time.perf_counter()
    news = [_cut(row[width:].tolist(), eos) for row in result]
    n = len(prompts)
    return Measured(
        sum(len(x) for x in news),
        end - start,
        [(streamer.first or end) - start] * n,
        [end - start] * n,
        rss_mb(),
        [tokenizer.decode(x, skip_special_tokens=True) for x in news],
    )


def _cb(
    model: Any, tokenizer: Any, prompts: list[list[int]], eos: list[int], device: str
) -> Measured:
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=eos, pad_token_id=eos[0]
    )
    start = time.perf_counter()
    results = model.generate_batch(
        inputs=prompts, generation_config=config, record_timestamps=True, progress_bar=False
    )
    end = time.perf_counter()
    ordered = list(results.values())
    news = [_cut(list(r.generated_tokens), eos) for r in ordered]
    ttft = [(r.timestamps[0] if r.timestamps else end) - start for r in ordered]
    total = [(r.timestamps[-1] if r.timestamps else end) - start for r in ordered]
    return Measured(
        sum(len(x) for x in news),
        end - start,
        ttft,
        total,
        rss_mb(),
        [tokenizer.decode(x, skip_special_tokens=True) for x in news],
    )


def worker_command(system: str, sizes: list[int], args: Any, out_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench",
        "--worker",
        system,
        "--sizes",
        ",".join(map(str, sizes)),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--rate",
        str(args.rate),
        "--out",
        str(out_dir),
    ]


def launch(
    system: str,
    sizes: list[int],
    args: Any,
    out_dir: Path,
    extra: list[str],
    results: dict[str, Any],
) -> None:
    """Run one system's worker in its own process and add what it measured to ``results``."""
    command = [*worker_command(system, sizes, args, out_dir), *extra]
    t0 = time.perf_counter()
    print(f"running {system} ...", end=" ", flush=True)
    done = subprocess.run(command, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True)
    if done.returncode != 0:
        print(f"FAILED\n{done.stderr[-3000:]}")
        return
    print(f"{time.perf_counter() - t0:.0f} s", flush=True)
    results[system] = json.loads((out_dir / f"worker-{system}.json").read_text())


def default_systems(device: str) -> list[str]:
    """Every system, but bf16 on a CPU that emulates it: there it is the slowest row by far (a
    decode step 3.2x float32's on an AVX2 CPU) and takes the bench several minutes more."""
    if device == "cpu" and not _cpu_has_bf16_units():
        print("parley-bf16 left out: this CPU has no bf16 units (AVX512-BF16 or AMX)", flush=True)
        return [s for s in SYSTEMS if s != "parley-bf16"]
    return list(SYSTEMS)


def _cpu_has_bf16_units() -> bool:
    from bot.generation.prepack import cpu_has_bf16_units

    return cpu_has_bf16_units()


def fastest(systems: list[str], device: str) -> str:
    """The Parley row expected to be fastest here: reduced precision on a CPU, bf16 where the
    CPU has bf16 units (it measured faster than int8 and closer to fp32 on AMX CPUs), else
    int8; on CUDA every row is bf16 anyway."""
    if device == "cpu":
        candidates = ("parley-bf16", "parley-int8") if _cpu_has_bf16_units() else ("parley-int8",)
        for system in candidates:
            if system in systems:
                return system
    return "parley-fp32"
