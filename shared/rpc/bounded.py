"""RPC from one service to another with a deadline: `BoundedRpcProxy("vault", timeout=5)`.

nameko's `RpcProxy` waits for ever for a reply, so a service that is down (its queue
still exists, requests simply wait there) would hang the caller's worker. Here each
call gives up after `timeout` seconds with `RpcTimeout`, the request expires in the
broker after the same time (so a late service never runs a question nobody is waiting
for), and the forgotten reply slot is dropped from the reply listener, which would
otherwise keep it for ever. nameko's own failures come out as this package's family:
no queue bound for the service is `ServiceUnavailable`, and an error the callee raised
is `RemoteError` (its type in `exc_type`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import eventlet
from nameko.exceptions import RemoteError as NamekoRemoteError
from nameko.exceptions import UnknownService
from nameko.rpc import RpcProxy, RpcReply

from shared.rpc.errors import RemoteError, RpcTimeout, ServiceUnavailable


@contextmanager
def nameko_errors(what: str) -> Iterator[None]:
    """Turn nameko's RPC errors raised inside into `shared.rpc.errors`."""
    try:
        yield
    except UnknownService:
        raise ServiceUnavailable(f"{what}: no such service is running") from None
    except NamekoRemoteError as exc:
        raise RemoteError(exc.exc_type, value=str(exc.value)) from None


def send(method: Any, *args: Any, what: str) -> RpcReply:
    """Send `method(*args)` (a proxy's method) without waiting for its reply."""
    with nameko_errors(what):
        return method.call_async(*args)


def reply_within(listener: Any, reply: RpcReply, timeout: float, what: str) -> Any:
    """The result of `reply` (an `RpcReply` from `call_async`), or RpcTimeout after `timeout`.

    `listener` is the proxy's `rpc_reply_listener`: on timeout the reply's slot is dropped
    from it, since a reply that never comes would keep it for ever. `what` names the call
    in the error.
    """
    timer = eventlet.Timeout(timeout)
    try:
        with nameko_errors(what):
            return reply.result()
    except eventlet.Timeout as exc:
        if exc is not timer:
            raise
        _forget(listener, reply)
        raise RpcTimeout(f"{what} did not answer within {timeout:g} s") from None
    finally:
        timer.cancel()


def _forget(listener: Any, reply: RpcReply) -> None:
    pending = listener._reply_events
    for correlation_id, event in list(pending.items()):
        if event is reply.reply_event:
            pending.pop(correlation_id, None)


class BoundedClient:
    """What a worker holds: calls to one service, each within the deadline."""

    def __init__(self, proxy: Any, listener: Any, service: str, timeout: float) -> None:
        self._proxy = proxy
        self._listener = listener
        self._service = service
        self._timeout = timeout

    def call(self, method: str, *args: Any) -> Any:
        """`service.method(*args)`; RpcTimeout after the deadline."""
        what = f"{self._service}.{method}"
        reply = send(getattr(self._proxy, method), *args, what=what)
        return reply_within(self._listener, reply, self._timeout, what)


class BoundedRpcProxy(RpcProxy):
    """A dependency giving workers a `BoundedClient` of `service`."""

    def __init__(self, service: str, timeout: float) -> None:
        # `expiration` (seconds) becomes the request message's TTL in RabbitMQ.
        super().__init__(service, expiration=timeout)
        self.service = service
        self.timeout = timeout

    def get_dependency(self, worker_ctx) -> BoundedClient:
        return BoundedClient(super().get_dependency(worker_ctx), self.rpc_reply_listener,
                             self.service, self.timeout)
