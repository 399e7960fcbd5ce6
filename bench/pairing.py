"""Paired measurements: two serving processes, each loaded once, measured alternately, so
that the drift of a shared machine cancels out of their ratio."""

from __future__ import annotations

import asyncio
import functools
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.systems import fastest, hf_model, one_by_one, parley_backend, parley_run, worker_command
from bench.workload import ROOT

PAIRED = "paired"
PAIRS = 11
LARGE_PAIRS = 4


# -- paired measurements: two serving processes, alternating ----------------------------------
def serve(system: str, conversations: list[Any], args: Any) -> None:
    """Load one system, then measure the prompts each stdin line names (a JSON list of
    indices), answering ``@@{"tokens": ..., "wall": ...}`` on stdout, until stdin closes."""
    import torch

    def reply(message: dict[str, Any]) -> None:
        print("@@" + json.dumps(message), flush=True)

    if system.startswith("parley"):

        async def serve_parley() -> None:
            backend = await parley_backend(system, args.device, conversations)
            try:
                reply({"ready": True})
                while line := await asyncio.to_thread(sys.stdin.readline):
                    chosen = [conversations[i] for i in json.loads(line)]
                    measured = await parley_run(backend, chosen, [0.0] * len(chosen))
                    reply({"tokens": measured.tokens, "wall": measured.wall})
            finally:
                await backend.close()

        asyncio.run(serve_parley())
        return
    model, tokenizer, prompts, eos, device = hf_model(conversations, args.device)
    with torch.inference_mode():
        one_by_one(model, tokenizer, prompts[:1], eos, device)  # warm-up
        reply({"ready": True})
        for line in sys.stdin:
            measured = one_by_one(
                model, tokenizer, [prompts[i] for i in json.loads(line)], eos, device
            )
            reply({"tokens": measured.tokens, "wall": measured.wall})


class _Server:
    """A ``--serve`` worker process: one system loaded, measuring on request."""

    def __init__(self, system: str, args: Any, out_dir: Path) -> None:
        self.system = system
        self._log = (out_dir / f"serve-{system}.log").open("w")
        command = [*worker_command(system, [1], args, out_dir), "--serve"]
        self._process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._answer()

    def _answer(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if line.startswith("@@"):
                answer: dict[str, Any] = json.loads(line[2:])
                return answer
        raise RuntimeError(f"{self.system} stopped; see {self._log.name}")

    def rate(self, indices: list[int]) -> tuple[int, float]:
        """Tokens and seconds for these prompts (all in flight for Parley, one by one else)."""
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(indices) + "\n")
        self._process.stdin.flush()
        answer = self._answer()
        return answer["tokens"], answer["wall"]

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait()
        self._log.close()


def paired(sizes: list[int], systems: list[str], args: Any, out_dir: Path) -> dict[str, Any]:
    """Parley against one ``generate()`` after another, each in its own process as in the table,
    but alternating (ABBA) so both meet the same phases of a shared machine (the rates of
    workers minutes apart drift by 20-30 %, more than a ratio's margin near its target; and in
    one process the two models' thread pools slowed Parley by 10-25 %):

    - N = 1: Parley fp32 and ``generate()`` on the same lone request, PAIRS times;
    - the largest N: the best Parley configuration with all N requests in flight, against the
      same N prompts one by one in LARGE_PAIRS blocks, each block beside a Parley run. The
      ratio is the median of Parley's runs over the baseline's rate on all N prompts.
    """
    n = max(sizes)
    out: dict[str, Any] = {}
    baseline = _Server("generate-1by1", args, out_dir)
    try:
        if 1 in sizes and "parley-fp32" in systems:
            parley = _Server("parley-fp32", args, out_dir)
            try:
                pairs = alternate(lambda: parley.rate([0]), [lambda: baseline.rate([0])] * PAIRS)
            finally:
                parley.close()
            ratios = [round(rate_of(mine) / rate_of(theirs), 3) for mine, theirs in pairs]
            out["pairs"] = ratios
            out["median"] = statistics.median(ratios)
        if n > 1:
            best = fastest(systems, args.device)
            parley = _Server(best, args, out_dir)
            step = -(-n // LARGE_PAIRS)
            blocks = [list(range(i, min(i + step, n))) for i in range(0, n, step)]
            try:
                pairs = alternate(
                    lambda: parley.rate(list(range(n))),
                    [functools.partial(baseline.rate, block) for block in blocks],
                )
            finally:
                parley.close()
            tokens = sum(theirs[0] for _, theirs in pairs)
            theirs_rate = tokens / sum(theirs[1] for _, theirs in pairs)
            out["large"] = {
                "system": best,
                "n": n,
                "parley_tok_per_s": [round(rate_of(mine), 1) for mine, _ in pairs],
                "baseline_tok_per_s": round(theirs_rate, 2),
                "ratio": round(statistics.median(rate_of(m) for m, _ in pairs) / theirs_rate, 2),
                "pairs": [round(rate_of(m) / rate_of(t), 2) for m, t in pairs],
            }
    finally:
        baseline.close()
    return out


Rate = tuple[int, float]


def alternate(
    parley: Callable[[], Rate], baselines: list[Callable[[], Rate]]
) -> list[tuple[Rate, Rate]]:
    """One Parley run beside each baseline call, in the order P B, B P, P B, ..."""
    pairs = []
    for index, baseline in enumerate(baselines):
        if index % 2:
            theirs = baseline()
            mine = parley()
        else:
            mine = parley()
            theirs = baseline()
        pairs.append((mine, theirs))
    return pairs


def rate_of(measured: Rate) -> float:
    tokens, wall = measured
    return tokens / wall
