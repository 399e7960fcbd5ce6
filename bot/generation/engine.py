"""The model's one owner: a loop on a worker thread that decodes every admitted request.

The asyncio side only submits and aborts (thread-safe); results leave through each request's
``emit`` callback, which must not block. Each request keeps its own KV cache, so nothing is
recomputed between steps, and every active request advances one token per round, so many
conversations progress together.
"""

from __future__ import annotations

import itertools
import logging
import queue
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.generation.base import GenerationParams
from bot.generation.detok import IncrementalDecoder

__all__ = ["Engine", "Request"]

log = logging.getLogger(__name__)

#: (text delta, finished, error) — called on the engine thread.
Emit = Callable[[str, bool, BaseException | None], None]

_ids = itertools.count(1)


@dataclass(eq=False)
class Request:
    prompt_ids: list[int]
    params: GenerationParams
    emit: Emit
    id: int = field(default_factory=lambda: next(_ids))


@dataclass(eq=False)
class _Running:
    request: Request
    decoder: IncrementalDecoder
    generator: Any
    budget: int
    cache: Any = None
    last_token: int = -1
    produced: int = 0


_STOP = object()


class Engine:
    def __init__(
        self, model: Any, tokenizer: Any, max_batch_size: int, context_window: int
    ) -> None:
        import torch

        self._torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_batch_size = max(1, max_batch_size)
        self.context_window = context_window
        self.eos_ids = _end_of_turn_ids(model, tokenizer)
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._waiting: deque[Request] = deque()
        self._running: list[_Running] = []

    # -- called from any thread -------------------------------------------------------------
    def submit(self, request: Request) -> None:
        self._inbox.put(request)

    def abort(self, request_id: int) -> None:
        self._inbox.put(request_id)

    def stop(self) -> None:
        self._inbox.put(_STOP)

    @property
    def load(self) -> int:
        """Requests admitted or waiting (read without a lock: an estimate for metrics)."""
        return len(self._running) + len(self._waiting)

    # -- the worker thread --------------------------------------------------------------------
    def run(self) -> None:
        with self._torch.inference_mode():
            while self._drain(block=not (self._running or self._waiting)):
                self._admit()
                for running in list(self._running):
                    self._guarded(running, self._decode)
        for running in self._running:
            running.request.emit("", True, None)
        for request in self._waiting:
            request.emit("", True, None)

    def _drain(self, block: bool) -> bool:
        """Take what the asyncio side sent; False once asked to stop."""
        while True:
            try:
                item = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if item is _STOP:
                return False
            if isinstance(item, Request):
                self._waiting.append(item)
            else:
                self._drop(item)

    def _drop(self, request_id: int) -> None:
        for request in self._waiting:
            if request.id == request_id:
                self._waiting.remove(request)
                request.emit("", True, None)
                return
        for running in self._running:
            if running.request.id == request_id:
                self._finish(running)
                return

    def _admit(self) -> None:
        while self._waiting and len(self._running) < self.max_batch_size:
            request = self._waiting.popleft()
            budget = min(
                request.params.max_new_tokens, self.context_window - len(request.prompt_ids)
            )
            running = _Running(
                request,
                IncrementalDecoder(self.tokenizer, request.params.stop),
                self._generator(request.params),
                max(budget, 1),
            )
            self._running.append(running)
            self._guarded(running, self._prefill)

    def _generator(self, params: GenerationParams) -> Any:
        if params.temperature <= 0:
            return None
        generator = self._torch.Generator(device=self.device)
        if params.seed is None:
            generator.seed()
        else:
            generator.manual_seed(params.seed)
        return generator

    def _guarded(self, running: _Running, step: Callable[[_Running], None]) -> None:
        # One request's failure (a bad prompt, out of memory) must not take the others down.
        try:
            step(running)
        except Exception as exc:
            log.exception("generation failed for request %s", running.request.id)
            self._finish(running, exc)

    def _prefill(self, running: _Running) -> None:
        ids = self._torch.tensor([running.request.prompt_ids], device=self.device)
        out = self.model(input_ids=ids, use_cache=True)
        running.cache = out.cache
        self._accept(running, out.logits[:, -1, :])

    def _decode(self, running: _Running) -> None:
        ids = self._torch.tensor([[running.last_token]], device=self.device)
        out = self.model(input_ids=ids, cache=running.cache, use_cache=True)
        running.cache = out.cache
        self._accept(running, out.logits[:, -1, :])

    def _accept(self, running: _Running, logits: Any) -> None:
        token = sample(logits[0], running.request.params, running.generator)
        running.last_token = token
        running.produced += 1
        if token in self.eos_ids:
            self._finish(running)
            return
        delta = running.decoder.push(token)
        if running.decoder.stopped:
            running.request.emit(delta, False, None)
            self._finish(running)
        elif running.produced >= running.budget:
            running.request.emit(delta + running.decoder.flush(), False, None)
            self._finish(running)
        elif delta:
            running.request.emit(delta, False, None)

    def _finish(self, running: _Running, error: BaseException | None = None) -> None:
        if running in self._running:
            self._running.remove(running)
            tail = "" if error else running.decoder.flush()
            running.request.emit(tail, True, error)
            running.cache = None


def sample(logits: Any, params: GenerationParams, generator: Any) -> int:
    """Greedy when temperature is 0, else temperature and nucleus (top-p) sampling."""
    import torch

    if params.temperature <= 0 or generator is None:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > params.top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def _end_of_turn_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>"):
        if marker in vocab:
            ids.add(vocab[marker])
    return frozenset(ids)
