"""The model's one owner: a continuous-batching loop on a worker thread.

The asyncio side only submits and aborts (thread-safe); results leave through each request's
``emit`` callback, which must not block. Each step of the loop:

1. takes what was submitted or aborted since the last step;
2. admits waiting requests while the batch has room (``max_batch_size`` rows, and
   ``max_tokens_in_flight`` key/value positions allocated);
3. prefills prompts in chunks, at most ``prefill_chunk_tokens`` prompt tokens per step, so a long
   prompt delays the others' next token by one chunk, never by a whole prompt. A prompt that
   begins like one already in the cache (every conversation shares the system prompt) copies
   those positions' keys and values from that row instead of computing them again;
4. runs ONE forward for every request that is decoding: one new token each, each at its own
   position in its own cache row (see kvcache.py), masked to its own length.

A request that finishes, hits a stop string or is aborted leaves its row at once and the row is
reused by the next admission; a request that arrives joins the next step. The model is called
through its own ``forward`` (transformers' layers, rotary embeddings and attention), with explicit
position ids and a 4-D mask, so a request's tokens are the same whatever else is in the batch.
"""

from __future__ import annotations

import itertools
import logging
import queue
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.generation.base import GenerationParams
from bot.generation.detok import IncrementalDecoder
from bot.generation.kvcache import SlotCache

__all__ = ["Engine", "Request", "sample"]

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
    #: The token ids generated so far (appended on the engine thread; read them once done).
    output_ids: list[int] = field(default_factory=list)


@dataclass(eq=False)
class _Running:
    request: Request
    decoder: IncrementalDecoder
    generator: Any
    budget: int
    #: Positions this request may fill: prompt plus its reply budget.
    reserved: int
    #: Tokens whose keys and values are in the cache.
    length: int = 0
    last_token: int = -1
    produced: int = 0
    done: bool = False

    @property
    def prefilled(self) -> bool:
        return self.length >= len(self.request.prompt_ids)


_STOP = object()
# Shorter shared beginnings are not worth a copy.
_MIN_REUSE = 16


class Engine:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_batch_size: int,
        context_window: int,
        max_tokens_in_flight: int = 0,
        prefill_chunk_tokens: int = 512,
    ) -> None:
        import torch

        self._torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.cache = SlotCache.for_model(model)
        self.device = self.cache.device
        self.max_batch_size = max(1, max_batch_size)
        self.context_window = context_window
        #: 0: as many as max_batch_size full-window requests take.
        self.max_tokens_in_flight = max_tokens_in_flight or self.max_batch_size * context_window
        self.prefill_chunk_tokens = max(1, prefill_chunk_tokens)
        self.eos_ids = _end_of_turn_ids(model, tokenizer)
        #: Rounds run, tokens generated, and prompt tokens copied from another row rather than
        #: computed, since start (for metrics and the bench).
        self.steps = 0
        self.generated = 0
        self.reused = 0
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._waiting: deque[Request] = deque()
        # Physical cache row order: decoding requests first (rows 0 .. _decoding - 1), then the
        # ones still prefilling.
        self._rows: list[_Running] = []
        self._decoding = 0

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
        return len(self._rows) + len(self._waiting)

    # -- the worker thread --------------------------------------------------------------------
    def run(self) -> None:
        with self._torch.inference_mode():
            while True:
                idle = not (self._rows or self._waiting)
                if idle:
                    self.cache.release()
                if not self._drain(block=idle):
                    break
                self._round()
        for running in self._rows:
            running.request.emit("", True, None)
        for request in self._waiting:
            request.emit("", True, None)

    def step(self) -> None:
        """Take what was submitted, then one round (for driving the engine without its thread)."""
        with self._torch.inference_mode():
            self._drain(block=False)
            self._round()

    @property
    def busy(self) -> bool:
        """Something is running or waiting (engine thread or the caller of ``step``)."""
        return bool(self._rows or self._waiting) or not self._inbox.empty()

    def _round(self) -> None:
        """Admit, prefill up to the chunk budget, one batched decode for everyone decoding."""
        self._admit()
        self._prefill()
        if self._decoding:
            self._decode()
        self.steps += 1

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
        for running in self._rows:
            if running.request.id == request_id:
                self._finish(running)
                return

    # -- admission and rows ---------------------------------------------------------------
    def _admit(self) -> None:
        longest = max((r.reserved for r in self._rows), default=0)
        before = len(self._rows)
        while self._waiting and len(self._rows) < self.max_batch_size:
            request = self._waiting[0]
            prompt = len(request.prompt_ids)
            budget = max(min(request.params.max_new_tokens, self.context_window - prompt), 1)
            reserved = prompt + budget
            rows, length = len(self._rows) + 1, max(longest, reserved)
            if self._rows and rows * length > self.max_tokens_in_flight:
                break
            self._waiting.popleft()
            longest = length
            self._rows.append(
                _Running(
                    request,
                    IncrementalDecoder(self.tokenizer, request.params.stop),
                    self._generator(request.params),
                    budget,
                    reserved,
                )
            )
        if len(self._rows) > before:
            self.cache.reserve(
                len(self._rows), longest, in_use=before, max_cells=self.max_tokens_in_flight
            )

    def _remove(self, running: _Running) -> None:
        """Free a row, keeping decoding rows contiguous at the front."""
        rows = self._rows
        hole = rows.index(running)
        if hole < self._decoding:
            last = self._decoding - 1
            self._move(last, hole)
            self._decoding -= 1
            hole = last
        end = len(rows) - 1
        self._move(end, hole)
        rows.pop()

    def _move(self, source: int, target: int) -> None:
        if source != target:
            moved = self._rows[source]
            self.cache.move(source, target, moved.length)
            self._rows[target] = moved

    def _promote(self, running: _Running) -> None:
        """A prompt is in the cache: the request joins the decoding rows."""
        index = self._rows.index(running)
        first = self._decoding
        if index != first:
            other = self._rows[first]
            self.cache.swap(index, first, max(other.length, running.length))
            self._rows[index], self._rows[first] = other, running
        self._decoding += 1

    def _generator(self, params: GenerationParams) -> Any:
        if params.temperature <= 0:
            return None
        generator = self._torch.Generator(device=self.device)
        if params.seed is None:
            generator.seed()
        else:
            generator.manual_seed(params.seed)
        return generator

    # -- forwards ------------------------------------------------------------------------------
    def _prefill(self) -> None:
        budget = self.prefill_chunk_tokens
        for running in self._rows[self._decoding :]:
            if budget <= 0:
                break
            if running.done:
                continue
            try:
                budget -= self._prefill_chunk(running, budget)
            except Exception as exc:
                log.exception("prefill failed for request %s", running.request.id)
                self._finish(running, exc)

    def _reuse_prefix(self, running: _Running) -> None:
        """Start a new prompt from the longest beginning it shares with a prompt in the cache.

        The keys and values of a position depend only on the tokens up to it, so a copy is what
        computing them would give. The last prompt token is always computed: its logits give the
        first reply token."""
        prompt = running.request.prompt_ids
        best, donor = 0, -1
        for row, other in enumerate(self._rows):
            if other is running or other.length < _MIN_REUSE:
                continue
            theirs = other.request.prompt_ids
            limit = min(len(prompt) - 1, other.length, len(theirs))
            shared = 0
            while shared < limit and prompt[shared] == theirs[shared]:
                shared += 1
            if shared > best:
                best, donor = shared, row
        if best >= _MIN_REUSE:
            self.cache.move(donor, self._rows.index(running), best)
            running.length = best
            self.reused += best

    def _prefill_chunk(self, running: _Running, budget: int) -> int:
        torch = self._torch
        prompt = running.request.prompt_ids
        if running.length == 0:
            self._reuse_prefix(running)
        start = running.length
        count = min(len(prompt) - start, budget)
        end = start + count
        row = self._rows.index(running)
        ids = torch.tensor([prompt[start:end]], device=self.device)
        positions = torch.arange(start, end, device=self.device)
        keys = torch.arange(end, device=self.device)
        mask = (keys[None, :] <= positions[:, None])[None, None]
        self.cache.plan_prefill(row, start, count)
        out = self.model(
            input_ids=ids,
            position_ids=positions[None],
            attention_mask=mask,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        running.length = end
        if running.prefilled:
            self._promote(running)
            token = sample(out.logits[0, -1], running.request.params, running.generator)
            self._accept(running, token)
        return count

    def _decode(self) -> None:
        torch = self._torch
        batch = self._rows[: self._decoding]
        lengths = [r.length for r in batch]
        positions = torch.tensor(lengths, device=self.device)
        kv_len = max(lengths) + 1
        keys = torch.arange(kv_len, device=self.device)
        mask = _additive((keys[None, :] <= positions[:, None])[:, None, None, :], self.cache.dtype)
        ids = torch.tensor([[r.last_token] for r in batch], device=self.device)
        self.cache.plan_decode(len(batch), positions, kv_len)
        try:
            out = self.model(
                input_ids=ids,
                position_ids=positions[:, None],
                attention_mask=mask,
                cache=self.cache,
                use_cache=True,
                logits_to_keep=1,
            )
            tokens = self._sample_batch(out.logits[:, -1, :], batch)
        except Exception as exc:
            # A failed batched step (out of memory) fails the requests in it, not the engine.
            log.exception("decode step failed for %d requests", len(batch))
            for running in batch:
                self._finish(running, exc)
            return
        # Lengths first: a request that finishes below moves other rows, up to their length.
        for running in batch:
            running.length += 1
        for running, token in zip(batch, tokens, strict=True):
            self._accept(running, token)

    def _sample_batch(self, logits: Any, batch: Sequence[_Running]) -> list[int]:
        # In float: bf16's argmax over the vocabulary is several times slower, and its coarse
        # steps would make near-ties depend on rounding.
        logits = logits.float()
        penalise(logits, [(r.request.output_ids, r.request.params) for r in batch])
        greedy: list[int] = logits.argmax(dim=-1).tolist()
        return [
            token
            if running.generator is None
            else sample(row, running.request.params, running.generator)
            for running, token, row in zip(batch, greedy, logits, strict=True)
        ]

    # -- results -------------------------------------------------------------------------------
    def _accept(self, running: _Running, token: int) -> None:
        running.last_token = token
        running.produced += 1
        running.request.output_ids.append(token)
        self.generated += 1
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
        """Tell the request it is over and free its row for the next admission."""
        if running.done:
            return
        running.done = True
        tail = "" if error else running.decoder.flush()
        running.request.emit(tail, True, error)
        if running in self._rows:
            self._remove(running)


def _additive(allowed: Any, dtype: Any) -> Any:
    """A boolean attention mask as 0 / -inf in the model's dtype: the CPU attention kernel
    adds a float mask faster than it applies a boolean one (bf16, 32 rows: about 15%)."""
    import torch

    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
        ~allowed, float("-inf")
    )


def penalise(logits: Any, rows: Sequence[tuple[Sequence[int], GenerationParams]]) -> None:
    """Apply each row's ``repetition_penalty`` to the tokens of its reply so far, in place:
    one indexing operation for the whole batch (it runs at every decode step)."""
    import torch

    where: list[int] = []
    tokens: list[int] = []
    penalties: list[float] = []
    for row, (output_ids, params) in enumerate(rows):
        if params.repetition_penalty != 1.0 and output_ids:
            seen = set(output_ids)
            where += [row] * len(seen)
            tokens += seen
            penalties += [params.repetition_penalty] * len(seen)
    if not where:
        return
    index = (torch.tensor(where, device=logits.device), torch.tensor(tokens, device=logits.device))
    scores = logits[index]
    penalty = torch.tensor(penalties, device=logits.device, dtype=scores.dtype)
    logits[index] = torch.where(scores > 0, scores / penalty, scores * penalty)


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
