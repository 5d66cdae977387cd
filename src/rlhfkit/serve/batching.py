"""Batch concurrent requests into shared forward passes: a worker thread per model, interleaved decode loops.

Why a worker thread: the model runs on the CPU (or one GPU), so running two requests side by side only
makes them compete for the same cores; running them *together*, as rows of one batch, costs little more
than running one (a decode step of a small model is dominated by per-op overhead, not by the row count).
So every request becomes a `Job` of rows (one row per choice: `n` x prompts), jobs wait in a queue, and the
worker takes what is queued (up to `max_rows` rows) as one batch: one prefill, then one decode step per
token for all live rows. An idle server answers a lone request after a `gather_s` pause of a few ms.

Why interleaved: a large request must not hold the model while a small one waits. A job is cut into
pieces of at most `max_rows` rows, and at most one piece of a job decodes at a time; the worker keeps up to
`max_active` batches open and advances them round robin, one decode step each. A 4-token chat that arrives
while a 128-choice request runs gets its own batch at the next step boundary and finishes after ~4 of its
own steps interleaved with the big one's, instead of waiting for the whole big request. Memory stays
bounded too: at most `max_active` x `max_rows` rows hold a KV cache at once, whatever the request size.

Why not the generation engine's `generate` for the batch: it draws every row's randomness from one
generator, so a row's tokens would depend on which other requests shared its batch. Here each row owns a
`torch.Generator` seeded with its own seed, and is sampled with the engine's own `pick_next_tokens`, so a
request with a seed gets the same tokens alone, in a batch of 16, or cut into pieces — and exactly what
`rlhfkit.generation.generate` returns for that prompt and seed. The decoders (lean Llama or the general
Hugging Face loop) and stop-string matching are the engine's too.

Tokens are handed to the job's `sink` as they come (`TokenEvent`, then `DoneEvent` per row), which is
what streaming needs; a job whose client went away is marked `cancelled` and its rows stop at the next step.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from rlhfkit.generation import lean_llama
from rlhfkit.generation.engine import lean_or_notice
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
class Piece:
    """Rows `start .. start + len(rows) - 1` of a job, decoded together (events carry the job's row index)."""

    job: Job
    start: int
    rows: list[Row]


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    largest: int = 0  # most rows in one batch
    abandoned: int = 0  # rows stopped early, or never started, because their job was cancelled (client left)
    interleaved: int = 0  # steps taken while another batch was open too


class BatchWorker:
    """What both batchers share: the model lock (held during each prefill or decode step), the counters, and one
    worker thread running `_loop`, woken through `_wakeup` and stopped by `close`. Other torch work on the
    model (scoring echoed prompts) goes to the same thread through `call`.

    `threads`: the worker sets torch to this many CPU threads (None: torch's setting as the thread inherits it).
    Why one thread runs all of a model's torch work, and the server's main thread runs with one CPU thread
    (`rlhfkit serve` does that): torch's CPU threads are GNU OpenMP's, and every Python thread that runs a
    multi-threaded op gets a team of its own. Measured on 2 cores (SmolLM2-135M, int8, batch 1): a step took
    7.6 ms on the main thread and 17.1 ms on a worker thread once the main thread had run with two threads;
    8.2 ms on the worker when the main thread never had. The slow step behaves as if the threads slept between
    parallel regions (`OMP_WAIT_POLICY=PASSIVE` gives the same on the main thread): each of a step's few
    hundred parallel regions pays a wake-up. Two workers (two served models) do not slow each other."""

    def _start_worker(self, name: str, threads: int | None = None) -> None:
        self.lock = threading.Lock()
        self.stats = BatchStats()
        self._wakeup = threading.Condition()
        self._closed = False
        self._calls: deque[tuple[Callable[[], object], Future]] = deque()
        self._threads = threads
        self._thread = threading.Thread(target=self._run_worker, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], object]) -> Future:
        """Run `fn()` on the worker thread between two steps; its result (or exception) arrives in the future."""
        future: Future = Future()
        with self._wakeup:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._calls.append((fn, future))
            self._wakeup.notify()
        return future

    def _run_worker(self) -> None:
        if self._threads:
            torch.set_num_threads(self._threads)
        try:
            self._loop()
        finally:
            with self._wakeup:
                calls, self._calls = list(self._calls), deque()
            for _, future in calls:
                if future.set_running_or_notify_cancel():  # a caller that gave up cancelled its own
                    future.set_exception(RuntimeError("the batcher is closed"))

    def _run_calls(self) -> None:
        """Run the queued `call`s (the loops call this once per round, outside `_wakeup`)."""
        while True:
            with self._wakeup:
                if not self._calls:
                    return
                fn, future = self._calls.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # the caller gets it; the worker goes on
                future.set_exception(exc)

    def _loop(self) -> None:
        raise NotImplementedError

    def close(self, timeout: float = 5.0) -> None:
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        self._thread.join(timeout)


class RowRun:
    """One row being generated: its own seeded generator, stop strings and tokens so far.

    `take` samples the row's next token from its logits and reports it (and the row's end) to the job's sink;
    every batching mode samples through it, so a row's tokens depend only on its prompt, parameters and seed.
    """

    __slots__ = ("job", "index", "row", "generator", "stops", "generated", "finished")

    def __init__(self, job: Job, index: int, row: Row, tokenizer, device: torch.device):
        self.job, self.index, self.row = job, index, row
        self.generator = torch.Generator(device=device).manual_seed(row.params.seed)
        self.stops = StopStrings(tokenizer, row.params.stop_strings)
        self.generated: list[int] = []
        self.finished = False

    def take(self, logits: torch.Tensor, model_logprobs: torch.Tensor, top) -> int:
        """Sample from `logits` [1, vocab] (`model_logprobs` [vocab]: its log-softmax; `top`: (values,
        indices) of its most likely tokens, or None), report the token, and mark the row finished at a stop
        token, a stop string or its length limit. Returns the token."""
        params = self.row.params
        token = int(pick_next_tokens(logits, params, self.generator)[0][0])
        alternatives = ()
        if top is not None and self.row.top_logprobs:
            ids = top[1][: self.row.top_logprobs].tolist()
            alternatives = tuple(zip(ids, top[0][: self.row.top_logprobs].tolist()))
        self.generated.append(token)
        self.job.sink(TokenEvent(self.index, token, float(model_logprobs[token]), alternatives))
        reason = None
        if token in params.stop_token_ids or (self.stops and self.stops.hit(self.generated)):
            reason = "stop"
        elif len(self.generated) >= params.max_new_tokens:
            reason = "length"
        if reason:
            self.finished = True
            self.job.sink(DoneEvent(self.index, reason))
        return token


def take_tokens(runs: list[RowRun | None], logits: torch.Tensor, pad_token_id: int) -> list[int]:
    """Each live run samples its next token from its row of `logits` ([len(runs), vocab]); a row whose run is
    None (finished) gets `pad_token_id`, fed to the decoder but never read."""
    model_logprobs = torch.log_softmax(logits, dim=-1)
    k = max((run.row.top_logprobs for run in runs if run is not None), default=0)
    top = model_logprobs.topk(min(k, model_logprobs.shape[-1]), dim=-1) if k else None
    return [
        pad_token_id
        if run is None
        else run.take(logits[d : d + 1], model_logprobs[d], None if top is None else (top[0][d], top[1][d]))
        for d, run in enumerate(runs)
    ]


def decode_batch(
    model: torch.nn.Module,
    tokenizer,
    pieces: list[Piece],
    pad_token_id: int,
    quantize: str = "none",
    batch_hint: int | None = None,
) -> Iterator[None]:
    """Generate every row of every piece as one left-padded batch, reporting tokens through the jobs' sinks.
    `quantize` is `LeanLlama`'s; `batch_hint` its weight-layout hint (default: this batch's rows). A server
    passes a fixed one: the packed weights are cached per hint, and a new hint repacks them all (0.35-1.6 s
    for SmolLM2-135M on one core), which batches of changing sizes would pay again and again.

    A generator: it yields after the prefill and after each decode step, so the caller can interleave other
    batches between steps; its return value (`StopIteration.value`) is the number of rows abandoned (their
    job was cancelled before they finished)."""
    entries = [(piece.job, piece.start + i, row) for piece in pieces for i, row in enumerate(piece.rows)]
    count = len(entries)
    width = max(len(row.prompt_ids) for _, _, row in entries)
    device = next(model.parameters()).device
    input_ids = torch.full((count, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((count, width), dtype=torch.long)
    for r, (_, _, row) in enumerate(entries):
        input_ids[r, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids, dtype=torch.long)
        attention_mask[r, width - len(row.prompt_ids) :] = 1
    runs = [RowRun(job, index, row, tokenizer, device) for job, index, row in entries]
    abandoned = 0
    max_new = max(row.params.max_new_tokens for _, _, row in entries)

    with torch.inference_mode():
        lean = lean_or_notice(model)
        decoder = lean_llama.LeanLlama(model, batch_hint or count, quantize) if lean else HFDecoder(model)
        logits = decoder.prefill(input_ids.to(device), attention_mask.to(device), max_new)
    carried = list(range(count))  # decoder row -> entry
    while True:
        yield
        with torch.inference_mode():
            for e in carried:
                if not runs[e].finished and runs[e].job.cancelled:
                    abandoned += 1
                    runs[e].finished = True
            live_runs = [None if runs[e].finished else runs[e] for e in carried]
            next_tokens = take_tokens(live_runs, logits, pad_token_id)
            live = [d for d, e in enumerate(carried) if not runs[e].finished]
            if not live:
                return abandoned
            tokens = torch.tensor(next_tokens, dtype=torch.long, device=device)
            if len(live) <= len(carried) // 2:
                index_tensor = torch.tensor(live, dtype=torch.long, device=device)
                if decoder.keep(index_tensor):
                    carried = [carried[d] for d in live]
                    tokens = tokens.index_select(0, index_tensor)
            logits = decoder.step(tokens)


@dataclass
class _Queued:
    """A submitted job and its pieces not started yet."""

    job: Job
    pieces: deque[Piece]
    running: bool = False  # one of its pieces is decoding now


@dataclass
class _Open:
    """A batch being decoded: its pieces and the generator that advances it one step per `next`."""

    pieces: list[Piece]
    steps: Iterator[None]
    owners: list[_Queued]


class Batcher(BatchWorker):
    """A queue of jobs and the worker thread that decodes them in interleaved batches through `run(pieces)`.

    - `max_rows`: most rows (choices) per batch; a larger job is cut into pieces of at most this many rows,
      decoded one after another.
    - `gather_s`: how long the worker waits, after the first job of an idle spell, for others to join it.
    - `max_active`: most batches open at once (advanced round robin, one decode step each); new jobs start
      at the next step boundary while fewer are open, so a small request never waits for a large one.
    `lock` is held during each prefill or decode step; other work on the same model (scoring echoed prompts)
    takes it too.
    """

    def __init__(
        self,
        run: Callable[[list[Piece]], Iterator[None]],
        max_rows: int = 32,
        gather_s: float = 0.005,
        max_active: int = 4,
        threads: int | None = None,
    ):
        self.run = run
        self.max_rows = max_rows
        self.gather_s = gather_s
        self.max_active = max_active
        self._pending: deque[_Queued] = deque()
        self._start_worker("rlhfkit-serve-batcher", threads)

    def submit(self, job: Job) -> None:
        size = self.max_rows
        pieces = deque(Piece(job, i, job.rows[i : i + size]) for i in range(0, len(job.rows), size))
        with self._wakeup:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if pieces:
                self._pending.append(_Queued(job, pieces))
            self._wakeup.notify()

    def _take(self) -> tuple[list[Piece], list[_Queued]]:
        """The next batch: the first waiting piece of each job not decoding now, in arrival order."""
        batch: list[Piece] = []
        owners: list[_Queued] = []
        rows = 0
        with self._wakeup:
            for queued in list(self._pending):
                if queued.running:
                    continue
                piece = queued.pieces[0]
                if batch and rows + len(piece.rows) > self.max_rows:
                    break
                queued.pieces.popleft()
                queued.running = True
                if not queued.pieces:
                    self._pending.remove(queued)
                batch.append(piece)
                owners.append(queued)
                rows += len(piece.rows)
        return batch, owners

    def _has_startable(self) -> bool:
        return any(not q.running and not q.job.cancelled for q in self._pending)

    def _drop_cancelled(self) -> None:
        """Forget the waiting pieces of jobs whose client left (call with `_wakeup` held): they never start."""
        for queued in [q for q in self._pending if q.job.cancelled]:
            self._pending.remove(queued)
            self.stats.abandoned += sum(len(piece.rows) for piece in queued.pieces)

    def _loop(self) -> None:
        open_batches: list[_Open] = []
        while True:
            with self._wakeup:
                self._drop_cancelled()
                while not self._closed and not open_batches and not self._has_startable() and not self._calls:
                    self._wakeup.wait()
                if self._closed:
                    return
                startable = self._has_startable()
            self._run_calls()
            if startable and len(open_batches) < self.max_active:
                if not open_batches:
                    time.sleep(self.gather_s)  # let concurrent requests join the first batch
                pieces, owners = self._take()
                if pieces:
                    rows = sum(len(piece.rows) for piece in pieces)
                    self.stats.batches += 1
                    self.stats.rows += rows
                    self.stats.largest = max(self.stats.largest, rows)
                    try:
                        open_batches.append(_Open(pieces, self.run(pieces), owners))
                    except Exception as exc:
                        self._fail(_Open(pieces, iter(()), owners), exc)
            for batch in list(open_batches):
                if len(open_batches) > 1:
                    self.stats.interleaved += 1
                try:
                    with self.lock:
                        next(batch.steps)
                    continue
                except StopIteration as done:
                    self.stats.abandoned += done.value or 0
                    self._release(batch)
                except Exception as exc:  # one bad batch must not stop the server; its clients get a 500
                    self._fail(batch, exc)
                open_batches.remove(batch)

    def _release(self, batch: _Open) -> None:
        with self._wakeup:
            for queued in batch.owners:
                queued.running = False

    def _fail(self, batch: _Open, exc: Exception) -> None:
        for piece in batch.pieces:
            piece.job.cancelled = True  # its other pieces will not run
            piece.job.sink(ErrorEvent(exc))
        self._release(batch)


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
