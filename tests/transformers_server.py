"""A real ``transformers serve`` (OpenAI-compatible; the ``transformers[serving]`` extra) on a
loopback port chosen by the system, serving a local model folder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

__all__ = ["TransformersServer"]

_READY = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")


class TransformersServer:
    def __init__(
        self, model_dir: Path, *, continuous_batching: bool = False, threads: int = 2
    ) -> None:
        self.model_dir = model_dir
        self.continuous_batching = continuous_batching
        self.threads = threads
        self.url = ""
        self.process: subprocess.Popen[str] | None = None
        self.log: deque[str] = deque(maxlen=200)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def model(self) -> str:
        """The name the server knows its pinned model by."""
        return str(self.model_dir)

    def start(self, timeout: float = 180.0) -> None:
        command = [
            sys.executable,
            "-m",
            "transformers.cli.transformers",
            "serve",
            str(self.model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--device",
            "cpu",
            "--log-level",
            "info",
            "--continuous-batching" if self.continuous_batching else "--no-continuous-batching",
        ]
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": str(self.threads),
            "PYTHONUNBUFFERED": "1",
        }
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        # The log is read to its end, or a chatty server would block on a full pipe.
        self._reader = threading.Thread(target=self._read, daemon=True, name="serve-log")
        self._reader.start()
        if not self._ready.wait(timeout) or not self.url:
            self.stop()
            raise RuntimeError("transformers serve did not start:\n" + "".join(self.log))

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line)
            found = _READY.search(line)
            if found and not self.url:
                self.url = found.group(1)
                self._ready.set()
        self._ready.set()  # ended: start() reports the log

    def kill(self) -> None:
        """Stop at once, as a crash would: no graceful end for the replies in flight."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
