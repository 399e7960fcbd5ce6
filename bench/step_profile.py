"""Where one decode step's milliseconds go: ``python -m bench.step_profile [--n 1]
[--quantize int8] [--steps 20]``.

Drives Parley's engine directly on the bundled model with ``n`` of the bench's conversations,
prefills them, then profiles ``steps`` decode steps with PyTorch's profiler: the wall time of
a step, the operators that took it (self time, per step), and what no operator accounts for
(Python, the engine's own bookkeeping, dispatch). For #43: at N = 1 a 135 M model's step is
short, and whether arithmetic or overhead dominates decides what can make it faster.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

from bench.workload import build_conversations, chat_messages, load_tokenizer, model_dir

__all__ = ["main", "profile_steps"]


def profile_steps(n: int, quantize: str, steps: int) -> dict[str, Any]:
    """Wall milliseconds per decode step and self milliseconds per step of each operator."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForCausalLM

    from bot.generation.base import GenerationParams
    from bot.generation.engine import Engine, Request
    from bot.generation.models import PromptFormat
    from bot.generation.quantize import quantize_int8

    tokenizer = load_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir()), dtype=torch.float32).eval()
    if quantize == "int8":
        model = quantize_int8(model)
    engine = Engine(model, tokenizer, max_batch_size=max(n, 1), context_window=2048)
    engine.eos_ids = frozenset()  # every row decodes for the whole measurement
    params = GenerationParams(max_new_tokens=2 * steps + 8, temperature=0.0)
    prompt = PromptFormat(tokenizer)
    requests = [
        Request(prompt.encode(chat_messages(conversation)), params, lambda *_: None)
        for conversation in build_conversations(n)
    ]
    for request in requests:
        engine.submit(request)
    while not all(request.output_ids for request in requests):
        engine.step()  # prefill until every row decodes
    for _ in range(3):
        engine.step()  # warm
    started = time.perf_counter()
    for _ in range(steps):
        engine.step()
    # The profiler itself costs time per operator: the step as served is measured without it.
    plain = (time.perf_counter() - started) / steps * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        started = time.perf_counter()
        for _ in range(steps):
            engine.step()
        wall = (time.perf_counter() - started) / steps * 1e3
    by_op: Counter[str] = Counter()
    for event in profiler.key_averages():
        by_op[event.key] += event.self_cpu_time_total / 1e3 / steps
    return {
        "n": n,
        "quantize": quantize,
        "plain_ms": plain,
        "wall_ms": wall,
        "ops_ms": dict(by_op),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1, help="conversations decoding together")
    parser.add_argument("--quantize", choices=("none", "int8"), default="none")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    found = profile_steps(args.n, args.quantize, args.steps)
    ops: dict[str, float] = found["ops_ms"]
    counted = sum(ops.values())
    wall = found["wall_ms"]
    plain = found["plain_ms"]
    print(
        f"N = {args.n}, {args.quantize}: {plain:.1f} ms a decode step ({1e3 / plain:.1f} steps/s);"
        f" {wall:.1f} ms under the profiler, spent as follows:"
    )
    for name, ms in sorted(ops.items(), key=lambda item: -item[1])[: args.top]:
        print(f"  {ms:7.2f} ms  {ms / wall:5.1%}  {name}")
    print(
        f"  {max(wall - counted, 0.0):7.2f} ms  {max(wall - counted, 0.0) / wall:5.1%}"
        "  outside any operator (Python, the engine, dispatch)"
    )


if __name__ == "__main__":
    main()
