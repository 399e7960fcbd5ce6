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
- ``generate-batch``: transformers' own continuous batching (``model.generate_batch``);
- with ``--peers`` (``make bench-peers``), the engines a team would deploy instead, each served
  by its own server on loopback (``bench/peers.py``): llama.cpp's ``llama-server`` on the bundled
  GGUF and a Q8_0 of it, and vLLM's CPU build; the report adds each N's ratio of every Parley
  row to the best peer.

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
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.pairing import PAIRED, paired, serve
from bench.peers import PEER_NAMES, PEERS, run_peer
from bench.quality import agreement
from bench.systems import PARLEY, default_systems, fastest, hf_worker, launch, parley_worker
from bench.workload import NEW_TOKENS, RESULTS, build_conversations, chat_messages, load_tokenizer


def worker(system: str, sizes: list[int], conversations: list[Any], args: Any) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads or torch.get_num_threads())
    if args.serve:
        serve(system, conversations, args)
        return {}
    out: dict[str, Any] = {"system": system, "runs": {}}
    if system.startswith("parley"):
        return asyncio.run(parley_worker(system, sizes, conversations, args, out))
    return hf_worker(system, sizes, conversations, args, out)


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
    parser.add_argument(
        "--peers",
        action="store_true",
        help="beside llama.cpp's server and vLLM's CPU build (installed under .cache/peers)",
    )
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
    tokenizer = load_tokenizer()
    from bot.generation.models import PromptFormat

    lengths = [
        len(PromptFormat(tokenizer).encode(chat_messages(c))) for c in conversations[: max(sizes)]
    ]
    print(
        f"prompts: {len(lengths)} conversations, {min(lengths)}-{max(lengths)} tokens"
        f" (mean {statistics.mean(lengths):.0f}); {NEW_TOKENS} new tokens each, greedy;"
        f" device {args.device}",
        flush=True,
    )
    systems = [s for s in args.systems.split(",") if s] or (
        [s for s in default_systems(args.device) if s in PARLEY]
        if args.peers
        else default_systems(args.device)
    )
    results: dict[str, Any] = {}
    for system in systems:
        extra = []
        if system.startswith("parley"):
            extra.append("--perplexity")
            staggered_system = args.staggered_system or fastest(systems, args.device)
            if args.staggered and system == staggered_system:
                extra += ["--staggered", str(args.staggered), "--staggered-system", system]
            else:
                extra += ["--staggered", "0"]
        launch(system, sizes, args, out_dir, extra, results)
    if "generate-1by1" in systems and set(PARLEY) & set(systems):
        t0 = time.perf_counter()
        print("running paired ...", end=" ", flush=True)
        try:
            results[PAIRED] = paired(sizes, systems, args, out_dir)
            print(f"{time.perf_counter() - t0:.0f} s", flush=True)
        except RuntimeError as exc:
            print(f"FAILED: {exc}")
    if args.peers:
        print("peers (each installed once under .cache/peers, served on loopback):", flush=True)
        for peer in PEERS:
            measured = run_peer(peer, sizes, conversations, out_dir)
            if measured is not None:
                results[peer.name] = measured
    report = _report(results, sizes, tokenizer, args)
    report["bench_seconds"] = round(time.perf_counter() - began, 1)
    (out_dir / "generation.json").write_text(json.dumps(report, indent=2))
    _plot(report, out_dir / "generation.png")
    print(f"\nwrote {out_dir / 'generation.json'} and generation.png ({report['bench_seconds']} s)")
    return 0


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
    ratios.update(_against_peers(table, sizes))
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
            quality[f"{system.removeprefix('parley-')}_vs_fp32_greedy"] = agreement(
                results["parley-fp32"]["runs"][largest]["outputs"],
                results[system]["runs"][largest]["outputs"],
                tokenizer,
            )
    for peer in PEER_NAMES:
        if "parley-fp32" in results and peer in results:
            largest = str(max(n for n in sizes if str(n) in results[peer]["runs"]))
            quality[f"{peer}_vs_fp32_greedy"] = agreement(
                results["parley-fp32"]["runs"][largest]["outputs"],
                results[peer]["runs"][largest]["outputs"],
                tokenizer,
            )
    if "generate-1by1" in results and "parley-fp32" in results:
        largest = str(max(sizes))
        quality["fp32_vs_generate_greedy"] = agreement(
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


def _against_peers(table: dict[str, dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """Each Parley row's throughput over the best peer's at each N, and the time to first token
    p95 beside the best peer's (the lowest)."""
    out: dict[str, Any] = {}
    for n in sizes:
        peers = {p: table[p][str(n)] for p in PEER_NAMES if str(n) in table.get(p, {})}
        if not peers:
            continue
        best = max(peers, key=lambda p: peers[p]["tok_per_s"])
        fastest_first = min(peers[p]["ttft_p95_s"] for p in peers)
        if n == sizes[0]:
            print("\nParley against the best peer (throughput; TTFT p95, lower is better):")
        for system in PARLEY:
            mine = table.get(system, {}).get(str(n))
            if not mine:
                continue
            ratio = round(mine["tok_per_s"] / peers[best]["tok_per_s"], 2)
            out.setdefault(f"{system}/best-peer", {})[str(n)] = {
                "ratio": ratio,
                "peer": best,
                "ttft_p95_s": mine["ttft_p95_s"],
                "peer_ttft_p95_s": fastest_first,
            }
            print(
                f"  {system:<12} N={n:<3} {ratio:5.2f}x {best}; TTFT p95"
                f" {mine['ttft_p95_s']:.2f} s against {fastest_first:.2f} s"
            )
    return out


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
