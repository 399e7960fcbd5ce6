"""Real inference servers on loopback, for the remote backend's tests and bench: ``transformers
serve`` (the ``transformers[serving]`` extra, in Parley's venv) and vLLM's CPU build (in its own
venv, ``.ci/install-vllm``), each serving a local model folder."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections import deque
from pathlib import Path

__all__ = ["VLLM_PYTHON", "ServerProcess", "TransformersServer", "VllmServer", "free_port"]

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".cache" / "vllm-venv" / "bin" / "python"


class ServerProcess:
    """A server started as its own process group (its workers die with it), its log read to
    the end (a chatty server would block on a full pipe), ready once ``ready`` says so."""

    name = "server"

    def __init__(self) -> None:
        self.url = ""
        self.process: subprocess.Popen[str] | None = None
        self.log: deque[str] = deque(maxlen=200)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def seen_ready(self, line: str) -> bool:
        """Whether ``line`` of the log says the server is up (and ``url`` is known)."""
        raise NotImplementedError

    def start(self, timeout: float = 180.0) -> None:
        command, env = self.command()
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"{self.name}-log")
        self._reader.start()
        if not self._ready.wait(timeout) or not self.url or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"{self.name} did not start:\n" + "".join(self.log))

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line)
            if not self._ready.is_set() and self.seen_ready(line):
                self._ready.set()
        self._ready.set()  # ended: start() reports the log

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """Stop at once, as a crash would: no graceful end for the replies in flight."""
        if self.alive:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


class TransformersServer(ServerProcess):
    name = "transformers serve"
    _READY = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")

    def __init__(
        self, model_dir: Path, *, continuous_batching: bool = False, threads: int = 2
    ) -> None:
        super().__init__()
        self.model_dir = model_dir
        self.continuous_batching = continuous_batching
        self.threads = threads

    @property
    def model(self) -> str:
        """The name the server knows its pinned model by."""
        return str(self.model_dir)

    def command(self) -> tuple[list[str], dict[str, str]]:
        batching = (
            "--continuous-batching" if self.continuous_batching else "--no-continuous-batching"
        )
        return (
            [
                sys.executable,
                *["-m", "transformers.cli.transformers", "serve"],
                str(self.model_dir),
                *["--host", "127.0.0.1", "--port", "0", "--device", "cpu", "--log-level", "info"],
                batching,
            ],
            {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(self.threads)},
        )

    def seen_ready(self, line: str) -> bool:
        found = self._READY.search(line)
        if found:
            self.url = found.group(1)
        return found is not None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class VllmServer(ServerProcess):
    """``vllm.entrypoints.openai.api_server`` on a free port, float32, the KV cache in
    ``cache_gb`` of memory, its threads on ``cpus`` (e.g. "0": two servers on a 2-core machine
    each get one)."""

    name = "vLLM"
    SERVED = "parley-test"

    def __init__(self, model_dir: Path, *, cpus: str = "", cache_gb: int = 1) -> None:
        super().__init__()
        self.model_dir = model_dir
        self.cpus = cpus
        self.cache_gb = cache_gb
        self.model = self.SERVED

    def command(self) -> tuple[list[str], dict[str, str]]:
        if not VLLM_PYTHON.exists():
            raise RuntimeError("vLLM is not installed: run .ci/install-vllm (make test does)")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {
            "VLLM_TARGET_DEVICE": "cpu",
            "VLLM_CPU_KVCACHE_SPACE": str(self.cache_gb),
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        if self.cpus:
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpus
        return (
            [
                str(VLLM_PYTHON),
                *["-m", "vllm.entrypoints.openai.api_server", "--model"],
                str(self.model_dir),
                *f"--served-model-name {self.SERVED} --dtype float32 --host 127.0.0.1"
                f" --port {port} --max-model-len 2048 --max-num-seqs 8 --seed 0".split(),
            ],
            env,
        )

    def seen_ready(self, line: str) -> bool:
        return "Application startup complete" in line

    def running(self) -> float:
        """Requests the server is writing now (its Prometheus ``/metrics``)."""
        return self._metric("vllm:num_requests_running")

    def finished(self) -> float:
        """Requests the server has finished, of any kind."""
        return self._metric("vllm:request_success_total")

    def _metric(self, name: str) -> float:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        found = re.findall(rf"^{re.escape(name)}\{{[^}}]*\}} ([0-9.e+-]+)$", text, re.M)
        return sum(float(value) for value in found)
