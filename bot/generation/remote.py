"""The remote backend: an OpenAI-compatible inference server (vLLM, TGI, Ollama,
``transformers serve``) over ``POST {base_url}/v1/chat/completions`` with ``stream: true``.

Several base URLs may be listed. Each request goes to the server with the fewest requests in
flight; one that refuses a connection, drops a reply or answers 503 is left out for
``remote.cooldown`` seconds (or its ``Retry-After``). A connection error or HTTP 429/503 before
any text has arrived is retried, on the next server, with jittered exponential backoff; once
text has been shown, a failure ends the reply (the conversation keeps the part written).

Token counts for trimming the context come from the served model's tokenizer when
``remote.tokenizer`` names it (a local folder, or "bundled"); otherwise from a conservative
estimate, :func:`estimate_tokens`, that over-counts rather than overflow the server's window.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import math
import os
import random
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bot.config import ModelConfig, RemoteConfig
from bot.errors import Busy, GenerationError
from bot.generation.base import Backend, ChatMessage, GenerationParams

__all__ = ["Probe", "RemoteBackend", "estimate_tokens", "probe"]

log = logging.getLogger(__name__)

# The estimate: UTF-8 bytes / 3 per message, plus the chat template's markers. English BPE
# averages about 4 bytes a token; code, numbers and most non-Latin scripts come closer to 3.
BYTES_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 8
TOKENS_PER_PROMPT = 16
# Statuses that mean "not now": retried, elsewhere first.
_RETRY_STATUSES = {429, 502, 503, 504}
_MAX_RETRY_AFTER = 60.0


def estimate_tokens(text: str) -> int:
    """A conservative token count for ``text`` when the model's tokenizer is not at hand."""
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


def _normalise(url: str) -> str:
    """The server's root: people paste ``…/v1`` (what OpenAI clients take) as often as not."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


@dataclass
class _Endpoint:
    url: str
    in_flight: int = 0
    down_until: float = 0.0

    def take_out(self, seconds: float, why: str) -> None:
        self.down_until = max(self.down_until, time.monotonic() + seconds)
        log.warning("inference server %s left out for %.0f s: %s", self.url, seconds, why)


@dataclass(frozen=True)
class Probe:
    """What one server said to ``GET /v1/models``: ``problem`` is None when it can serve."""

    url: str
    model: str
    problem: str | None


class _Retry(Exception):
    """This attempt failed in a way worth trying again (nothing was shown yet)."""

    def __init__(self, message: str, wait: float | None = None, busy: bool = False) -> None:
        super().__init__(message)
        self.wait = wait
        self.busy = busy


def _api_key(config: RemoteConfig) -> str | None:
    return os.environ.get(config.api_key_env) or None if config.api_key_env else None


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def _detail(response: aiohttp.ClientResponse) -> str:
    """The server's own one-line reason, from the usual error body shapes."""
    try:
        text = (await response.text())[:2000]
    except (aiohttp.ClientError, UnicodeDecodeError):
        return response.reason or ""
    try:
        body = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:300] or (response.reason or "")
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error:
            return " ".join(str(error).split())[:300]
    return " ".join(text.split())[:300]


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


async def probe(
    session: aiohttp.ClientSession, url: str, model: str, api_key: str | None, key_env: str
) -> Probe:
    """Ask ``url`` which models it serves; say in one line what is wrong, if anything: an
    unreachable server, a base URL that is not an OpenAI-compatible API, a refused key, or a
    model the server does not have."""
    url = _normalise(url)
    try:
        async with session.get(f"{url}/v1/models", headers=_headers(api_key)) as response:
            if response.status in (401, 403):
                sent = f"the key in ${key_env}" if api_key else f"no key (${key_env} is unset)"
                return Probe(
                    url,
                    model,
                    f"authentication failed (HTTP {response.status}) with {sent}:"
                    f" {await _detail(response)}",
                )
            if response.status == 404:
                return Probe(
                    url,
                    model,
                    "no OpenAI-compatible API at this base URL (GET /v1/models: HTTP 404);"
                    " give the server's root, e.g. http://host:8000",
                )
            if response.status != 200:
                return Probe(
                    url,
                    model,
                    f"GET /v1/models answered HTTP {response.status}: {await _detail(response)}",
                )
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Probe(url, model, f"cannot connect: {exc or type(exc).__name__}")
    except ValueError:
        return Probe(url, model, "GET /v1/models did not answer JSON: is this the right URL?")
    served = [
        str(entry.get("id"))
        for entry in (body.get("data") or [] if isinstance(body, dict) else [])
        if isinstance(entry, dict) and entry.get("id")
    ]
    if not model:
        if len(served) == 1:
            return Probe(url, served[0], None)
        listed = ", ".join(served) or "none"
        return Probe(url, "", f"set remote.model: the server lists {listed}")
    if served and model not in served:
        return Probe(
            url,
            model,
            f"the server does not have model '{model}'; it serves: {', '.join(served)}",
        )
    return Probe(url, model, None)


class RemoteBackend(Backend):
    def __init__(self, config: RemoteConfig, model: ModelConfig | None = None) -> None:
        if not config.base_urls:
            raise GenerationError("remote.base_urls is empty: name at least one server")
        self.config = config
        self.context_window = (model.context_window if model else 0) or 2048
        self.model = config.model
        self.endpoints = [_Endpoint(_normalise(url)) for url in config.base_urls]
        self._session: aiohttp.ClientSession | None = None
        self._format: Any = None  # a PromptFormat when the tokenizer is at hand
        self._in_flight = 0
        self._cache_dir = model.cache_dir if model else ""

    @property
    def in_flight(self) -> int:
        """Streams started and not yet finished."""
        return self._in_flight

    @property
    def ready(self) -> bool:
        return self._session is not None and not self._session.closed

    async def start(self) -> None:
        if self._session is not None:
            raise RuntimeError("backend already started")
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.config.connect_timeout, sock_read=self.config.read_timeout
        )
        self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            if self.config.tokenizer:
                self._format = await asyncio.to_thread(self._load_tokenizer)
            await self._check_servers()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        from bot.generation.models import PromptFormat, bundled_gguf, cache_root

        name = self.config.tokenizer
        try:
            if name == "bundled":
                gguf = bundled_gguf()
                root = cache_root(ModelConfig(cache_dir=self._cache_dir))
                converted = [p for p in root.glob(f"{gguf.stem}-*") if (p / "config.json").exists()]
                if converted:
                    tokenizer = AutoTokenizer.from_pretrained(str(converted[0]))
                else:
                    # Only the tokenizer: no need to convert the whole model for it.
                    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            else:
                tokenizer = AutoTokenizer.from_pretrained(
                    str(Path(name).expanduser()), local_files_only=True
                )
        except GenerationError:
            raise
        except Exception as exc:
            raise GenerationError(f"remote.tokenizer '{name}': cannot load it: {exc}") from exc
        return PromptFormat(tokenizer)

    async def _check_servers(self) -> None:
        """One line per server that cannot serve; fails only when none can."""
        key = _api_key(self.config)
        # A session of its own, so no idle connection from the check lingers in the pool.
        timeout = aiohttp.ClientTimeout(
            total=self.config.connect_timeout + 10, connect=self.config.connect_timeout
        )
        async with aiohttp.ClientSession(timeout=timeout) as session:
            probes = await asyncio.gather(
                *[
                    probe(session, e.url, self.model, key, self.config.api_key_env)
                    for e in self.endpoints
                ]
            )
        good = [p for p in probes if p.problem is None]
        for endpoint, found in zip(self.endpoints, probes, strict=True):
            if found.problem is not None:
                endpoint.take_out(self.config.cooldown, found.problem)
        if not good:
            first = probes[0]
            raise GenerationError(f"inference server {first.url}: {first.problem}")
        if not self.model:
            self.model = good[0].model
        log.info("remote model %s on %s", self.model, ", ".join(p.url for p in good))

    # -- tokens ------------------------------------------------------------------------------
    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        if self._format is not None:
            return len(self._format.encode(messages))
        return TOKENS_PER_PROMPT + sum(
            TOKENS_PER_MESSAGE + estimate_tokens(m.content) for m in messages
        )

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        if self._format is not None:
            tokenizer = self._format.tokenizer
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = encoded["offset_mapping"]
            return text if len(offsets) <= max_tokens else text[: offsets[max_tokens - 1][1]]
        data = text.encode("utf-8")[: max_tokens * BYTES_PER_TOKEN]
        return data.decode("utf-8", errors="ignore")

    # -- generation --------------------------------------------------------------------------
    def _pick(self) -> _Endpoint:
        now = time.monotonic()
        up = [e for e in self.endpoints if e.down_until <= now]
        if not up:
            # All are out: try the one due back first rather than refuse outright.
            return min(self.endpoints, key=lambda e: e.down_until)
        fewest = min(e.in_flight for e in up)
        return random.choice([e for e in up if e.in_flight == fewest])

    def _body(self, messages: Sequence[ChatMessage], params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
        }
        if params.top_p < 1.0:
            body["top_p"] = params.top_p
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[str, None]:
        if self._session is None:
            raise GenerationError("the backend is not started")
        if self._in_flight >= self.config.max_in_flight:
            raise Busy("too many replies are being written right now")
        self._in_flight += 1
        try:
            body = self._body(messages, params)
            attempt = 0
            while True:
                endpoint = self._pick()
                shown = False
                try:
                    # aclosing: a reader that stops early closes the HTTP stream at once.
                    async with contextlib.aclosing(self._attempt(endpoint, body)) as deltas:
                        async for delta in deltas:
                            shown = True
                            yield delta
                    return
                except _Retry as exc:
                    if shown:
                        raise GenerationError(
                            f"inference server {endpoint.url}: {exc} (the reply was cut short)"
                        ) from exc
                    attempt += 1
                    if attempt > self.config.retries:
                        if exc.busy:
                            raise Busy(f"inference server {endpoint.url}: {exc}") from exc
                        raise GenerationError(f"inference server {endpoint.url}: {exc}") from exc
                    backoff = self.config.backoff * 2 ** (attempt - 1)
                    wait = exc.wait if exc.wait is not None else backoff
                    log.info("trying again in about %.1f s (%s: %s)", wait, endpoint.url, exc)
                    # Full jitter on our own backoff, so replicas do not retry in step.
                    await asyncio.sleep(
                        wait if exc.wait is not None else random.uniform(wait / 2, wait)
                    )
        finally:
            self._in_flight -= 1

    async def _attempt(
        self, endpoint: _Endpoint, body: dict[str, Any]
    ) -> AsyncGenerator[str, None]:
        assert self._session is not None
        url = f"{endpoint.url}/v1/chat/completions"
        endpoint.in_flight += 1
        response: aiohttp.ClientResponse | None = None
        finished = False
        try:
            try:
                response = await self._session.post(
                    url, json=body, headers=_headers(_api_key(self.config))
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                endpoint.take_out(self.config.cooldown, f"cannot connect: {exc}")
                raise _Retry(f"cannot connect: {exc or type(exc).__name__}") from exc
            if response.status != 200:
                await self._refused(endpoint, response)
            async with contextlib.aclosing(self._events(endpoint, response)) as events:
                async for delta, done in events:
                    finished = finished or done
                    if delta:
                        yield delta
            if not finished:
                endpoint.take_out(self.config.cooldown, "a reply ended early")
                raise _Retry("the server ended the reply before it was complete")
        finally:
            endpoint.in_flight -= 1
            if response is not None:
                # Closing, not releasing: an unfinished stream must stop the server's work.
                (response.release if finished else response.close)()

    async def _refused(self, endpoint: _Endpoint, response: aiohttp.ClientResponse) -> None:
        detail = await _detail(response)
        status = response.status
        if status in _RETRY_STATUSES:
            wait = _retry_after(response)
            if status != 429:
                endpoint.take_out(wait if wait is not None else self.config.cooldown, detail)
            raise _Retry(f"HTTP {status}: {detail}", wait=wait, busy=status in (429, 503))
        if status in (401, 403):
            raise GenerationError(
                f"inference server {endpoint.url}: authentication failed (HTTP {status}):"
                f" check ${self.config.api_key_env}: {detail}"
            )
        raise GenerationError(f"inference server {endpoint.url}: HTTP {status}: {detail}")

    async def _events(
        self, endpoint: _Endpoint, response: aiohttp.ClientResponse
    ) -> AsyncGenerator[tuple[str, bool], None]:
        """(text delta, finished) from the server-sent events of one reply."""
        try:
            async for raw in response.content:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue  # blank separators, comments (keep-alives), other fields
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    yield "", True
                    return
                try:
                    chunk = json.loads(data)
                except ValueError as exc:
                    raise GenerationError(
                        f"inference server {endpoint.url}: not a JSON event: {data[:200]}"
                    ) from exc
                if isinstance(chunk, dict) and chunk.get("error"):
                    error = chunk["error"]
                    message = error.get("message", error) if isinstance(error, dict) else error
                    raise GenerationError(
                        f"inference server {endpoint.url}: the reply failed: {message}"
                    )
                for choice in chunk.get("choices") or [] if isinstance(chunk, dict) else []:
                    content = (choice.get("delta") or {}).get("content") or ""
                    yield content, bool(choice.get("finish_reason"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            endpoint.take_out(self.config.cooldown, f"connection lost mid-reply: {exc}")
            raise _Retry(f"connection lost mid-reply: {exc or type(exc).__name__}") from exc
