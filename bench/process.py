"""``parley run`` as a process of its own, started, stopped and SIGKILLed at will: how the chaos
bench and the crash tests treat Parley as a deployment would (a kill -9, a restart)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]


class ParleyProcess:
    """``parley --config CONFIG run`` from the checkout, its output in ``log``."""

    def __init__(self, config: Path, log: IO[str], env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log = log
        self.env = env or {}
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start it (what "ready" means is the caller's to wait for)."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "--config",
            str(self.config),
            "run",
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def kill(self) -> None:
        """SIGKILL: nothing is finished, closed or flushed."""
        if self.process is not None and self.running:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM, as a deploy stops it; SIGKILL if it has not ended within 30 s."""
        if self.process is not None and self.running:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                await self.kill()
