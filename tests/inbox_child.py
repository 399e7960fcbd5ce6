"""A Parley service that takes one question in and is then killed (tests/test_inbox.py).

``python -m tests.inbox_child DB STAGE [REDIS_URL]``: with ``taken``, the model never starts
writing; with ``posted``, it writes the first words of the answer and stalls. Once the store
(SQLite at DB, or Redis) shows that stage, it prints ``ready`` and waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys

from adapters.memory import MemoryAdapter
from bot.config import Config, KnowledgeConfig, LimitsConfig, StoreConfig
from bot.core.service import Service
from bot.storage import build_store
from tests.scripted import GatedBackend, ScriptedBackend

LEASE = 0.5


async def main(db: str, stage: str, redis_url: str = "") -> None:
    config = Config(
        # A short lease: the test recovers soon after the kill, once it has lapsed.
        store=StoreConfig(path=db, url=redis_url, lock_ttl=LEASE),
        knowledge=KnowledgeConfig(enabled=False),
        limits=LimitsConfig(user_per_minute=0, channel_per_minute=0),
    )
    backend = (
        GatedBackend("Your parcel is on its way and", before_gate=1)
        if stage == "posted"
        else ScriptedBackend("never written", delay=3600)
    )
    service = Service(config, backend, build_store(config))
    await service.start()
    chat = MemoryAdapter(service, durable=True)
    chat.send("where is my parcel?", message_id="m1")
    while True:
        waiting = await service.store.inbox_waiting()
        if waiting and (stage == "taken" or waiting[0].state == "answering"):
            break
        await asyncio.sleep(0.02)
    print("ready", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
