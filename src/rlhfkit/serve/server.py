"""Running the app: in the foreground for the CLI, or on a background thread for tests and notebooks.

On SIGTERM (or Ctrl-C) `run` drains within a stated grace period and then stops, even while decoding runs:
uvicorn stops accepting connections and waits up to the grace period for the requests in flight, then
cancels them; a cancelled request cancels its job, whose rows stop at the next decode step.

`background(app)` binds the socket itself (port 0 = any free port) before uvicorn starts, so the caller
knows the URL at once and two servers never race for a port; it waits until uvicorn accepts connections
and shuts it down (bounded in time) on exit.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


def run(app, host: str = "127.0.0.1", port: int = 8000, shutdown_grace_s: float = 3.0) -> None:
    """Serve until SIGTERM or Ctrl-C; then drain: stop accepting connections, give the requests in flight
    `shutdown_grace_s` seconds to finish, cancel the rest (their rows stop at the next decode step) and return.
    """
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=shutdown_grace_s)


@contextmanager
def background(app, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 20.0) -> Iterator[str]:
    """Serve `app` on a thread; yields the base URL (`http://host:port/v1`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{bound_port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
