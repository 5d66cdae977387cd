"""Cancel a request's work when its client disconnects, whether it streams or not.

Why: a non-streaming handler used to keep awaiting its rows after its client had given up (a client-side
timeout, a closed laptop). Nobody would read the answer, yet its rows kept decoding and held the batch slots
other requests waited for: ten abandoned `n=128` requests delayed a 4-token request by 14 s. Starlette
notices a disconnect only while it streams a response body. So, while a handler works, `unless_disconnected`
watches the ASGI receive channel for `http.disconnect` and cancels the handler when it comes: its job is
marked cancelled (`batching.JobStream`), so its rows stop at the next decode step and count in
`abandoned_rows` of /health, and a request still waiting in the admission queue leaves it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response

T = TypeVar("T")
CLIENT_CLOSED = 499  # never seen by anyone (the client is gone); nginx's code for it, in the access log


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | Response:
    """`await work`, cancelled if the client disconnects first. Read the request body before calling this:
    the watcher takes every message the client sends after it."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this handler is cancelled itself (shutdown): nothing is left running
        watcher.cancel()
        task.cancel()  # a no-op once the work is done
    await asyncio.wait({task})  # let the cancelled work clean up (it frees its rows) before answering
    if task.cancelled():
        return Response(status_code=CLIENT_CLOSED)
    return task.result()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
