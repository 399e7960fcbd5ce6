"""The generation benchmark: Parley's engine against the plain ways of serving the same model.

N concurrent support conversations (N = 1, 8, 32), realistic multi-turn prompts built by Parley's
own prompt builder, 64 new tokens each, greedy, on the bundled model. Each system runs in its own
process (so its peak resident memory is its own) on the same prompts:

- ``parley-fp32`` / ``parley-int8`` / ``parley-bf16``: the local backend through
  ``Backend.stream()``, all N in flight (int8: ``model.quantize = "int8"``; bf16:
  ``model.dtype = "bfloat16"``, which on a CPU with AMX or AVX512-BF16 runs the matrix products
  on those units);
- ``generate-1by1``: one ``model.generate()`` per message, one after another (the seed approach);
- ``generate-static``: one left-padded ``model.generate()`` over the N prompts;
- ``generate-batch``: transformers' own continuous batching (``model.generate_batch``).

The rates of worker processes minutes apart drift by 20-30 % on a shared machine, more than the
margin of a ratio near its target, so the bench also measures Parley and one-by-one
``generate()`` alternately, each loaded once in its own serving process: fp32 at N = 1 (the
same model forward, ratio about 1) and the best Parley configuration at the largest N.

A second scenario sends 64 requests with Poisson arrivals to the best Parley configuration and
compares their time-to-first-token percentiles with those of the same prompts sent alone, and
each request's with its own alone. Results: a table on stdout,
``bench/results/generation.json`` and ``bench/results/generation.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MODEL_CACHE = ROOT / ".cache" / "models"
NEW_TOKENS = 64
PARLEY = ("parley-fp32", "parley-int8", "parley-bf16")
PAIRED = "paired"
PAIRS = 11
LARGE_PAIRS = 4
SYSTEMS = (*PARLEY, "generate-1by1", "generate-static", "generate-batch")

# Realistic support traffic: earlier turns of a conversation and the message to answer now.
EARLIER = [
    (
        "Hi, I can't log in to my account since this morning.",
        "I'm sorry to hear that. Could you tell me which error message you see when you try to log "
        "in? If it says your password is wrong, you can reset it from the login page with 'Forgot "
        "password'.",
    ),
    (
        "It says my account is locked.",
        "Accounts are locked for 30 minutes after five failed attempts, to protect them. You can "
        "wait, or I can ask a colleague to unlock it now if you confirm the e-mail address on the "
        "account.",
    ),
    (
        "How much does the Pro plan cost?",
        "The Pro plan is 29 dollars per user per month, or 290 dollars per user per year when paid "
        "annually. It includes priority support, 1 TB of storage per team and single sign-on.",
    ),
    (
        "Can I get an invoice with my company's VAT number on it?",
        "Yes. Add the VAT number under Settings, then Billing, then Company details; every invoice "
        "issued after that shows it. For past invoices, reply here with their numbers and we will "
        "reissue them.",
    ),
    (
        "My upload keeps failing at 99 percent.",
        "That usually happens when the file is larger than the 5 GB limit for a single upload or "
        "when the connection drops at the end. Could you tell me the file size and your browser?",
    ),
    (
        "It's a 7 GB video, in Chrome.",
        "Thanks. Files over 5 GB need the desktop app, which uploads them in parts and resumes"
        " after a dropped connection. You can download it from the Apps page in your account.",
    ),
    (
        "Do you have an API for exporting reports?",
        "We do: the Reports API returns any saved report as CSV or JSON. You will find the "
        "documentation and your API key under Settings, then Developers.",
    ),
    (
        "We were charged twice this month.",
        "I'm sorry about that. I can see two charges on the 3rd; the second one is a duplicate and "
        "I have asked our billing team to refund it. It takes 5 to 10 working days to appear.",
    ),
]
QUESTIONS = [
    "How do I reset my password?",
    "Can I change the e-mail address of my account without losing my files?",
    "Why is the dashboard so slow today? The billing page takes a minute to open.",
    "How do I add a new user to my team, and will it change my bill this month?",
    "Is there a way to export all my data before I cancel my subscription?",
    "I switched to the annual plan yesterday but I was still charged the monthly price. Why?",
    "Do you support two-factor authentication with an authenticator app?",
    "What happens to shared links when I delete a folder?",
    "Can I get a refund for the unused months if I downgrade from Pro to Basic?",
    "How can I see who changed a document last week?",
    "The mobile app crashes when I open a PDF. What can I do?",
    "Where can I find the invoices from last year?",
]


@dataclass
class Measured:
    """One system at one N."""

    tokens: int
    wall: float
    ttft: list[float]
    total: list[float]
    rss_mb: float
    outputs: list[str]

    def row(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "wall_s": round(self.wall, 3),
            "tok_per_s": round(self.tokens / self.wall, 2),
            "ttft_p50_s": round(_pct(self.ttft, 50), 3),
            "ttft_p95_s": round(_pct(self.ttft, 95), 3),
            "total_p50_s": round(_pct(self.total, 50), 3),
            "total_p95_s": round(_pct(self.total, 95), 3),
            "peak_rss_mb": round(self.rss_mb),
        }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- prompts ------------------------------------------------------------------------------------
def build_conversations(count: int, seed: int = 5) -> list[list[dict[str, str]]]:
    """``count`` conversations with 0 to 4 earlier exchanges, rendered by Parley's own prompt
    builder (system prompt, trimming to the window) into chat messages."""
    from bot.config import BotConfig, ModelConfig
    from bot.core.conversation import ConversationManager
    from bot.generation.models import PromptFormat
    from bot.storage.base import Turn

    tokenizer = _tokenizer()
    backend = _CountingBackend(PromptFormat(tokenizer))
    model_config = ModelConfig(max_new_tokens=NEW_TOKENS, temperature=0.0)
    manager = ConversationManager(None, backend, BotConfig(), model_config)  # type: ignore[arg-type]
    rng = random.Random(seed)
    now = datetime.now(UTC)
    conversations = []
    for i in range(count):
        turns: list[Turn] = []
        for user, assistant in rng.sample(EARLIER, k=i % 5):
            turns += [Turn("user", user, now), Turn("assistant", assistant, now)]
        prompt = manager.build_prompt(turns, QUESTIONS[i % len(QUESTIONS)])
        conversations.append([{"role": m.role, "content": m.content} for m in prompt.messages])
    return conversations


class _CountingBackend:
    """What ``build_prompt`` asks of a backend, answered by the tokenizer alone."""

    context_window = 2048

    def __init__(self, prompt_format: Any) -> None:
        self.format = prompt_format

    def count_tokens(self, messages: Any) -> int:
        return len(self.format.encode(messages))

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self.format.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
        return str(self.format.tokenizer.decode(ids))


def _model_dir() -> Path:
    from bot.generation.models import _converted_gguf, bundled_gguf

    return _converted_gguf(bundled_gguf(), MODEL_CACHE)


def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_model_dir()))


def _messages(conversation: list[dict[str, str]]) -> list[Any]:
    from bot.generation.base import ChatMessage

    return [ChatMessage(m["role"], m["content"]) for m in conversation]  # type: ignore[arg-type]


# -- the systems, each in its own process -------------------------------------------------------
def _parley_config(quantize: str, device: str, dtype: str = "auto") -> Any:
    from bot.config import ModelConfig

    return ModelConfig(
        name=str(_model_dir()),
        device=device,  # type: ignore[arg-type]
        dtype=dtype,  # type: ignore[arg-type]
        cache_dir=str(MODEL_CACHE),
        max_new_tokens=NEW_TOKENS,
        temperature=0.0,
        quantize=quantize,  # type: ignore[arg-type]
    )


async def _parley_run(
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
        async for delta in backend.stream(_messages(conversation), params):
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
        _rss_mb(),
        [r[2] for r in results],
    )


def worker(system: str, sizes: list[int], conversations: list[Any], args: Any) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads or torch.get_num_threads())
    if args.serve:
        _serve(system, conversations, args)
        return {}
    out: dict[str, Any] = {"system": system, "runs": {}}
    if system.startswith("parley"):
        return asyncio.run(_parley_worker(system, sizes, conversations, args, out))
    return _hf_worker(system, sizes, conversations, args, out)


async def _parley_worker(
    system: str, sizes: list[int], conversations: list[Any], args: Any, out: dict[str, Any]
) -> dict[str, Any]:
    backend = await _parley_backend(system, args.device, conversations)
    try:
        for n in sizes:
            repeats = 3 if n == 1 else 1
            runs = [
                await _parley_run(backend, conversations[:n], [0.0] * n) for _ in range(repeats)
            ]
            best = sorted(runs, key=lambda m: m.wall)[len(runs) // 2]
            out["runs"][str(n)] = best.row() | {"outputs": best.outputs}
        if args.staggered and system == args.staggered_system:
            out["staggered"] = await _staggered(backend, conversations, args)
        loaded = backend.loaded
        if loaded is not None and args.perplexity:
            out["perplexity"] = _perplexity(loaded.model, loaded.tokenizer)
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
        alone[i] = (await _parley_run(backend, [conversations[i]], [0.0], new_tokens=1)).ttft[0]
    measured = await _parley_run(backend, [conversations[i] for i in mix], arrivals)
    lone = [alone[i] for i in mix]
    slowdown = [ttft / alone[i] for ttft, i in zip(measured.ttft, mix, strict=True)]
    return {
        "requests": args.staggered,
        "rate_per_s": args.rate,
        "lone_ttft_p50_s": round(_pct(lone, 50), 3),
        "lone_ttft_p95_s": round(_pct(lone, 95), 3),
        **measured.row(),
        "ttft_p99_s": round(_pct(measured.ttft, 99), 3),
        "p95_over_lone": round(_pct(measured.ttft, 95) / _pct(lone, 95), 2),
        "slowdown_p95": round(_pct(slowdown, 95), 2),
    }


def _hf_worker(
    system: str, sizes: list[int], conversations: list[Any], args: Any, out: dict[str, Any]
) -> dict[str, Any]:
    import torch

    model, tokenizer, prompts, eos, device = _hf_model(conversations, args.device)
    run = {"generate-1by1": _one_by_one, "generate-static": _static, "generate-batch": _cb}[system]
    with torch.inference_mode():
        run(model, tokenizer, prompts[:2], eos, device)  # warm-up
        for n in sizes:
            repeats = 3 if n == 1 else 1
            runs = [run(model, tokenizer, prompts[:n], eos, device) for _ in range(repeats)]
            best = sorted(runs, key=lambda m: m.wall)[len(runs) // 2]
            out["runs"][str(n)] = best.row() | {"outputs": best.outputs}
    return out


def _hf_model(conversations: list[Any], device: str) -> tuple[Any, Any, list[list[int]], Any, str]:
    """The plain transformers model the baselines run (fp32 on a CPU, bf16 on CUDA), with the
    conversations' prompt ids and its end-of-turn ids."""
    import torch
    from transformers import AutoModelForCausalLM

    from bot.generation.models import PromptFormat

    device = "cuda" if device == "cuda" else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = _tokenizer()
    model: Any = AutoModelForCausalLM.from_pretrained(str(_model_dir()), dtype=dtype)
    model.to(device).eval()
    prompt_format = PromptFormat(tokenizer)
    prompts = [prompt_format.encode(_messages(c)) for c in conversations]
    return model, tokenizer, prompts, _eos_ids(model, tokenizer), device


async def _parley_backend(system: str, device: str, conversations: list[Any]) -> Any:
    """The local backend of one Parley row, started and warmed up."""
    from bot.generation.local import LocalBackend

    quantize = "int8" if system.endswith("int8") else "none"
    dtype = "bfloat16" if system.endswith("bf16") else "auto"
    backend = LocalBackend(_parley_config(quantize, device, dtype))
    await backend.start()
    await _parley_run(backend, conversations[:2], [0.0, 0.0])
    return backend


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    from bot.generation.engine import _end_of_turn_ids

    return sorted(_end_of_turn_ids(model, tokenizer))


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


def _one_by_one(
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
    return Measured(tokens, time.perf_counter() - start, ttft, total, _rss_mb(), outputs)


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
        _rss_mb(),
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
        _rss_mb(),
        [tokenizer.decode(x, skip_special_tokens=True) for x in news],
    )


# -- quality of reduced precision ---------------------------------------------------------------
def _held_out_text() -> str:
    """Text the model cannot have seen in training: this project's own documents."""
    parts = []
    for name in ("README.md", "CHANGELOG.md", "config/default.toml"):
        path = ROOT / name
        if path.is_file():
            parts.append(path.read_text(encoding="utf-8"))
    return "\n\n".join(parts)


def _perplexity(model: Any, tokenizer: Any, tokens: int = 1024, window: int = 256) -> float:
    import torch

    ids = tokenizer(_held_out_text(), add_special_tokens=False)["input_ids"][:tokens]
    device = next(model.parameters()).device
    losses, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, window):
            chunk = torch.tensor([ids[start : start + window + 1]], device=device)
            if chunk.shape[1] < 2:
                break
            logits = model(input_ids=chunk[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum")
            losses += float(loss)
            count += chunk.shape[1] - 1
    return round(float(torch.exp(torch.tensor(losses / count))), 3)


def _agreement(reference: list[str], other: list[str], tokenizer: Any) -> dict[str, float]:
    """How much of fp32's greedy reply another precision reproduces: exact replies, and the share
    of tokens before the first difference."""
    exact, shared, total = 0, 0, 0
    for a, b in zip(reference, other, strict=True):
        ta = tokenizer(a, add_special_tokens=False)["input_ids"]
        tb = tokenizer(b, add_special_tokens=False)["input_ids"]
        exact += ta == tb
        prefix = 0
        for x, y in zip(ta, tb, strict=False):  # lengths differ where outputs do
            if x != y:
                break
            prefix += 1
        shared += prefix
        total += max(len(ta), 1)
    return {
        "exact_replies": round(exact / max(len(reference), 1), 3),
        "prefix_tokens": round(shared / max(total, 1), 3),
    }


# -- paired measurements: two serving processes, alternating ----------------------------------
def _serve(system: str, conversations: list[Any], args: Any) -> None:
    """Load one system, then measure the prompts each stdin line names (a JSON list of
    indices), answering ``@@{"tokens": ..., "wall": ...}`` on stdout, until stdin closes."""
    import torch

    def reply(message: dict[str, Any]) -> None:
        print("@@" + json.dumps(message), flush=True)

    if system.startswith("parley"):

        async def serve_parley() -> None:
            backend = await _parley_backend(system, args.device, conversations)
            try:
                reply({"ready": True})
                while line := await asyncio.to_thread(sys.stdin.readline):
                    chosen = [conversations[i] for i in json.loads(line)]
                    measured = await _parley_run(backend, chosen, [0.0] * len(chosen))
                    reply({"tokens": measured.tokens, "wall": measured.wall})
            finally:
                await backend.close()

        asyncio.run(serve_parley())
        return
    model, tokenizer, prompts, eos, device = _hf_model(conversations, args.device)
    with torch.inference_mode():
        _one_by_one(model, tokenizer, prompts[:1], eos, device)  # warm-up
        reply({"ready": True})
        for line in sys.stdin:
            measured = _one_by_one(
                model, tokenizer, [prompts[i] for i in json.loads(line)], eos, device
            )
            reply({"tokens": measured.tokens, "wall": measured.wall})


class _Server:
    """A ``--serve`` worker process: one system loaded, measuring on request."""

    def __init__(self, system: str, args: Any, out_dir: Path) -> None:
        self.system = system
        self._log = (out_dir / f"serve-{system}.log").open("w")
        command = [*_worker_command(system, [1], args, out_dir), "--serve"]
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


def _paired(sizes: list[int], systems: list[str], args: Any, out_dir: Path) -> dict[str, Any]:
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
                pairs = _alternate(lambda: parley.rate([0]), [lambda: baseline.rate([0])] * PAIRS)
            finally:
                parley.close()
            ratios = [round(_rate(mine) / _rate(theirs), 3) for mine, theirs in pairs]
            out["pairs"] = ratios
            out["median"] = statistics.median(ratios)
        if n > 1:
            best = _fastest(systems, args.device)
            parley = _Server(best, args, out_dir)
            step = -(-n // LARGE_PAIRS)
            blocks = [list(range(i, min(i + step, n))) for i in range(0, n, step)]
            try:
                pairs = _alternate(
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
                "parley_tok_per_s": [round(_rate(mine), 1) for mine, _ in pairs],
                "baseline_tok_per_s": round(theirs_rate, 2),
                "ratio": round(statistics.median(_rate(m) for m, _ in pairs) / theirs_rate, 2),
                "pairs": [round(_rate(m) / _rate(t), 2) for m, t in pairs],
            }
    finally:
        baseline.close()
    return out


Rate = tuple[int, float]


def _alternate(
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


def _rate(measured: Rate) -> float:
    tokens, wall = measured
    return tokens / wall


# -- the orchestrator ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1 and 8 only, 24 staggered")
    parser.add_argument("--sizes", default="", help="comma-separated N (default 1,8,32)")
    parser.add_argument(
        "--systems", default="", help="comma-separated (default: all those this machine runs)"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--staggered", type=int, default=64, help="requests (0: skip)")
    parser.add_argument("--rate", type=float, default=1.0, help="staggered arrivals per second")
    parser.add_argument("--staggered-system", default="", help="default: the fastest Parley row")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--perplexity", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x] or ([1, 8] if args.quick else [1, 8, 32])
    if args.quick:
        args.staggered = min(args.staggered, 24)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts_file = out_dir / "prompts.json"

    if args.worker:
        conversations = json.loads(prompts_file.read_text())
        result = worker(args.worker, sizes, conversations, args)
        if not args.serve:
            (out_dir / f"worker-{args.worker}.json").write_text(json.dumps(result))
        return 0

    began = time.perf_counter()
    conversations = build_conversations(max(max(sizes), 32))
    prompts_file.write_text(json.dumps(conversations))
    tokenizer = _tokenizer()
    from bot.generation.models import PromptFormat

    lengths = [
        len(PromptFormat(tokenizer).encode(_messages(c))) for c in conversations[: max(sizes)]
    ]
    print(
        f"prompts: {len(lengths)} conversations, {min(lengths)}-{max(lengths)} tokens"
        f" (mean {statistics.mean(lengths):.0f}); {NEW_TOKENS} new tokens each, greedy;"
        f" device {args.device}",
        flush=True,
    )
    systems = [s for s in args.systems.split(",") if s] or _default_systems(args.device)
    results: dict[str, Any] = {}
    for system in systems:
        extra = []
        if system.startswith("parley"):
            extra.append("--perplexity")
            staggered_system = args.staggered_system or _fastest(systems, args.device)
            if args.staggered and system == staggered_system:
                extra += ["--staggered", str(args.staggered), "--staggered-system", system]
            else:
                extra += ["--staggered", "0"]
        _launch(system, sizes, args, out_dir, extra, results)
    if "generate-1by1" in systems and set(PARLEY) & set(systems):
        t0 = time.perf_counter()
        print("running paired ...", end=" ", flush=True)
        try:
            results[PAIRED] = _paired(sizes, systems, args, out_dir)
            print(f"{time.perf_counter() - t0:.0f} s", flush=True)
        except RuntimeError as exc:
            print(f"FAILED: {exc}")
    report = _report(results, sizes, tokenizer, args)
    report["bench_seconds"] = round(time.perf_counter() - began, 1)
    (out_dir / "generation.json").write_text(json.dumps(report, indent=2))
    _plot(report, out_dir / "generation.png")
    print(f"\nwrote {out_dir / 'generation.json'} and generation.png ({report['bench_seconds']} s)")
    return 0


def _worker_command(system: str, sizes: list[int], args: Any, out_dir: Path) -> list[str]:
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


def _launch(
    system: str,
    sizes: list[int],
    args: Any,
    out_dir: Path,
    extra: list[str],
    results: dict[str, Any],
) -> None:
    """Run one system's worker in its own process and add what it measured to ``results``."""
    command = [*_worker_command(system, sizes, args, out_dir), *extra]
    t0 = time.perf_counter()
    print(f"running {system} ...", end=" ", flush=True)
    done = subprocess.run(command, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True)
    if done.returncode != 0:
        print(f"FAILED\n{done.stderr[-3000:]}")
        return
    print(f"{time.perf_counter() - t0:.0f} s", flush=True)
    results[system] = json.loads((out_dir / f"worker-{system}.json").read_text())


def _default_systems(device: str) -> list[str]:
    """Every system, but bf16 on a CPU that emulates it: there it is the slowest row by far (a
    decode step 3.2x float32's on an AVX2 CPU) and takes the bench several minutes more."""
    if device == "cpu" and not _cpu_has_bf16_units():
        print("parley-bf16 left out: this CPU has no bf16 units (AVX512-BF16 or AMX)", flush=True)
        return [s for s in SYSTEMS if s != "parley-bf16"]
    return list(SYSTEMS)


def _cpu_has_bf16_units() -> bool:
    from bot.generation.prepack import cpu_has_bf16_units

    return cpu_has_bf16_units()


def _fastest(systems: list[str], device: str) -> str:
    """The Parley row expected to be fastest here: reduced precision on a CPU, bf16 where the
    CPU has bf16 units (it measured faster than int8 and closer to fp32 on AMX CPUs), else
    int8; on CUDA every row is bf16 anyway."""
    if device == "cpu":
        candidates = ("parley-bf16", "parley-int8") if _cpu_has_bf16_units() else ("parley-int8",)
        for system in candidates:
            if system in systems:
                return system
    return "parley-fp32"


def _report(results: dict[str, Any], sizes: list[int], tokenizer: Any, args: Any) -> dict[str, Any]:
    header = (
        f"{'system':<16}{'N':>4}{'tok/s':>9}{'TTFT p50':>10}{'p95':>8}"
        f"{'total p50':>11}{'p95':>8}{'peak RSS':>10}"
    )
    print("\n" + header)
    print("-" * len(header))
    table: dict[str, dict[str, Any]] = {}
    for system, result in results.items():
        if system == PAIRED:
            continue
        table[system] = {}
        for n in sizes:
            row = result["runs"].get(str(n))
            if row is None:
                continue
            table[system][str(n)] = {k: v for k, v in row.items() if k != "outputs"}
            print(
                f"{system:<16}{n:>4}{row['tok_per_s']:>9.1f}"
                f"{row['ttft_p50_s']:>9.2f}s{row['ttft_p95_s']:>7.2f}s"
                f"{row['total_p50_s']:>10.2f}s{row['total_p95_s']:>7.2f}s"
                f"{row['peak_rss_mb']:>7.0f} MB"
            )
    ratios: dict[str, dict[str, float]] = {}
    print("\nratios of aggregate tokens/s (Parley / baseline):")
    for parley in PARLEY:
        if parley not in table:
            continue
        for n in sizes:
            mine = table[parley].get(str(n), {}).get("tok_per_s")
            line = []
            for base in ("generate-1by1", "generate-static", "generate-batch"):
                theirs = table.get(base, {}).get(str(n), {}).get("tok_per_s")
                if mine and theirs:
                    ratio = round(mine / theirs, 2)
                    ratios.setdefault(f"{parley}/{base}", {})[str(n)] = ratio
                    line.append(f"{ratio:5.2f}x {base}")
            print(f"  {parley:<12} N={n:<3} " + "  ".join(line))
    paired = results.get(PAIRED, {})
    if "median" in paired:
        ratios["parley-fp32/generate-1by1 paired"] = {"1": paired["median"]}
        print(
            f"  parley-fp32  N=1   {paired['median']:5.2f}x generate-1by1 alternating, each in"
            f" its own process ({len(paired['pairs'])} pairs: {min(paired['pairs']):.2f}"
            f"-{max(paired['pairs']):.2f}x)"
        )
    large = paired.get("large")
    if large:
        ratios[f"{large['system']}/generate-1by1 paired"] = {str(large["n"]): large["ratio"]}
        print(
            f"  {large['system']:<12} N={large['n']:<3} {large['ratio']:5.2f}x generate-1by1"
            f" alternating, each in its own process ({len(large['pairs'])} pairs: Parley"
            f" {min(large['parley_tok_per_s']):.0f}-{max(large['parley_tok_per_s']):.0f} tok/s,"
            f" one by one {large['baseline_tok_per_s']:.1f} tok/s)"
        )
    quality: dict[str, Any] = {}
    for system in PARLEY:
        if system in results and "perplexity" in results[system]:
            quality[f"perplexity_{system}"] = results[system]["perplexity"]
    for system in PARLEY[1:]:
        if "parley-fp32" in results and system in results:
            largest = str(max(sizes))
            quality[f"{system.removeprefix('parley-')}_vs_fp32_greedy"] = _agreement(
                results["parley-fp32"]["runs"][largest]["outputs"],
                results[system]["runs"][largest]["outputs"],
                tokenizer,
            )
    if "generate-1by1" in results and "parley-fp32" in results:
        largest = str(max(sizes))
        quality["fp32_vs_generate_greedy"] = _agreement(
            results["generate-1by1"]["runs"][largest]["outputs"],
            results["parley-fp32"]["runs"][largest]["outputs"],
            tokenizer,
        )
    if quality:
        print("\nquality (held-out perplexity on this project's docs; greedy agreement, N = max):")
        for key, value in quality.items():
            print(f"  {key}: {value}")
    staggered = next((r["staggered"] for r in results.values() if "staggered" in r), None)
    if staggered:
        print(
            f"\nstaggered: {staggered['requests']} requests, Poisson {staggered['rate_per_s']}/s:"
            f" TTFT p50 {staggered['ttft_p50_s']:.2f}s p95 {staggered['ttft_p95_s']:.2f}s"
            f" p99 {staggered['ttft_p99_s']:.2f}s; the same prompts alone: p50"
            f" {staggered['lone_ttft_p50_s']:.2f}s p95 {staggered['lone_ttft_p95_s']:.2f}s"
            f" -> p95 = {staggered['p95_over_lone']:.2f}x alone; each request against itself"
            f" alone: p95 {staggered['slowdown_p95']:.2f}x; {staggered['tok_per_s']:.1f} tok/s"
        )
    return {
        "device": args.device,
        "new_tokens": NEW_TOKENS,
        "sizes": sizes,
        "table": table,
        "ratios": ratios,
        "paired": paired,
        "quality": quality,
        "staggered": staggered,
    }


def _plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for system, rows in report["table"].items():
        sizes = sorted(int(n) for n in rows)
        axes.plot(sizes, [rows[str(n)]["tok_per_s"] for n in sizes], marker="o", label=system)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("concurrent conversations N")
    axes.set_ylabel("aggregate tokens/s")
    axes.set_title(f"Generation throughput, bundled model, {report['device']}")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
