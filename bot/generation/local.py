"""The local backend: a transformers model owned by one worker thread (see engine.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from bot.config import ModelConfig
from bot.errors import Busy, GenerationError, ModelLoadError
from bot.generation.base import Backend, ChatMessage, GenerationParams
from bot.generation.engine import Engine, Request
from bot.generation.models import LoadedModel, PromptFormat, load_model
from bot.generation.quantize import quantize_int8

__all__ = ["LocalBackend"]

log = logging.getLogger(__name__)


class _Mailbox:
    """Merges a request's output while its reader is busy: the engine never waits on it."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._done = False
        self._error: BaseException | None = None
        self._ready = asyncio.Event()

    def put(self, delta: str, done: bool, error: BaseException | None) -> None:
        if delta:
            self._parts.append(delta)
        self._done = self._done or done
        self._error = self._error or error
        self._ready.set()

    async def take(self) -> tuple[str, bool, BaseException | None]:
        await self._ready.wait()
        self._ready.clear()
        text, self._parts = "".join(self._parts), []
        return text, self._done, self._error


class LocalBackend(Backend):
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._engine: Engine | None = None
        self._format: PromptFormat | None = None
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self.loaded: LoadedModel | None = None

    @property
    def in_flight(self) -> int:
        """Streams started and not yet finished."""
        return self._in_flight

    @property
    def ready(self) -> bool:
        return self._engine is not None and self._thread is not None and self._thread.is_alive()

    async def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("backend already started")
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._main, args=(loop, started), name="parley-engine", daemon=True
        )
        self._thread.start()
        await started

    def _main(self, loop: asyncio.AbstractEventLoop, started: asyncio.Future[None]) -> None:
        try:
            import torch

            if self.config.threads > 0:
                torch.set_num_threads(self.config.threads)
            loaded = load_model(self.config)
            if self.config.quantize == "int8":
                loaded.model = quantize_int8(loaded.model)
            # Imported here: it imports torch, which the rest of the service loads lazily.
            from bot.generation.prepack import cpu_has_bf16_units, prepack_bf16_linears

            if (
                loaded.device == "cpu"
                and loaded.dtype == torch.bfloat16
                and not cpu_has_bf16_units()
            ):
                log.warning(
                    "model.dtype = 'bfloat16' on a CPU without bf16 units (AVX512-BF16 or AMX):"
                    " PyTorch emulates it, about 3x slower than 'float32' on an AVX2 CPU"
                )
            prepack_bf16_linears(loaded.model, native=self.config.native_kernels)
            window = _context_window(loaded.model, self.config.context_window)
            self.context_window = window
            self._engine = Engine(
                loaded.model,
                loaded.tokenizer,
                self.config.max_batch_size,
                window,
                max_tokens_in_flight=self.config.max_tokens_in_flight,
                prefill_chunk_tokens=self.config.prefill_chunk_tokens,
                native_attention=self.config.native_kernels,
            )
            self._format = PromptFormat(loaded.tokenizer)
            self.loaded = loaded
        except BaseException as exc:
            error = exc if isinstance(exc, ModelLoadError) else ModelLoadError(str(exc))
            loop.call_soon_threadsafe(_fail, started, error)
            return
        log.info("model ready: %s on %s (%s)", loaded.source, loaded.device, loaded.dtype)
        loop.call_soon_threadsafe(_succeed, started)
        self._engine.run()

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.stop()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self._engine = None

    def _parts(self) -> tuple[Engine, PromptFormat]:
        if self._engine is None or self._format is None:
            raise GenerationError("the backend is not started")
        return self._engine, self._format

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self._parts()[1].encode(messages))

    def truncate(self, text: str, max_tokens: int) -> str:
        tokenizer = self._parts()[1].tokenizer
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        if len(offsets) <= max_tokens:
            return text
        return text[: offsets[max_tokens - 1][1]] if max_tokens > 0 else ""

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[str, None]:
        engine, prompt_format = self._parts()
        if self._in_flight >= self.config.max_batch_size + self.config.queue_size:
            raise Busy("too many replies are being written right now")
        self._in_flight += 1
        try:
            prompt_ids = await asyncio.to_thread(prompt_format.encode, messages)
            if prompt_format.stop_strings:
                stops = (*params.stop, *prompt_format.stop_strings)
                params = dataclasses.replace(params, stop=stops)
            loop = asyncio.get_running_loop()
            box = _Mailbox()

            def emit(delta: str, done: bool, error: BaseException | None) -> None:
                # The loop may be closing while the engine finishes a step.
                if not loop.is_closed():
                    loop.call_soon_threadsafe(box.put, delta, done, error)

            request = Request(prompt_ids, params, emit)
            engine.submit(request)
            done = False
            try:
                while not done:
                    text, done, error = await box.take()
                    if text:
                        yield text
                    if error is not None:
                        raise GenerationError(f"the model failed: {error}") from error
            finally:
                if not done:
                    engine.abort(request.id)
        finally:
            self._in_flight -= 1


def _context_window(model: Any, configured: int) -> int:
    native = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 2048
    return min(configured, native) if configured > 0 else native


def _fail(future: asyncio.Future[None], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _succeed(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
