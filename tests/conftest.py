"""Shared fixtures: a tiny randomly initialised Llama model, the bundled model, a service.

The tiny model uses the bundled model's tokenizer (so prompts, chat template and detokenising
are real) with a 2-layer, 64-wide network built from a config here: fast enough for every test.
The bundled model is converted once into ``.cache/models`` in the repository (ignored by git).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bot.config import (
    BotConfig,
    Config,
    KnowledgeConfig,
    LimitsConfig,
    ModelConfig,
    StoreConfig,
)
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = ROOT / ".cache" / "models"
SECRET_VARS = (
    "PARLEY_CONFIG",
    "DISCORD_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without the operator's secrets or config in its environment."""
    for name in SECRET_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the tests' own, for the whole run."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> AsyncIterator[str]:
    """The URL of that server, emptied for each test."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    yield redis_server.url


@pytest.fixture(params=["sqlite", "redis"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    """Each store the service can keep its data in: SQLite, and Redis (the tests' own)."""
    path = str(tmp_path / "parley.db")
    if request.param == "sqlite":
        return StoreConfig(path=path)
    return StoreConfig(path=path, url=request.getfixturevalue("redis_url"))


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    """The bundled SmolLM2 model as a converted safetensors folder (converted once)."""
    from bot.generation.models import _converted_gguf, bundled_gguf

    return _converted_gguf(bundled_gguf(), MODEL_CACHE)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, bundled_dir: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(bundled_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_config(model_dir: Path, tmp_path: Path, **model_overrides: object) -> Config:
    model = dataclasses.replace(
        ModelConfig(
            name=str(model_dir),
            max_new_tokens=12,
            temperature=0.0,
            context_window=512,
            cache_dir=str(MODEL_CACHE),
        ),
        **model_overrides,  # type: ignore[arg-type]
    )
    return Config(
        bot=BotConfig(name="Parley", company="Acme Cloud"),
        model=model,
        store=StoreConfig(path=str(tmp_path / "parley.db")),
        # Rate limits have their own tests; elsewhere they would only get in the way.
        limits=LimitsConfig(
            user_per_minute=0, channel_per_minute=0, bot_messages_per_channel_minute=0
        ),
        # The knowledge base has its own tests (test_knowledge.py); elsewhere the tiny model
        # answers whatever it is asked, as before.
        knowledge=KnowledgeConfig(enabled=False),
    )


@pytest.fixture
def tiny_config(tiny_model_dir: Path, tmp_path: Path) -> Config:
    return make_config(tiny_model_dir, tmp_path)


@pytest.fixture
async def service(tiny_config: Config) -> AsyncIterator[object]:
    from bot.app.wiring import build_service

    async with build_service(tiny_config) as svc:
        yield svc


def pytest_configure(config: pytest.Config) -> None:
    # Two cores: torch's default of one thread per core fights the event loop's threads.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
