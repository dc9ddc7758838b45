"""`@rpc` for the services: nameko's RPC entrypoint, its queue of the configured type, and
replies sent without waiting for the broker's confirmation.

nameko declares each service's request queue `rpc-<service>` as a durable classic queue.
On a broker cluster (`JICM_QUEUE_TYPE=quorum`) that queue lives on one node and goes with
it; declared as a quorum queue it is replicated like the event queues. Reply queues stay
classic: they are per process and auto-expire, which quorum queues cannot be.

nameko publishes each reply with a publisher confirm, a round trip to the broker before
the request is acknowledged. It tells nobody anything: the caller learns of a lost reply
from its own deadline either way, and a crash before the acknowledgement redelivers the
request with or without it. Replies here go without it.
"""

from __future__ import annotations

from kombu import Queue
from nameko.amqp.publish import Publisher
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    LOGIN_METHOD_CONFIG_KEY,
    SERIALIZER_CONFIG_KEY,
)
from nameko.rpc import RPC_QUEUE_TEMPLATE, Responder, Rpc, RpcConsumer, get_rpc_exchange

from shared.config import SETTINGS_CONFIG_KEY
from shared.events.topology import queue_arguments


class _ReplyPublisher(Publisher):
    use_confirms = False


class _ReplyResponder(Responder):
    publisher_cls = _ReplyPublisher


class TypedRpcConsumer(RpcConsumer):
    """nameko's RPC consumer, declaring `rpc-<service>` with `queue_arguments` and replying
    without publisher confirms."""

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

    def handle_result(self, message, result, exc_info):
        # nameko's own, with the unconfirmed responder.
        config = self.container.config
        responder = _ReplyResponder(
            config[AMQP_URI_CONFIG_KEY],
            get_rpc_exchange(config),
            config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER),
            message,
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        )
        result, exc_info = responder.send_response(result, exc_info)
        self.queue_consumer.ack_message(message)
        return result, exc_info


class TypedRpc(Rpc):
    """The `@rpc` entrypoint on `TypedRpcConsumer`."""

    rpc_consumer = TypedRpcConsumer()


rpc = TypedRpc.decorator
