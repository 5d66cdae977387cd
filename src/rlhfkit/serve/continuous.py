"""Continuous batching: requests join and leave the decode batch at every step, over one slotted KV cache pool.

Why: with batches that run to completion (`batching.Batcher`), a request that arrives while a batch
decodes waits for it, or decodes in a batch of its own interleaved with it; rows that finished early keep
their place until half the batch is done. Under steady load from many clients each decode step then
carries few rows, while a step of a small model costs about the same for 1 or 32 rows. Here every step
carries every live row of every request:

- The pool has up to `slots` sequences (`generation.slot_decoder.SlotDecoder`: `--max-batch-rows` x
  `--max-active-batches`, the static batcher's bound on rows holding a cache; its memory follows the rows
  live). Between two decode steps, waiting rows take the free slots: the newcomers are prefilled together
  (`SlotDecoder.prefill_many`: left-padded batches of similar lengths; a lone one is what
  `generation.generate` computes for its prompt) and each one's cache is copied into its slot. A row that finishes,
  or whose client left, frees its slot at once.
- One request holds at most `per_job` slots (`--max-batch-rows`); its other rows wait for its own rows to
  finish. Free slots go to the waiting jobs in turn, one row at a time, the job holding the fewest slots
  first. So a 4-token chat that arrives while a 128-choice request decodes starts at the next step, as with
  the static batcher's interleaving; it waits only when `--max-active-batches` large requests fill the pool.
- Each row samples with its own seeded generator through `batching.RowRun`, exactly as the static batcher
  does, so a request with a seed gets the same tokens alone or among 31 others (and greedy output equals
  `rlhfkit generate`'s).

The counters keep the static batcher's names: `batches` counts admissions (one prefill round), `largest` the
most rows in one decode step, `interleaved` the decode steps that carried rows of more than one request.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import torch

from rlhfkit.generation.slot_decoder import SlotDecoder
from rlhfkit.serve.batching import BatchWorker, ErrorEvent, Job, Piece, RowRun, take_tokens


class SlotRows:
    """The rows in the pool's slots: admit newcomers (prefill and first token), then one decode step for all."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        pad_token_id: int,
        slots: int,
        batch_hint: int,
        quantize: str = "none",
    ):
        self.decoder = SlotDecoder(model, slots, batch_hint, quantize)
        self.tokenizer = tokenizer
        self.pad_token_id = pad_token_id
        self.device = next(model.parameters()).device
        self.runs: dict[int, RowRun] = {}  # slot -> the row it holds

    @property
    def free(self) -> int:
        return self.decoder.free

    @property
    def live(self) -> int:
        return len(self.runs)

    def held_by(self, job: Job) -> int:
        return sum(run.job is job for run in self.runs.values())

    def admit(self, pieces: list[Piece]) -> None:
        """Prefill the rows of `pieces` into free slots, together (`SlotDecoder.prefill_many`), and sample
        each one's first token."""
        entries = [(piece.job, piece.start + i, row) for piece in pieces for i, row in enumerate(piece.rows)]
        with torch.inference_mode():
            filled = self.decoder.prefill_many([row.prompt_ids for _, _, row in entries])
            runs = [RowRun(job, index, row, self.tokenizer, self.device) for job, index, row in entries]
            for (slot, _), run in zip(filled, runs):
                self.runs[slot] = run
            take_tokens(runs, torch.cat([logits for _, logits in filled]), self.pad_token_id)
        for (slot, _), run in zip(filled, runs):
            if run.finished:
                self._release(slot)

    def step(self) -> tuple[int, int, int]:
        """Drop the rows of cancelled jobs, then one decode step for the rest: (rows decoded, jobs among
        them, rows abandoned)."""
        abandoned = 0
        for slot, run in list(self.runs.items()):
            if run.job.cancelled:
                abandoned += 1
                self._release(slot)
        if not self.runs:
            return 0, 0, abandoned
        slots = list(self.runs)
        runs = [self.runs[slot] for slot in slots]
        with torch.inference_mode():
            tokens = torch.tensor([run.generated[-1] for run in runs], dtype=torch.long, device=self.device)
            logits = self.decoder.step(slots, tokens)
            take_tokens(runs, logits, self.pad_token_id)
        for slot, run in zip(slots, runs):
            if run.finished:
                self._release(slot)
        return len(slots), len({id(run.job) for run in runs}), abandoned

    def fail_all(self) -> list[Job]:
        """Empty the pool after a failed step; returns the jobs that had rows in it."""
        jobs = list({id(run.job): run.job for run in self.runs.values()}.values())
        for slot in list(self.runs):
            self._release(slot)
        return jobs

    def _release(self, slot: int) -> None:
        del self.runs[slot]
        self.decoder.release(slot)


@dataclass
class _Waiting:
    """A submitted job and its rows not admitted yet (`next_row`: the job index of the first of them)."""

    job: Job
    next_row: int = 0

    @property
    def left(self) -> int:
        return len(self.job.rows) - self.next_row


class ContinuousBatcher(BatchWorker):
    """The same interface as `batching.Batcher` (`submit`, `close`, `lock`, `stats`), decoding continuously.

    `run(pieces)` admits rows into the pool (`SlotRows.admit`); a job holds at most `per_job` slots;
    `gather_s` is how long the worker waits, when a job arrives at an idle server, for others to join its first
    prefill round."""

    def __init__(self, rows: SlotRows, per_job: int, gather_s: float = 0.005, threads: int | None = None):
        self.rows = rows
        self.run = rows.admit
        self.per_job = per_job
        self.gather_s = gather_s
        self._waiting: deque[_Waiting] = deque()
        self._start_worker("rlhfkit-serve-continuous", threads)

    def submit(self, job: Job) -> None:
        with self._wakeup:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if job.rows:
                self._waiting.append(_Waiting(job))
            self._wakeup.notify()

    def _take(self, free: int) -> list[Piece]:
        """Rows for `free` slots, one at a time to the waiting job that holds the fewest slots (then the
        oldest), none to a job holding `per_job`; a job's rows taken together form one piece."""
        with self._wakeup:
            waiting = [w for w in self._waiting if w.left]
            held = {id(w.job): self.rows.held_by(w.job) for w in waiting}
            taken = {id(w.job): 0 for w in waiting}
            for _ in range(free):
                open_jobs = [
                    w
                    for w in waiting
                    if taken[id(w.job)] < w.left and held[id(w.job)] + taken[id(w.job)] < self.per_job
                ]
                if not open_jobs:
                    break
                chosen = min(open_jobs, key=lambda w: held[id(w.job)] + taken[id(w.job)])
                taken[id(chosen.job)] += 1
            pieces = []
            for w in waiting:
                count = taken[id(w.job)]
                if count:
                    pieces.append(Piece(w.job, w.next_row, w.job.rows[w.next_row : w.next_row + count]))
                    w.next_row += count
                    if not w.left:
                        self._waiting.remove(w)
        return pieces

    def _drop_cancelled(self) -> None:
        """Forget the waiting rows of jobs whose client left (call with `_wakeup` held): they never start."""
        for waiting in [w for w in self._waiting if w.job.cancelled]:
            self._waiting.remove(waiting)
            self.stats.abandoned += waiting.left

    def _loop(self) -> None:
        while True:
            with self._wakeup:
                self._drop_cancelled()
                while not self._closed and not self.rows.live and not self._waiting and not self._calls:
                    self._wakeup.wait()
                if self._closed:
                    return
                startable = bool(self._waiting)
            self._run_calls()
            if startable and self.rows.free:
                if not self.rows.live:
                    time.sleep(self.gather_s)  # let concurrent requests join the first prefill round
                self._admit(self._take(self.rows.free))
            if self.rows.live:
                self._step()

    def _admit(self, pieces: list[Piece]) -> None:
        if not pieces:
            return
        self.stats.batches += 1
        self.stats.rows += sum(len(piece.rows) for piece in pieces)
        try:
            with self.lock:
                self.run(pieces)
        except Exception as exc:  # one bad request must not stop the server; its client gets a 500
            self._fail([piece.job for piece in pieces], exc)

    def _step(self) -> None:
        try:
            with self.lock:
                rows, jobs, abandoned = self.rows.step()
        except Exception as exc:
            self._fail(self.rows.fail_all(), exc)
            return
        self.stats.abandoned += abandoned
        self.stats.largest = max(self.stats.largest, rows)
        self.stats.interleaved += jobs > 1

    def _fail(self, jobs: list[Job], exc: Exception) -> None:
        for job in jobs:
            if not job.cancelled:
                job.cancelled = True  # its other rows stop at the next step, its waiting rows never start
                job.sink(ErrorEvent(exc))
