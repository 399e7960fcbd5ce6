"""Logging set-up: plain text or one JSON object a line, always to stderr."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from bot.config import LogConfig
from bot.redact import redact

__all__ = ["setup_logging"]


class RedactingFormatter(logging.Formatter):
    """Masks secrets and personal data in the whole formatted line, exceptions included."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(config: LogConfig, quiet: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        inner: logging.Formatter = JsonFormatter()
    else:
        inner = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(RedactingFormatter(inner))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else config.level.upper())
    # Libraries' chatter stays out of the way of the conversation.
    for noisy in ("transformers", "httpx", "urllib3", "discord.gateway"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
