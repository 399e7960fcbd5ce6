"""``parley doctor``: check the configured backend and store, one line each, without starting
any adapter or loading a model.

For a remote backend every server is asked which models it serves, which tells apart the usual
mistakes: a wrong base URL, a model the server does not have, a refused API key. The store is
opened and written once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.config import Config
from bot.errors import ParleyError

__all__ = ["Check", "add_parser", "doctor", "run", "run_checks"]


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.what}: {self.detail}"


async def run_checks(config: Config) -> list[Check]:
    checks = await _backend(config)
    checks.append(await _store(config))
    return checks


def add_parser(commands: Any) -> None:
    commands.add_parser(
        "doctor", help="check the model server (or local model) and the store, one line each"
    )


def run(config: Config, args: argparse.Namespace) -> int:
    return asyncio.run(doctor(config))


async def doctor(config: Config, echo: Callable[[str], None] = print) -> int:
    """Print one line per check; 0 when everything is fine, 1 otherwise."""
    checks = await run_checks(config)
    for check in checks:
        echo(str(check))
    return 0 if all(check.ok for check in checks) else 1


async def _backend(config: Config) -> list[Check]:
    if config.model.backend == "local":
        return [_local_model(config)]
    from bot.generation.remote import probe

    remote = config.remote
    if not remote.base_urls:
        return [Check("backend", False, "remote.base_urls is empty")]
    key = os.environ.get(remote.api_key_env) or None if remote.api_key_env else None
    checks = []
    for url in remote.base_urls:
        found = await probe(url, remote.model, key, remote.api_key_env, remote.connect_timeout)
        what = f"backend {found.url}"
        if found.problem is None:
            checks.append(Check(what, True, f"serves model '{found.model}'"))
        else:
            checks.append(Check(what, False, found.problem))
    if remote.tokenizer:
        checks.append(await _tokenizer(config))
    return checks


async def _tokenizer(config: Config) -> Check:
    import asyncio

    from bot.generation.remote import RemoteBackend

    backend = RemoteBackend(config.remote, config.model)
    try:
        await asyncio.to_thread(backend._load_tokenizer)
    except ParleyError as exc:
        return Check("tokenizer", False, str(exc))
    return Check("tokenizer", True, f"'{config.remote.tokenizer}' loads (exact token counts)")


def _local_model(config: Config) -> Check:
    name = config.model.name
    what = "backend local"
    try:
        if name == "bundled":
            from bot.generation.models import bundled_gguf

            return Check(what, True, f"the bundled model, {bundled_gguf()}")
    except ParleyError as exc:
        return Check(what, False, str(exc))
    path = Path(name).expanduser()
    if name.endswith(".gguf") or path.is_absolute() or name.startswith("."):
        if path.exists():
            return Check(what, True, f"model {path}")
        return Check(what, False, f"model.name: {path} does not exist")
    if path.is_dir():
        return Check(what, True, f"model folder {path}")
    where = "the hub (allow_download)" if config.model.allow_download else "the local HF cache"
    return Check(what, True, f"model '{name}' from {where}; not loaded here")


async def _store(config: Config) -> Check:
    from bot.storage import build_store

    try:
        store = build_store(config)
    except ParleyError as exc:
        return Check("store", False, str(exc))
    what = f"store {_describe(config)}"
    try:
        await store.open()
        try:
            await store.check()
            waiting, oldest = await store.inbox_count()
        finally:
            await store.close()
    except (ParleyError, OSError) as exc:
        return Check(what, False, str(exc))
    return Check(what, True, f"open and writable; {_inbox(waiting, oldest)}")


def _inbox(waiting: int, oldest: datetime | None) -> str:
    """Questions taken in and not answered: answered when Parley (re)starts."""
    if not waiting or oldest is None:
        return "inbox empty"
    age = max(0, round((datetime.now(UTC) - oldest).total_seconds()))
    return f"inbox: {waiting} question(s) waiting, the oldest {age} s old"


def _describe(config: Config) -> str:
    if not config.store.url:
        return f"sqlite {config.store.path}"
    from bot.storage.redis import mask_url

    return mask_url(config.store.url)
