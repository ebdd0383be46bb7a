"""Network reachability: fail fast, with a fix in the message, on machines without internet."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlparse

REACH_BUDGET_S = 1.5  # a TCP connect to the host must succeed this fast, or callers treat it as offline


def host_reachable(url: str, budget_s: float = REACH_BUDGET_S) -> bool:
    """True if a TCP connection to ``url``'s host opens within ``budget_s`` (DNS included; in a daemon thread, so a
    hanging resolver cannot hold the caller longer)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((parsed.hostname, port), timeout=budget_s).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(budget_s)
    return bool(result and result[0])
