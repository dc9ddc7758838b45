"""nameko extensions of the scheduler: its tick, its bounded question to delivery, its name.

- `@tick`: nameko's timer with the interval from `JICM_SCHEDULER_TICK`, firing at start-up
  and then every interval (or as soon as a slow tick finishes). Like any nameko timer it
  fires in every instance; the loop's atomic claims are what make that safe.
- `DeliveryStatus`: `delivery.mail_status(...)` with a deadline. nameko's RpcProxy waits
  forever for a reply; here a call gives up after `MAIL_STATUS_TIMEOUT`, and the request
  itself expires in the queue after the same time, so a late delivery never answers a
  question nobody is waiting for.
- `InstanceId`: a name for this process in claims and heartbeats.
"""

from __future__ import annotations

import os
import socket
import uuid

import eventlet
from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy, RpcReply
from nameko.timer import Timer

from shared.config import settings_of

MAIL_STATUS_TIMEOUT = 5.0


class Tick(Timer):
    """A timer whose interval is the configured `JICM_SCHEDULER_TICK`, starting at once."""

    def __init__(self, **kwargs) -> None:
        super().__init__(interval=1.0, eager=True, **kwargs)

    def setup(self) -> None:
        self.interval = settings_of(self.container).scheduler_tick


tick = Tick.decorator


class MailStatusUnavailable(Exception):
    """Delivery did not answer in time."""


class DeliveryClient:
    """What a worker holds: one bounded call to delivery."""

    def __init__(self, proxy, listener, timeout: float) -> None:
        self._proxy = proxy
        self._listener = listener
        self._timeout = timeout

    def mail_status(self, kind: str, references: list[str]) -> dict[str, str]:
        """Delivery's status of each mail; raises when delivery is absent or silent."""
        reply = self._proxy.mail_status.call_async(kind, references)
        timer = eventlet.Timeout(self._timeout)
        try:
            return reply.result()
        except eventlet.Timeout as exc:
            if exc is not timer:
                raise
            self._forget(reply)
            raise MailStatusUnavailable(
                f"delivery did not answer within {self._timeout:g} s") from None
        finally:
            timer.cancel()

    def _forget(self, reply: RpcReply) -> None:
        # The reply listener keeps a waiting event per call until a reply comes; one that
        # never comes would stay for ever.
        pending = self._listener._reply_events
        for correlation_id, event in list(pending.items()):
            if event is reply.reply_event:
                pending.pop(correlation_id, None)


class DeliveryStatus(RpcProxy):
    """`self.delivery.mail_status(kind, references)`, bounded in time."""

    def __init__(self, timeout: float = MAIL_STATUS_TIMEOUT) -> None:
        # `expiration` (seconds) becomes the request message's TTL in RabbitMQ.
        super().__init__("delivery", expiration=timeout)
        self.timeout = timeout

    def get_dependency(self, worker_ctx) -> DeliveryClient:
        return DeliveryClient(super().get_dependency(worker_ctx), self.rpc_reply_listener,
                              self.timeout)


class InstanceId(DependencyProvider):
    """`host:pid:random`, fixed for the life of the container."""

    def setup(self) -> None:
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def get_dependency(self, worker_ctx) -> str:
        return self.instance_id
