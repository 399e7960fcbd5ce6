"""A real ``redis-server`` (the Debian package; ``.ci/install-redis`` installs it) on a free
loopback port, in a folder of its own, persisting nothing."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

__all__ = ["RedisServer"]

_ATTEMPTS = 5


def _free_port() -> int:
    # redis-server's `--port 0` means "no TCP at all", so a port is picked here; another
    # process may take it meanwhile, hence the retries in start().
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run .ci/install-redis")
        output = ""
        for _ in range(_ATTEMPTS):
            self.port = _free_port()
            process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.folder),
                    "--logfile",
                    "",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert process.stdout is not None
            # Its log goes to stdout: ready, or the reason it stopped (a taken port).
            lines = []
            for line in process.stdout:
                lines.append(line)
                if "Ready to accept connections" in line:
                    self.process = process
                    return
            process.wait()
            output = "".join(lines)
        raise RuntimeError(f"redis-server did not start:\n{output}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
