"""The scheduler loop's liveness as the gateway reports it, in /readyz and /metrics.

Every scheduler instance records a heartbeat after each tick; the newest one tells
whether anything is moving switches forward at all, and the lag (now minus the oldest
switch still due) tells whether it keeps up. Both are asked of the scheduler at the time
of the request, so every gateway worker and replica reports the same figures.
"""

from __future__ import annotations

from typing import Any

from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RpcError

LIVENESS_TIMEOUT = 3.0


def scheduler_liveness(rpc: RpcClientPool) -> dict[str, Any] | None:
    """The scheduler's own figures, or None when it does not answer."""
    try:
        return rpc.call("scheduler", "liveness", timeout=LIVENESS_TIMEOUT)
    except RpcError:
        return None


def loop_status(figures: dict[str, Any] | None, stale_after: float) -> str:
    """"ok", or why the scheduler loop does not look alive."""
    if figures is None:
        return "unreachable"
    age = figures.get("heartbeat_age_seconds")
    if age is None:
        return "no heartbeat yet"
    if age > stale_after:
        return f"stale: last heartbeat {age:.0f} s ago"
    return "ok"
