"""Whether the Hugging Face Hub can be asked at all, decided once and fast.

huggingface_hub retries a refused or timed-out connection for about a minute and logs each retry;
offline, that is a minute of noise before the answer every caller here already handles ("not
reachable"). One TCP connect to the endpoint, with a short timeout, answers the same question.
"""
from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_TIMEOUT_S = 1.5


def hub_online() -> bool:
    """False under HF_HUB_OFFLINE=1 or when the endpoint (HF_ENDPOINT) does not accept a connection."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    return _endpoint_accepts(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)


@functools.lru_cache(maxsize=None)
def _endpoint_accepts(endpoint: str) -> bool:
    parts = urlsplit(endpoint)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False
