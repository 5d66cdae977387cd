"""Batch concurrent requests into one forward pass: a worker thread per model and a per-row decode loop.

Why a worker thread: the model runs on the CPU (or one GPU), so running two requests side by side only
makes them compete for the same cores; running them *together*, as rows of one batch, costs little more
than running one (a decode step of a small model is dominated by per-op overhead, not by the row count).
So every request becomes a `Job` of rows (one row per choice: `n` x prompts), jobs wait in a queue, and the
worker takes everything queued (up to `max_rows` rows) as one batch: one prefill, then one decode step per
token for all live rows. Requests that arrive while a batch runs form the next batch, so the batch size
follows the load by itself; an idle server answers a lone request after a `gather_s` pause of a few ms.

Why not the generation engine's `generate` for the batch: it draws every row's randomness from one
generator, so a row's tokens would depend on which other requests shared its batch. Here each row owns a
`torch.Generator` seeded with its own seed, and is sampled with the engine's own `pick_next_tokens`, so a
request with a seed gets the same tokens alone or in a batch of 16 — and exactly what
`rlhfkit.generation.generate` returns for that prompt and seed. The decoders (lean Llama or the general
Hugging Face loop) and stop-string matching are the engine's too.

Tokens are handed to the job's `sink` as they come (`TokenEvent`, then `DoneEvent` per row), which is
what streaming needs; a job whose client went away is marked `cancelled` and its rows stop at the next step.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rlhfkit.generation import lean_llama
from rlhfkit.generation.hf_decoder import HFDecoder
from rlhfkit.generation.params import SamplingParams
from rlhfkit.generation.sampling import pick_next_tokens
from rlhfkit.generation.stopping import StopStrings


@dataclass
class Row:
    """One choice to generate. `params.seed` must be set (the server draws one when the client did not)."""

    prompt_ids: list[int]
    params: SamplingParams
    top_logprobs: int = 0  # how many most likely alternatives to report per token


@dataclass(frozen=True)
class TokenEvent:
    row: int
    token_id: int
    logprob: float  # log p(token) under the model's own distribution (temperature 1, no truncation)
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob) of the most likely tokens, best first


@dataclass(frozen=True)
class DoneEvent:
    row: int
    finish_reason: str  # "stop" or "length"


@dataclass(frozen=True)
class ErrorEvent:
    error: BaseException


Event = TokenEvent | DoneEvent | ErrorEvent


@dataclass
class Job:
    rows: list[Row]
    sink: Callable[[Event], None]  # called from the worker thread
    cancelled: bool = False


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    largest: int = 0  # most rows in one batch
    abandoned: int = 0  # rows stopped early because their client went away


def decode_batch(model: torch.nn.Module, tokenizer, jobs: list[Job], pad_token_id: int) -> int:
    """Generate every row of every job as one left-padded batch, reporting tokens through the jobs' sinks.

    Returns the number of rows abandoned (their job was cancelled before they finished)."""
    entries = [(job, i, row) for job in jobs for i, row in enumerate(job.rows)]
    count = len(entries)
    width = max(len(row.prompt_ids) for _, _, row in entries)
    device = next(model.parameters()).device
    input_ids = torch.full((count, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((count, width), dtype=torch.long)
    for r, (_, _, row) in enumerate(entries):
        input_ids[r, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids, dtype=torch.long)
        attention_mask[r, width - len(row.prompt_ids) :] = 1
    generators = [torch.Generator(device=device).manual_seed(row.params.seed) for _, _, row in entries]
    stops = [StopStrings(tokenizer, row.params.stop_strings) for _, _, row in entries]
    generated: list[list[int]] = [[] for _ in entries]
    finished = [False] * count
    abandoned = 0
    max_new = max(row.params.max_new_tokens for _, _, row in entries)

    with torch.inference_mode():
        decoder = lean_llama.LeanLlama(model, count) if lean_llama.supports(model) else HFDecoder(model)
        logits = decoder.prefill(input_ids.to(device), attention_mask.to(device), max_new)
        carried = list(range(count))  # decoder row -> entry
        while True:
            model_logprobs = torch.log_softmax(logits, dim=-1)
            k = max(entries[e][2].top_logprobs for e in carried)
            top = model_logprobs.topk(min(k, model_logprobs.shape[-1]), dim=-1) if k else None
            next_tokens = []
            for d, e in enumerate(carried):
                job, index, row = entries[e]
                if finished[e] or job.cancelled:
                    abandoned += not finished[e]
                    finished[e] = True
                    next_tokens.append(pad_token_id)  # fed but never read: the row is done
                    continue
                token = int(pick_next_tokens(logits[d : d + 1], row.params, generators[e])[0][0])
                alternatives = ()
                if top is not None and row.top_logprobs:
                    ids = top.indices[d, : row.top_logprobs].tolist()
                    alternatives = tuple(zip(ids, top.values[d, : row.top_logprobs].tolist()))
                generated[e].append(token)
                job.sink(TokenEvent(index, token, float(model_logprobs[d, token]), alternatives))
                next_tokens.append(token)
                reason = None
                if token in row.params.stop_token_ids or (stops[e] and stops[e].hit(generated[e])):
                    reason = "stop"
                elif len(generated[e]) >= row.params.max_new_tokens:
                    reason = "length"
                if reason:
                    finished[e] = True
                    job.sink(DoneEvent(index, reason))
            live = [d for d, e in enumerate(carried) if not finished[e]]
            if not live:
                return abandoned
            tokens = torch.tensor(next_tokens, dtype=torch.long, device=device)
            if len(live) <= len(carried) // 2:
                index_tensor = torch.tensor(live, dtype=torch.long, device=device)
                if decoder.keep(index_tensor):
                    carried = [carried[d] for d in live]
                    tokens = tokens.index_select(0, index_tensor)
            logits = decoder.step(tokens)


class Batcher:
    """A queue of jobs and the worker thread that runs them in batches through `run(jobs)`.

    - `max_rows`: most rows (choices) per batch; a single job larger than this still runs, alone.
    - `gather_s`: how long the worker waits, after the first job of an idle spell, for others to join it.
    `lock` is held while a batch runs; other work on the same model (scoring echoed prompts) takes it too.
    """

    def __init__(self, run: Callable[[list[Job]], int | None], max_rows: int = 32, gather_s: float = 0.005):
        self.run = run
        self.max_rows = max_rows
        self.gather_s = gather_s
        self.lock = threading.Lock()
        self.stats = BatchStats()
        self._pending: deque[Job] = deque()
        self._wakeup = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="rlhfkit-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._wakeup:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._pending.append(job)
            self._wakeup.notify()

    def close(self, timeout: float = 5.0) -> None:
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        self._thread.join(timeout)

    def _next_batch(self) -> list[Job] | None:
        with self._wakeup:
            while not self._pending and not self._closed:
                self._wakeup.wait()
            if not self._pending:
                return None
        time.sleep(self.gather_s)
        batch, rows = [], 0
        with self._wakeup:
            while self._pending:
                job = self._pending[0]
                if batch and rows + len(job.rows) > self.max_rows:
                    break
                batch.append(self._pending.popleft())
                rows += len(job.rows)
        return [job for job in batch if not job.cancelled]

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            if not batch:
                continue
            try:
                with self.lock:
                    self.stats.abandoned += self.run(batch) or 0
            except Exception as exc:  # one bad batch must not stop the server; its clients get a 500
                for job in batch:
                    job.sink(ErrorEvent(exc))
            rows = sum(len(job.rows) for job in batch)
            self.stats.batches += 1
            self.stats.rows += rows
            self.stats.largest = max(self.stats.largest, rows)


@dataclass
class JobStream:
    """The async side of a job: submit it, then iterate its events; `cancel` (or leaving early) stops it."""

    batcher: Batcher
    rows: list[Row]
    job: Job | None = field(default=None, init=False)

    async def events(self):
        import asyncio

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()

        def sink(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                job.cancelled = True

        job = Job(self.rows, sink)
        self.job = job
        self.batcher.submit(job)
        remaining = len(self.rows)
        try:
            while remaining:
                event = await queue.get()
                if isinstance(event, ErrorEvent):
                    raise event.error
                if isinstance(event, DoneEvent):
                    remaining -= 1
                yield event
        finally:
            job.cancelled = True  # a no-op when all rows are done; stops the rows of a client that left

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancelled = True
