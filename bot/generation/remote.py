"""The remote backend: an OpenAI-compatible inference server (vLLM, TGI, Ollama,
``transformers serve``) over ``POST {base_url}/v1/chat/completions`` with ``stream: true``.

Several base URLs may be listed. Each request goes to the server with the fewest requests in
flight; one that refuses a connection, drops a reply or answers 503 is left out for
``remote.cooldown`` seconds (or its ``Retry-After``). A connection error or HTTP 429/503 before
any text has arrived is retried, on the next server, with jittered exponential backoff; once
text has been shown, a failure ends the reply (the conversation keeps the part written).
HTTP, server-sent events and the API's error shapes are the ``openai`` SDK's (one client per
server, its own retries off: a retry here goes to another server first).

Token counts for trimming the context come from the served model's tokenizer when
``remote.tokenizer`` names it (a local folder, or "bundled"); otherwise from a conservative
estimate, :func:`estimate_tokens`, that over-counts rather than overflow the server's window.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
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

import openai

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
    client: openai.AsyncOpenAI | None = None

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


def _client(url: str, api_key: str | None, connect: float, read: float) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{url}/v1",
        # The SDK insists on a key; a server that checks none ignores this one.
        api_key=api_key or "none",
        max_retries=0,
        timeout=openai.Timeout(read, connect=connect),
    )


def _detail(exc: openai.APIStatusError) -> str:
    """The server's own one-line reason, from the usual error body shapes."""
    body: Any = exc.body
    if isinstance(body, dict):
        body = body.get("message", body.get("detail", body.get("error", body)))
        if isinstance(body, dict):
            body = body.get("message", body)
    text = " ".join(str(body or exc.response.text or exc.response.reason_phrase).split())
    return text[:300]


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("Retry-After")
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


def _cause(exc: BaseException) -> str:
    """What went wrong underneath the SDK's generic "Connection error."."""
    cause = exc.__cause__ or exc
    return str(cause) or type(cause).__name__


async def probe(
    url: str, model: str, api_key: str | None, key_env: str, connect_timeout: float = 10.0
) -> Probe:
    """Ask ``url`` which models it serves; say in one line what is wrong, if anything: an
    unreachable server, a base URL that is not an OpenAI-compatible API, a refused key, or a
    model the server does not have."""
    url = _normalise(url)
    try:
        async with _client(url, api_key, connect_timeout, connect_timeout + 10) as client:
            page = await client.models.list()
            served = [entry.id for entry in page.data if entry.id]
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        sent = f"the key in ${key_env}" if api_key else f"no key (${key_env} is unset)"
        return Probe(
            url,
            model,
            f"authentication failed (HTTP {exc.status_code}) with {sent}: {_detail(exc)}",
        )
    except openai.NotFoundError:
        return Probe(
            url,
            model,
            "no OpenAI-compatible API at this base URL (GET /v1/models: HTTP 404);"
            " give the server's root, e.g. http://host:8000",
        )
    except openai.APIStatusError as exc:
        return Probe(url, model, f"GET /v1/models answered HTTP {exc.status_code}: {_detail(exc)}")
    except openai.APIConnectionError as exc:
        return Probe(url, model, f"cannot connect: {_cause(exc)}")
    except (ValueError, TypeError, AttributeError, openai.APIResponseValidationError):
        return Probe(url, model, "GET /v1/models did not answer JSON: is this the right URL?")
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
        self._started = False
        self._format: Any = None  # a PromptFormat when the tokenizer is at hand
        self._in_flight = 0
        self._cache_dir = model.cache_dir if model else ""

    @property
    def in_flight(self) -> int:
        """Streams started and not yet finished."""
        return self._in_flight

    @property
    def ready(self) -> bool:
        return self._started

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("backend already started")
        self._started = True
        key, config = _api_key(self.config), self.config
        for endpoint in self.endpoints:
            endpoint.client = _client(
                endpoint.url, key, config.connect_timeout, config.read_timeout
            )
        try:
            if self.config.tokenizer:
                self._format = await asyncio.to_thread(self._load_tokenizer)
            await self._check_servers()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._started = False
        for endpoint in self.endpoints:
            client, endpoint.client = endpoint.client, None
            if client is not None:
                await client.close()

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
        key, config = _api_key(self.config), self.config
        probes = await asyncio.gather(
            *[
                probe(e.url, self.model, key, config.api_key_env, config.connect_timeout)
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
        if not self._started:
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
        assert endpoint.client is not None
        endpoint.in_flight += 1
        finished = False
        try:
            try:
                stream = await endpoint.client.chat.completions.create(**body)
            except openai.APIConnectionError as exc:
                endpoint.take_out(self.config.cooldown, f"cannot connect: {_cause(exc)}")
                raise _Retry(f"cannot connect: {_cause(exc)}") from exc
            except openai.APIStatusError as exc:
                raise self._refused(endpoint, exc) from exc
            # Closed on the way out: an unfinished stream must stop the server's work.
            async with stream:
                async for chunk in stream:
                    for choice in chunk.choices:
                        finished = finished or bool(choice.finish_reason)
                        if choice.delta and choice.delta.content:
                            yield choice.delta.content
            if not finished:
                endpoint.take_out(self.config.cooldown, "a reply ended early")
                raise _Retry("the server ended the reply before it was complete")
        except openai.APIConnectionError as exc:
            endpoint.take_out(self.config.cooldown, f"connection lost mid-reply: {_cause(exc)}")
            raise _Retry(f"connection lost mid-reply: {_cause(exc)}") from exc
        except openai.APIError as exc:
            # An error event in the stream: the server gave up on this reply.
            raise GenerationError(
                f"inference server {endpoint.url}: the reply failed: {exc.message}"
            ) from exc
        except ValueError as exc:
            raise GenerationError(
                f"inference server {endpoint.url}: an event that is not JSON: {exc}"
            ) from exc
        finally:
            endpoint.in_flight -= 1

    def _refused(self, endpoint: _Endpoint, exc: openai.APIStatusError) -> Exception:
        """What a refusal before any text means: a retry elsewhere, or one line to show."""
        detail, status = _detail(exc), exc.status_code
        if status in _RETRY_STATUSES:
            wait = _retry_after(exc)
            if status != 429:
                endpoint.take_out(wait if wait is not None else self.config.cooldown, detail)
            return _Retry(f"HTTP {status}: {detail}", wait=wait, busy=status in (429, 503))
        if status in (401, 403):
            return GenerationError(
                f"inference server {endpoint.url}: authentication failed (HTTP {status}):"
                f" check ${self.config.api_key_env}: {detail}"
            )
        return GenerationError(f"inference server {endpoint.url}: HTTP {status}: {detail}")
