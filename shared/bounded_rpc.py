"""RPC from one service to another with a deadline: `BoundedRpcProxy("vault", timeout=5)`.

nameko's `RpcProxy` waits for ever for a reply, so a service that is down (its queue
still exists, requests simply wait there) would hang the caller's worker. Here each
call gives up after `timeout` seconds with `RpcTimeout`, the request expires in the
broker after the same time (so a late service never runs a question nobody is waiting
for), and the forgotten reply slot is dropped from the reply listener, which would
otherwise keep it for ever. `UnknownService` (no queue at all) and the callee's own
errors (`RemoteError`) reach the caller unchanged.
"""

from __future__ import annotations

from typing import Any

import eventlet
from nameko.rpc import RpcProxy, RpcReply


class RpcTimeout(Exception):
    """The service did not answer in time."""


class BoundedClient:
    """What a worker holds: calls to one service, each within the deadline."""

    def __init__(self, proxy: Any, listener: Any, service: str, timeout: float) -> None:
        self._proxy = proxy
        self._listener = listener
        self._service = service
        self._timeout = timeout

    def call(self, method: str, *args: Any) -> Any:
        """`service.method(*args)`; RpcTimeout after the deadline."""
        reply = getattr(self._proxy, method).call_async(*args)
        timer = eventlet.Timeout(self._timeout)
        try:
            return reply.result()
        except eventlet.Timeout as exc:
            if exc is not timer:
                raise
            self._forget(reply)
            raise RpcTimeout(f"{self._service}.{method} did not answer within "
                             f"{self._timeout:g} s") from None
        finally:
            timer.cancel()

    def _forget(self, reply: RpcReply) -> None:
        pending = self._listener._reply_events
        for correlation_id, event in list(pending.items()):
            if event is reply.reply_event:
                pending.pop(correlation_id, None)


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
