"""The model's one owner: a continuous-batching loop on a worker thread.

The asyncio side only submits and aborts (thread-safe); results leave through each request's
``emit`` callback, which must not block. Each step of the loop:

1. takes what was submitted or aborted since the last step;
2. admits waiting requests while the batch has room (``max_batch_size`` rows, and
   ``max_tokens_in_flight`` key/value positions allocated);
3. picks prompt chunks, at most ``prefill_chunk_tokens`` prompt tokens per step, so a long
   prompt delays the others' next token by one chunk, never by a whole prompt. A prompt that
   begins like one already in the cache (every conversation shares the system prompt) copies
   those positions' keys and values from that row instead of computing them again;
4. runs ONE forward over every decoding request's next token and those chunks, side by side
   (packing.py): each token at its own position, attending to its own cache row (kvcache.py).

A request that finishes, hits a stop string or is aborted leaves its row at once and the row is
reused by the next admission; a request that arrives joins the next step. The model is called
through its own ``forward`` (transformers' layers, rotary embeddings and SDPA attention) with
explicit position ids and masks, so a request's tokens are the same whatever else is in the
batch.
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
from bot.generation.packing import Chunk, Packing, additive_mask, use_packed_attention
from bot.generation.quantize import is_quantized
from bot.generation.sampling import end_of_turn_ids, greedy_tokens, penalise, sample

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
        native_attention: bool = True,
    ) -> None:
        import torch

        self._torch = torch
        self.model = model
        self.tokenizer = tokenizer
        use_packed_attention(model)  # before the cache: a model it cannot serve fails here
        self.cache = SlotCache.for_model(model)
        self.device = self.cache.device
        self._prepared_mask = torch.ones((1, 1, 1, 1), dtype=torch.bool, device=self.device)
        self.max_batch_size = max(1, max_batch_size)
        self.context_window = context_window
        #: 0: as many as max_batch_size full-window requests take.
        self.max_tokens_in_flight = max_tokens_in_flight or self.max_batch_size * context_window
        self.prefill_chunk_tokens = max(1, prefill_chunk_tokens)
        # The decoding rows' lengths are what the native kernel needs; without them attention
        # stays PyTorch's. It runs in bf16, and in float32 only for a quantised model: a float32
        # model's greedy replies stay generate()'s, which its sums in another order would not
        # promise. Built now, so a first reply does not wait for the compiler, and where it
        # cannot be built no step computes lengths for nothing.
        self.native_attention = (
            native_attention
            and self.device.type == "cpu"
            and (self.cache.dtype == torch.bfloat16 or is_quantized(model))
        )
        if self.native_attention:
            from bot.generation.native import has_decode_attention

            self.native_attention = has_decode_attention(self.cache.dtype)
        self.eos_ids = end_of_turn_ids(model, tokenizer)
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
        """Admit, then one forward: every decoding row's next token and the prompt chunks that
        fit the prefill budget."""
        self._admit()
        chunks = self._plan_chunks()
        if self._decoding or chunks:
            self._forward(chunks)
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
    def _plan_chunks(self) -> list[tuple[_Running, int]]:
        """The prompt chunks of this round, in admission order: (request, token count), at most
        ``prefill_chunk_tokens`` tokens in all."""
        budget = self.prefill_chunk_tokens
        chunks: list[tuple[_Running, int]] = []
        for running in self._rows[self._decoding :]:
            if budget <= 0:
                break
            if running.length == 0 and not self._start_prompt(running, chunks):
                break
            count = min(len(running.request.prompt_ids) - running.length, budget)
            chunks.append((running, count))
            budget -= count
        return chunks

    def _start_prompt(self, running: _Running, chunks: list[tuple[_Running, int]]) -> bool:
        """Start a new prompt from the longest beginning it shares with a prompt in the cache;
        False when a prompt chunked this round shares more, so waiting a round and copying it
        then beats computing it again (every conversation shares the system prompt).

        The keys and values of a position depend only on the tokens up to it, so a copy is what
        computing them would give. The last prompt token is always computed: its logits give the
        first reply token."""
        prompt = running.request.prompt_ids
        best, donor = 0, -1
        for row, other in enumerate(self._rows):
            if other is not running and other.length >= _MIN_REUSE:
                shared = _shared(prompt, other.request.prompt_ids, other.length)
                if shared > best:
                    best, donor = shared, row
        usable = best if best >= _MIN_REUSE else 0
        pending = (_shared(prompt, o.request.prompt_ids, o.length + n) for o, n in chunks)
        if max(pending, default=0) - usable >= _MIN_REUSE:
            return False
        if usable:
            self.cache.move(donor, self._rows.index(running), usable)
            running.length = usable
            self.reused += usable
        return True

    def _forward(self, planned: list[tuple[_Running, int]]) -> None:
        torch = self._torch
        device = self.device
        decoding = self._rows[: self._decoding]
        ids, positions, packing = self._pack(decoding, planned)
        # Logits for each decoding row, and for the last token of each chunk that ends a prompt.
        finishing = [
            (running, chunk)
            for (running, _), chunk in zip(planned, packing.chunks, strict=True)
            if chunk.end == len(running.request.prompt_ids)
        ]
        keep = [*range(len(decoding)), *(c.offset + c.count - 1 for _, c in finishing)]
        self.cache.plan(packing)
        try:
            out = self.model(
                input_ids=torch.tensor([ids], device=device),
                position_ids=torch.tensor([positions], device=device),
                # Any 4-D mask tells transformers not to build one; the packing carries ours.
                attention_mask=self._prepared_mask,
                cache=self.cache,
                use_cache=True,
                logits_to_keep=torch.tensor(keep, dtype=torch.long, device=device),
                parley_packing=packing,
            )
            logits = out.logits[0]
            tokens = self._sample_batch(logits[: len(decoding)], decoding)
            firsts = [
                sample(row, running.request.params, running.generator)
                for (running, _), row in zip(finishing, logits[len(decoding) :], strict=True)
            ]
        except Exception as exc:
            # A failed step (out of memory) fails the requests in it, not the engine.
            log.exception("forward failed for %d requests", len(decoding) + len(planned))
            for running in [*decoding, *(r for r, _ in planned)]:
                self._finish(running, exc)
            return
        # Lengths first: a request that finishes below moves other rows, up to their length.
        for running in decoding:
            running.length += 1
        for running, count in planned:
            running.length += count
        for running, token in zip(decoding, tokens, strict=True):
            self._accept(running, token)
        for (running, _), token in zip(finishing, firsts, strict=True):
            self._promote(running)
            self._accept(running, token)

    def _pack(
        self, decoding: list[_Running], planned: list[tuple[_Running, int]]
    ) -> tuple[list[int], list[int], Packing]:
        """The round's token ids and positions side by side (decoding rows' next tokens, then
        the chunks), and where each belongs: its cache row and the positions it may attend to."""
        torch = self._torch
        device = self.device
        ids = [r.last_token for r in decoding]
        positions = [r.length for r in decoding]
        chunks: list[Chunk] = []
        for running, count in planned:
            start = running.length
            ids += running.request.prompt_ids[start : start + count]
            positions += range(start, start + count)
            query = torch.arange(start, start + count, device=device)[:, None]
            allowed = torch.arange(start + count, device=device)[None, :] <= query
            mask = additive_mask(allowed[None, None], self.cache.dtype)
            chunks.append(Chunk(self._rows.index(running), start, count, len(ids) - count, mask))
        if not decoding:
            return ids, positions, Packing(chunks=tuple(chunks))
        at = torch.tensor(positions[: len(decoding)], device=device)
        kv_len = max(r.length for r in decoding) + 1
        mask = None
        if len(decoding) > 1:
            allowed = torch.arange(kv_len, device=device)[None, :] <= at[:, None]
            mask = additive_mask(allowed[:, None, None, :], self.cache.dtype)
        # else a lone row reads all of its kv_len positions: without a mask SDPA reads each
        # key/value head once for its query heads instead of copying it per head, as in
        # generate()'s own decode steps.
        lengths = (at + 1).to(torch.int32) if self.native_attention else None
        return ids, positions, Packing(len(decoding), at, kv_len, mask, tuple(chunks), lengths)

    def _sample_batch(self, logits: Any, batch: Sequence[_Running]) -> list[int]:
        # In float: bf16's argmax over the vocabulary is several times slower, and its coarse
        # steps would make near-ties depend on rounding.
        logits = logits.float()
        penalise(logits, [(r.request.output_ids, r.request.params) for r in batch])
        greedy = greedy_tokens(logits)
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


def _shared(prompt: Sequence[int], other: Sequence[int], limit: int) -> int:
    """How many first tokens ``prompt`` shares with ``other``'s first ``limit``, leaving out
    ``prompt``'s last token (it must be computed for its logits)."""
    limit = min(len(prompt) - 1, limit, len(other))
    shared = 0
    while shared < limit and prompt[shared] == other[shared]:
        shared += 1
    return shared
