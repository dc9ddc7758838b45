"""nameko extensions of the scheduler: its tick, its bounded question to delivery, its name.

- `@tick`: nameko's timer with the interval from `JICM_SCHEDULER_TICK`, firing at start-up
  and then every interval (or as soon as a slow tick finishes). Like any nameko timer it
  fires in every instance; the loop's atomic claims are what make that safe.
- `delivery_status()`: the bounded RPC client (`shared.rpc.bounded`) the loop asks
  `delivery.reminder_status(...)` with: a call gives up after `MAIL_STATUS_TIMEOUT`, and
  the request itself expires in the queue after the same time, so a late delivery never
  answers a question nobody is waiting for. `reminder_question(client)` is that call as
  the loop takes it: no answer at all is `DeliveryUnavailable`.
- `InstanceId`: a name for this process in claims and heartbeats.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.timer import Timer

from services.scheduler.loop import DeliveryUnavailable, ReminderStatus
from shared.config import settings_of
from shared.rpc.bounded import BoundedClient, BoundedRpcProxy
from shared.rpc.errors import RpcTimeout, ServiceUnavailable

MAIL_STATUS_TIMEOUT = 5.0


class Tick(Timer):
    """A timer whose interval is the configured `JICM_SCHEDULER_TICK`, starting at once."""

    def __init__(self, **kwargs) -> None:
        super().__init__(interval=1.0, eager=True, **kwargs)

    def setup(self) -> None:
        self.interval = settings_of(self.container).scheduler_tick


tick = Tick.decorator


def delivery_status() -> BoundedRpcProxy:
    """`self.delivery.call("reminder_status", references)`, bounded in time."""
    return BoundedRpcProxy("delivery", timeout=MAIL_STATUS_TIMEOUT)


def reminder_question(client: BoundedClient) -> ReminderStatus:
    """Delivery's `reminder_status`, as the loop asks it."""

    def ask(references: list[str]) -> dict[str, dict[str, Any]]:
        try:
            return client.call("reminder_status", references)
        except (RpcTimeout, ServiceUnavailable) as exc:
            raise DeliveryUnavailable(f"{type(exc).__name__}: {exc}") from None

    return ask


class InstanceId(DependencyProvider):
    """`host:pid:random`, fixed for the life of the container."""

    def setup(self) -> None:
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def get_dependency(self, worker_ctx) -> str:
        return self.instance_id
