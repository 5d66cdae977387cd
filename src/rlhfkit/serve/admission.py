"""Admission: what a request may cost before it reaches the batcher, and the fair queue it waits in.

Why: parsing a body and tokenizing its prompts is CPU work done before the model runs, and a flood of large
prompts used to run all of it at once, each on its own thread: 50 concurrent ~1 MiB prompts, every one
to be refused for its length, grew the server by 1.6 GB and held a 4-token request for over a minute. So:

- **Refused on length before tokenizing** (`check_prompt_chars`): no token of a vocabulary spells more than
  its longest entry, so a text of more than `context x longest` characters cannot fit in the context, and a
  request with more than `max_request_tokens x longest` characters in all cannot fit in the request limit.
  Such a prompt is refused from `len()` alone. (The bound is safe for byte-level BPE, SentencePiece and
  WordPiece vocabularies; a normalizer that deletes characters could make it refuse a text that would
  have fit, which takes a prompt padded with characters the model never sees.)
- **A bounded number at work** (`Admission`): at most `admission_workers` parses or tokenizations run at once,
  off the event loop; the others wait in a queue of at most `max_waiting` requests, `max_waiting_per_client`
  of them from one client. Beyond that a request is refused at once (503, or 429 for the client over its
  share) with `Retry-After`, instead of piling up in memory.
- **Fair between clients**: the queue hands a free worker to each waiting client in turn (round robin), so a
  client with 50 requests waiting delays another client's one request by at most one turn. A client is its
  API key when it sends one, else its address.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rlhfkit.serve.errors import APIError, bad_request
from rlhfkit.serve.limits import Limits

T = TypeVar("T")
Offload = Callable[..., Awaitable[Any]]  # offload(fn, *args): fn(*args) run off the event loop
RETRY_AFTER_S = 1


def client_of(scope: dict) -> str:
    """Who is asking, for fairness: the API key's digest when a Bearer key is sent, else the remote address."""
    header = dict(scope.get("headers") or []).get(b"authorization", b"")
    scheme, _, key = header.partition(b" ")
    if scheme.lower() == b"bearer" and key.strip():
        return "key:" + hashlib.sha256(key.strip()).hexdigest()[:16]
    address = scope.get("client")
    return f"addr:{address[0]}" if address else "addr:unknown"


def longest_token_chars(tokenizer) -> int:
    """Characters in the longest entry of the vocabulary (special tokens included): no token spells more."""
    return max((len(token) for token in tokenizer.get_vocab()), default=1) or 1


def check_prompt_chars(served, texts: list[str], n: int, limits: Limits, param: str) -> None:
    """Refuse texts that cannot fit from their length in characters alone, before the tokenizer sees them."""
    cap = served.max_prompt_chars
    for text in texts:
        if len(text) > cap:
            raise bad_request(
                f"This model's maximum context length is {served.context_length} tokens, and no text longer "
                f"than {cap} characters fits in it (its longest token has {served.longest_token_chars} "
                f"characters). Your {param} has {len(text)} characters. Please reduce your prompt.",
                param=param,
                code="context_length_exceeded",
            )
    total = n * sum(len(text) for text in texts)
    allowed = limits.max_request_tokens * served.longest_token_chars
    if total > allowed:
        raise bad_request(
            f"This request holds {total} prompt characters in all (over its choices), more than the "
            f"{limits.max_request_tokens} tokens this server allows per request can spell ({allowed} "
            "characters). Send fewer or shorter prompts, or a lower 'n'.",
            param=param,
            code="request_too_large",
        )


class Admission:
    """The bounded, per-client fair queue in front of the CPU work done before the batcher (see module doc).

    `run(client, fn, *args)` runs `fn(*args)` on a worker thread once one is free and `client`'s turn has
    come; it raises a 503 or 429 `APIError` at once when the queue (or the client's share of it) is full."""

    def __init__(self, workers: int = 2, max_waiting: int = 64, max_waiting_per_client: int = 16):
        self.workers = workers
        self.max_waiting = max_waiting
        self.max_waiting_per_client = max_waiting_per_client
        self.busy = 0  # workers running (or handed to a waiter about to run)
        self.waiting: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()  # in turn order
        self.queued = 0
        self.refused = 0

    @classmethod
    def from_limits(cls, limits: Limits) -> Admission:
        return cls(limits.admission_workers, limits.max_waiting, limits.max_waiting_per_client)

    async def run(self, client: str, fn: Callable[..., T], *args: Any) -> T:
        await self._acquire(client)
        work = asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))
        try:
            result = await asyncio.shield(work)
        except asyncio.CancelledError:
            # The caller left (its client disconnected), but a thread cannot be stopped: the worker stays
            # taken until it ends, so the bound on work in flight holds.
            work.add_done_callback(self._release_after)
            raise
        except BaseException:
            self._release()
            raise
        self._release()
        return result

    async def _acquire(self, client: str) -> None:
        if self.busy < self.workers and not self.waiting:
            self.busy += 1
            return
        mine = self.waiting.get(client)
        if mine is not None and len(mine) >= self.max_waiting_per_client:
            self.refused += 1
            raise _busy(
                429,
                f"You have {len(mine)} requests waiting already (at most {self.max_waiting_per_client} per "
                "client); please retry after some of them are answered.",
                "rate_limit_exceeded",
            )
        if self.queued >= self.max_waiting:
            self.refused += 1
            raise _busy(
                503, "The server is overloaded with requests; please retry shortly.", "server_overloaded"
            )
        turn = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(client, deque()).append(turn)
        self.queued += 1
        try:
            await turn  # resolved by `_release`, which hands over its worker
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # the worker was handed over just as the caller left: pass it on
            else:
                self._forget(client, turn)
            raise

    def _release(self) -> None:
        """Hand the freed worker to the next client in turn (which then goes to the back), or free it."""
        while self.waiting:
            client, turns = self.waiting.popitem(last=False)
            turn = turns.popleft()
            self.queued -= 1
            if turns:
                self.waiting[client] = turns
            if not turn.done():
                turn.set_result(None)
                return
        self.busy -= 1

    def _release_after(self, work: asyncio.Future) -> None:
        if not work.cancelled():
            work.exception()  # retrieved, so asyncio does not report it as never seen
        self._release()

    def _forget(self, client: str, turn: asyncio.Future) -> None:
        turns = self.waiting.get(client)
        if turns is not None and turn in turns:
            turns.remove(turn)
            self.queued -= 1
            if not turns:
                del self.waiting[client]


def _busy(status: int, message: str, code: str) -> APIError:
    kind = "server_error" if status == 503 else "requests"  # OpenAI's types for overload and rate limits
    return APIError(status, message, type=kind, code=code, headers={"Retry-After": str(RETRY_AFTER_S)})
