"""The engines a team would deploy instead of Parley, installed by the bench into venvs and
folders of their own under ``.cache/peers`` (their pins conflict with Parley's) and served on
loopback: llama.cpp's ``llama-server`` (on the bundled GGUF, Q4_1, and a Q8_0 requantised from
it with llama.cpp's own ``llama-quantize``) and vLLM's CPU build (float32, on the model
converted from the same GGUF). A peer that cannot be installed or started is skipped with one
line saying why.

Each is measured as a user would meet it: the same conversations as Parley's rows, sent at once
to its OpenAI-compatible ``/v1/chat/completions``, streamed, greedy, up to ``NEW_TOKENS`` new
tokens; tokens counted by encoding each returned text with the model's tokenizer."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.workload import NEW_TOKENS, ROOT, Measured, load_tokenizer, model_dir, rss_mb

PEERS_DIR = ROOT / ".cache" / "peers"
# The llama.cpp that llama-cpp-python's source package vendors: a pinned, registry-hosted copy
# (the network here reaches the package registries only, not GitHub).
LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
START_TIMEOUT_S = 300.0
# Sent once before measuring, as Parley's rows warm up: not one of the measured conversations,
# whose prompts a server's prompt cache would then answer without computing them.
WARM_UP = [{"role": "user", "content": "Hello"}]
CMAKE_OPTIONS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
]


@dataclass(frozen=True)
class Peer:
    """One peer configuration: how to install it and the command that serves it on ``port``."""

    name: str
    install: Callable[[Path], Path | None]
    command: Callable[[Path, int, int], list[str]]  # (installed path, port, N) -> argv
    env: tuple[tuple[str, str], ...] = ()
    #: Started once for every N (sized for the largest) instead of once per N: vLLM schedules
    #: whatever is in flight and takes about two minutes to start.
    once: bool = False


def _run(argv: list[str], log: Path, cwd: Path | None = None) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=True)


# -- llama.cpp --------------------------------------------------------------------------------
def install_llama_cpp(log: Path) -> Path | None:
    """Build ``llama-server`` and ``llama-quantize`` (Release, this CPU's instructions) from the
    llama.cpp vendored in llama-cpp-python's source package; about 11 minutes on 2 cores, once.
    Returns the folder of the binaries, or None when a build tool is missing."""
    bin_dir = PEERS_DIR / "llama.cpp" / "build" / "bin"
    if (bin_dir / "llama-server").exists() and (bin_dir / "llama-quantize").exists():
        return bin_dir
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        print("  llama.cpp: skipped (cmake and a C++ compiler are needed to build it)")
        return None
    downloads = PEERS_DIR / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archives = list(downloads.glob("llama_cpp_python-*.tar.gz"))
    if not archives:
        _run(
            [
                sys.executable,
                *["-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d"],
                str(downloads),
                LLAMA_CPP_PYTHON,
            ],
            log,
        )
        archives = list(downloads.glob("llama_cpp_python-*.tar.gz"))
    source = PEERS_DIR / "llama.cpp"
    if not (source / "CMakeLists.txt").exists():
        with tarfile.open(archives[0]) as archive:
            top = archive.getnames()[0].split("/")[0]
            prefix = f"{top}/vendor/llama.cpp/"
            members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
            for member in members:
                member.name = member.name[len(prefix) :]
            archive.extractall(source, members=members, filter="data")
    _run(
        ["cmake", "-S", str(source), "-B", str(source / "build"), *CMAKE_OPTIONS],
        log,
    )
    jobs = str(os.cpu_count() or 2)
    _run(
        [
            "cmake",
            "--build",
            str(source / "build"),
            "--config",
            "Release",
            "-j",
            jobs,
            "--target",
            "llama-server",
            "llama-quantize",
        ],
        log,
    )
    return bin_dir


def bundled_gguf_path() -> Path:
    from bot.generation.models import bundled_gguf

    return Path(bundled_gguf())


def q8_0_gguf(bin_dir: Path, log: Path) -> Path:
    """A Q8_0 of the bundled Q4_1 GGUF (the best llama.cpp can do from the file we ship)."""
    out = PEERS_DIR / "SmolLM2-135M-Instruct.Q8_0.gguf"
    if not out.exists():
        _run(
            [
                str(bin_dir / "llama-quantize"),
                "--allow-requantize",
                str(bundled_gguf_path()),
                str(out),
                "Q8_0",
            ],
            log,
        )
    return out


def _llama_server(gguf: Callable[[Path], Path]) -> Callable[[Path, int, int], list[str]]:
    def command(bin_dir: Path, port: int, n: int) -> list[str]:
        threads = str(os.cpu_count() or 2)
        return [
            str(bin_dir / "llama-server"),
            "-m",
            str(gguf(bin_dir)),
            *f"--host 127.0.0.1 --port {port} -np {n} -cb -c {2048 * n} -t {threads}"
            f" -tb {threads} --jinja --no-webui".split(),
        ]

    return command


# -- vLLM -------------------------------------------------------------------------------------
def install_vllm(log: Path) -> Path | None:
    """vLLM's CPU build in its own venv (it pins its own torch and transformers): the one
    ``.ci/install-vllm`` installs for the tests, so it is there once for both."""
    _run(["bash", str(ROOT / ".ci" / "install-vllm")], log)
    return ROOT / ".cache" / "vllm-venv" / "bin" / "python"


def _vllm_command(python: Path, port: int, n: int) -> list[str]:
    return [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir()),
        *f"--served-model-name peer --dtype float32 --host 127.0.0.1 --port {port}"
        f" --max-model-len 2048 --max-num-seqs {max(n, 1)}".split(),
    ]


PEERS = (
    Peer(
        "llama-server-q4_1",
        install_llama_cpp,
        _llama_server(lambda _bin: bundled_gguf_path()),
    ),
    Peer(
        "llama-server-q8_0",
        install_llama_cpp,
        _llama_server(lambda bin_dir: q8_0_gguf(bin_dir, PEERS_DIR / "install.log")),
    ),
    Peer(
        "vllm-cpu-fp32",
        install_vllm,
        _vllm_command,
        env=(("VLLM_CPU_KVCACHE_SPACE", "2"), ("VLLM_TARGET_DEVICE", "cpu")),
        once=True,
    ),
)
PEER_NAMES = tuple(p.name for p in PEERS)


# -- serving and measuring --------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child_rss_mb(pid: int) -> float:
    """The server's resident memory now (its peak is not visible from outside)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="peer", max_retries=0, timeout=2)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"exited with status {process.returncode} while starting")
            try:
                if (await client.models.list()).data:
                    return
            except openai.APIError:
                pass
            await asyncio.sleep(1)
    finally:
        await client.close()
    raise RuntimeError(f"not ready after {START_TIMEOUT_S:.0f} s")


async def _measure(base: str, conversations: list[Any], tokenizer: Any) -> Measured:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{base}/v1", api_key="peer", max_retries=0, timeout=600)
    model = (await client.models.list()).data[0].id
    start = time.perf_counter()

    async def one(conversation: list[dict[str, str]]) -> tuple[float, float, str]:
        sent = time.perf_counter()
        first = None
        parts = []
        stream = await client.chat.completions.create(
            model=model,
            messages=conversation,  # type: ignore[arg-type]
            max_tokens=NEW_TOKENS,
            temperature=0.0,
            stream=True,
        )
        async for chunk in stream:  # type: ignore[union-attr]
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                first = first or time.perf_counter()
                parts.append(delta)
        end = time.perf_counter()
        return (first or end) - sent, end - sent, "".join(parts)

    results = await asyncio.gather(*[one(c) for c in conversations])
    wall = time.perf_counter() - start
    await client.close()
    outputs = [r[2] for r in results]
    tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in outputs)
    return Measured(
        tokens, wall, [r[0] for r in results], [r[1] for r in results], rss_mb(), outputs
    )


def run_peer(
    peer: Peer, sizes: list[int], conversations: list[Any], out_dir: Path
) -> dict[str, Any] | None:
    """Install ``peer`` if need be, serve it (once per N, its parallel slots = N, unless
    ``peer.once``) and measure the first N conversations at once; None (after one line) when it
    cannot be installed or started."""
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    log = PEERS_DIR / "install.log"
    try:
        installed = peer.install(log)
    except (subprocess.CalledProcessError, OSError, tarfile.TarError) as exc:
        print(f"  {peer.name}: skipped, it could not be installed ({exc}; see {log})")
        return None
    if installed is None:
        return None
    tokenizer = load_tokenizer()
    out: dict[str, Any] = {"system": peer.name, "runs": {}}
    groups = [sizes] if peer.once else [[n] for n in sizes]
    for group in groups:
        port = _free_port()
        server_log = out_dir / f"peer-{peer.name}-{max(group)}.log"
        try:
            argv = peer.command(installed, port, max(group))
        except (subprocess.CalledProcessError, OSError) as exc:
            print(f"  {peer.name}: skipped, it could not be prepared ({exc}; see {log})")
            return None
        with server_log.open("w") as sink:
            process = subprocess.Popen(
                argv, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **dict(peer.env)}
            )
        base = f"http://127.0.0.1:{port}"
        try:
            began = time.perf_counter()
            asyncio.run(_wait_ready(base, process))
            ready = time.perf_counter() - began
            asyncio.run(_measure(base, [WARM_UP], tokenizer))
            for n in group:
                measured = asyncio.run(_measure(base, conversations[:n], tokenizer))
                row = measured.row()
                row["peak_rss_mb"] = round(_child_rss_mb(process.pid))
                row["start_s"] = round(ready, 1)
                out["runs"][str(n)] = {**row, "outputs": measured.outputs}
                print(
                    f"  {peer.name} N={n}: {row['tok_per_s']:.1f} tok/s, TTFT p95"
                    f" {row['ttft_p95_s']:.2f} s (started in {ready:.0f} s)",
                    flush=True,
                )
        except Exception as exc:  # a peer's failure must not end the bench
            print(f"  {peer.name} N={group}: failed ({exc}; see {server_log})")
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return out if out["runs"] else None
