"""Which switch a message belongs to: the scheduler owns switches, the vault asks it.

The vault cannot read the scheduler's data, so it asks over RPC:
`scheduler.default_switch_id(user_id) -> str` and
`scheduler.owns_switch(user_id, switch_id) -> bool`. nameko's RPC proxy has no timeout
of its own; every call here is bounded (and its request expires in the queue), so a
scheduler that is down makes writing a message fail fast with a 503, never hang.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import eventlet
from nameko.exceptions import RemoteError, UnknownService

from shared.errors import NotFound, Unavailable

log = logging.getLogger(__name__)

# Below the gateway's default RPC deadline, so the caller learns why rather than timing out.
SCHEDULER_TIMEOUT_SECONDS = 3.0


class SwitchDirectory(Protocol):
    def default_switch_id(self, user_id: str) -> str: ...

    def owns_switch(self, user_id: str, switch_id: str) -> bool: ...


def resolve_switch(switches: SwitchDirectory, user_id: str, switch_id: str | None) -> str:
    """The switch a message goes to: the one named (if it is the user's), else the default."""
    if switch_id is None:
        return switches.default_switch_id(user_id)
    if not switches.owns_switch(user_id, switch_id):
        # Another user's switch is answered like a switch that does not exist.
        raise NotFound(f"you have no switch {switch_id}", code="switch_not_found",
                       details={"field": "switch_id"})
    return switch_id


class SchedulerSwitches:
    """The scheduler's answers through a nameko RpcProxy, each within a deadline."""

    def __init__(self, proxy: Any, timeout: float = SCHEDULER_TIMEOUT_SECONDS) -> None:
        self.proxy = proxy
        self.timeout = timeout

    def default_switch_id(self, user_id: str) -> str:
        return str(self._ask("default_switch_id", user_id))

    def owns_switch(self, user_id: str, switch_id: str) -> bool:
        return self._ask("owns_switch", user_id, switch_id) is True

    def _ask(self, method: str, *args: str) -> Any:
        timer = eventlet.Timeout(self.timeout)
        try:
            return getattr(self.proxy, method)(*args)
        except eventlet.Timeout as exc:
            if exc is not timer:
                raise
            log.warning("scheduler.%s did not answer within %ss", method, self.timeout)
        except UnknownService:
            log.warning("scheduler.%s: no scheduler is running", method)
        except RemoteError as exc:
            log.error("scheduler.%s failed: %s", method, exc)
        finally:
            timer.cancel()
        raise Unavailable("the scheduler is unavailable, so the switch cannot be checked; "
                          "try again shortly", code="scheduler_unavailable")
