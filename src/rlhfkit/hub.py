"""Is the Hugging Face Hub usable from here? One answer for model and dataset sources alike.

Why: unreachable, huggingface_hub and `datasets` retry every request with backoff (~30-50 s before their
error), so a typo or a missing network looks like a hang. `hub_offline()` reads HF_HUB_OFFLINE; when it is
not set, `hub_reachable()` opens one TCP connection to the endpoint with a short timeout instead.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

HUB_PROBE_TIMEOUT_S = 3.0


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub.constants import HF_HUB_OFFLINE

    return HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in (
        "1",
        "ON",
        "YES",
        "TRUE",
    )


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """Whether a TCP connection to the Hub endpoint opens within a few seconds (probed once per process)."""
    from huggingface_hub.constants import ENDPOINT

    url = urlparse(ENDPOINT)
    try:
        with socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), HUB_PROBE_TIMEOUT_S
        ):
            return True
    except OSError:
        return False
