"""``python -m bench.remote``: the same N-concurrent-conversations load through Parley's remote
backend against ``transformers serve`` (without and with ``--continuous-batching``), or against
a server already running at ``--url`` (vLLM on a GPU: ``bench/gpu.sh``), next to Parley's
in-process engine, on the bundled model or ``--model``, so the README can show when each pays
off.

Every system gets the same prompts (Parley's prompt builder, from bench/workload.py), greedy,
``--tokens`` new tokens each, all N streams in flight at once through ``Backend.stream()``.
Systems run one after another on the same machine; the server is a separate process started
here on loopback. Results: a table on stdout and ``bench/results/remote.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.workload import (
    MODEL_CACHE,
    RESULTS,
    build_conversations,
    chat_messages,
    model_dir,
    pct,
)

SYSTEMS = ("parley-local", "serve", "serve-cb")
#: The server at ``--url``, started elsewhere.
RUNNING = "server"


@dataclass
class Run:
    tokens: int
    wall: float
    ttft: list[float]

    def row(self) -> dict[str, float]:
        return {
            "tokens": self.tokens,
            "wall_s": round(self.wall, 2),
            "tok_per_s": round(self.tokens / self.wall, 1),
            "ttft_p50_s": round(pct(self.ttft, 50), 2),
            "ttft_p95_s": round(pct(self.ttft, 95), 2),
        }


async def _load(backend: Any, conversations: list[Any], tokens: int, count: Any) -> Run:
    from bot.generation.base import GenerationParams

    params = GenerationParams(max_new_tokens=tokens, temperature=0.0)
    start = time.perf_counter()

    async def one(conversation: Any) -> tuple[float, str]:
        first = None
        parts = []
        async for delta in backend.stream(chat_messages(conversation), params):
            first = first or time.perf_counter()
            parts.append(delta)
        return (first or time.perf_counter()) - start, "".join(parts)

    results = await asyncio.gather(*[one(c) for c in conversations])
    wall = time.perf_counter() - start
    # Counted the same way for every system: the tokens of the text each one wrote.
    generated = sum(count(text) for _, text in results)
    return Run(generated, wall, [r[0] for r in results])


async def _system(name: str, sizes: list[int], conversations: list[Any], args: Any) -> dict:
    from bot.config import ModelConfig, RemoteConfig
    from bot.generation.base import Backend
    from bot.generation.local import LocalBackend
    from bot.generation.remote import RemoteBackend
    from tests.servers import TransformersServer

    folder = args.model or str(model_dir())
    model = ModelConfig(
        name=folder,
        device=args.device,
        dtype=args.dtype,
        cache_dir=str(MODEL_CACHE),
        max_new_tokens=args.tokens,
        temperature=0.0,
        max_batch_size=max(sizes),
    )
    server = None
    backend: Backend
    if name == "parley-local":
        backend = LocalBackend(model)
    elif name == RUNNING:
        remote = RemoteConfig(base_urls=[args.url], tokenizer=folder, max_in_flight=max(sizes) * 2)
        backend = RemoteBackend(remote, model)
    else:
        server = TransformersServer(
            model_dir(), continuous_batching=name == "serve-cb", threads=args.threads
        )
        await asyncio.to_thread(server.start)
        remote = RemoteConfig(
            base_urls=[server.url], tokenizer=str(model_dir()), max_in_flight=max(sizes) * 2
        )
        backend = RemoteBackend(remote, model)
    await backend.start()
    out: dict[str, Any] = {"system": name, "runs": {}}
    try:
        count = backend.count_text
        await _load(backend, conversations[:2], 8, count)  # warm-up
        for n in sizes:
            run = await _load(backend, conversations[:n], args.tokens, count)
            out["runs"][str(n)] = run.row()
            print(f"  {name:<13} N={n:<3} {run.row()}", file=sys.stderr, flush=True)
    except Exception as exc:  # a system that cannot run here is reported, not fatal
        out["error"] = f"{type(exc).__name__}: {exc}"
        print(f"  {name}: failed: {out['error']}", file=sys.stderr, flush=True)
    finally:
        await backend.close()
        if server is not None:
            await asyncio.to_thread(server.stop)
    return out


def _table(results: list[dict[str, Any]], sizes: list[int]) -> str:
    lines = [
        f"{'system':<14}{'N':>4}{'tokens':>8}{'wall s':>9}{'tok/s':>8}{'ttft p50':>10}"
        f"{'ttft p95':>10}"
    ]
    for result in results:
        if "error" in result and not result["runs"]:
            lines.append(f"{result['system']:<14} failed: {result['error'][:70]}")
            continue
        for n in sizes:
            row = result["runs"].get(str(n))
            if row is None:
                continue
            lines.append(
                f"{result['system']:<14}{n:>4}{row['tokens']:>8}{row['wall_s']:>9.2f}"
                f"{row['tok_per_s']:>8.1f}{row['ttft_p50_s']:>10.2f}{row['ttft_p95_s']:>10.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.remote", description=__doc__)
    parser.add_argument("--sizes", default="1,8,32", help="concurrent conversations, comma list")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per reply")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="which to run")
    parser.add_argument("--threads", type=int, default=0, help="server torch threads (0: all)")
    parser.add_argument("--model", default="", help="model folder (default: the bundled model)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--url", default="", help=f"the running server the {RUNNING!r} system uses")
    parser.add_argument("--out", default=str(RESULTS / "remote.json"), help="the JSON report")
    args = parser.parse_args(argv)
    if RUNNING in args.systems.split(",") and not args.url:
        parser.error(f"the {RUNNING!r} system needs --url")
    sizes = [int(n) for n in args.sizes.split(",")]
    conversations = build_conversations(max(sizes))
    results = []
    for name in args.systems.split(","):
        results.append(asyncio.run(_system(name, sizes, conversations, args)))
    table = _table(results, sizes)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "tokens": args.tokens,
        "results": results,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
