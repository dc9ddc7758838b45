"""`@rpc` for the services: nameko's RPC entrypoint, its queue of the configured type.

nameko declares each service's request queue `rpc-<service>` as a durable classic queue.
On a broker cluster (`JICM_QUEUE_TYPE=quorum`) that queue lives on one node and goes with
it; declared as a quorum queue it is replicated like the event queues. Reply queues stay
classic: they are per process and auto-expire, which quorum queues cannot be.
"""

from __future__ import annotations

from kombu import Queue
from nameko.rpc import RPC_QUEUE_TEMPLATE, Rpc, RpcConsumer, get_rpc_exchange

from shared.config import SETTINGS_CONFIG_KEY
from shared.events.topology import queue_arguments


class TypedRpcConsumer(RpcConsumer):
    """nameko's RPC consumer, declaring `rpc-<service>` with `queue_arguments`."""

    def setup(self) -> None:
        # nameko's own setup, with the queue's arguments added.
        if self.queue is not None:
            return
        service_name = self.container.service_name
        settings = self.container.config.get(SETTINGS_CONFIG_KEY)
        arguments = queue_arguments(settings.queue_type) if settings else {}
        self.queue = Queue(
            RPC_QUEUE_TEMPLATE.format(service_name),
            exchange=get_rpc_exchange(self.container.config),
            routing_key=f"{service_name}.*",
            durable=True,
            queue_arguments=arguments,
        )
        self.queue_consumer.register_provider(self)
        self._registered = True


class TypedRpc(Rpc):
    """The `@rpc` entrypoint on `TypedRpcConsumer`."""

    rpc_consumer = TypedRpcConsumer()


rpc = TypedRpc.decorator
