"""One family of errors for every RPC call, whichever client made it.

The gateway's pooled client (`client.py`) and the services' bounded proxies (`bounded.py`)
both raise these, so a caller tells "too slow", "not there" and "it refused" apart the
same way everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RpcError(Exception):
    """Base of every failed RPC call."""


class RpcTimeout(RpcError):
    """No reply before the deadline (or, in the pool, no free client in time)."""


class ServiceUnavailable(RpcError):
    """No queue is bound for the service, or the broker cannot be reached."""


class RemoteError(RpcError):
    """The service raised. Carries nameko's serialized exception for the caller to translate."""

    def __init__(
        self,
        exc_type: str,
        exc_path: str | None = None,
        exc_args: list[Any] | None = None,
        value: str = "",
    ):
        super().__init__(f"{exc_type}: {value}")
        self.exc_type = exc_type
        self.exc_path = exc_path
        self.exc_args = list(exc_args or [])
        self.value = value

    @classmethod
    def from_payload(cls, error: Mapping[str, Any]) -> RemoteError:
        """Build from the `error` member of a nameko reply."""
        return cls(
            exc_type=error.get("exc_type") or "Exception",
            exc_path=error.get("exc_path"),
            exc_args=error.get("exc_args"),
            value=error.get("value") or "",
        )
