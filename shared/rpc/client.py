"""RPC from outside nameko (the gateway, operator commands, health checks, benchmarks) to
the services: nameko's wire format over pika, with deadlines.

The gateway runs under gunicorn's gthread workers (plain threads, no eventlet). nameko's
`ClusterRpcProxy` is single-threaded, opens a connection per proxy and its timeout only bounds
idle reads, so the gateway speaks nameko's wire format itself:

- request: exchange `nameko-rpc`, routing key `<service>.<method>`, JSON body
  `{"args": [...], "kwargs": {...}}`, `reply_to` and `correlation_id`, context items as
  `nameko.<key>` headers (nameko hands them to the worker as context data);
- reply: the service publishes to `nameko-rpc` with routing key = `reply_to`, JSON body
  `{"result": ..., "error": null | {"exc_type", "exc_path", "exc_args", "value"}}`.

Usage::

    rpc = RpcClientPool(settings.amqp_uri, size=8, timeout=10.0)
    profile = rpc.call("accounts", "authenticate", token, context={"request_id": request_id})

Failures are `RpcTimeout` (the gateway answers 504), `ServiceUnavailable` (503) or
`RemoteError` (the service raised; the gateway translates the types it knows), all from
`shared.rpc.errors`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import (
    AMQPError,
    ChannelWrongStateError,
    ConnectionWrongStateError,
    NackError,
    UnroutableError,
)
from pika.spec import Basic, BasicProperties

from shared.rpc.errors import RemoteError, RpcError, RpcTimeout, ServiceUnavailable

log = logging.getLogger(__name__)

RPC_EXCHANGE = "nameko-rpc"
HEADER_PREFIX = "nameko"
CONNECTION_NAME = "gateway-rpc"  # shown in RabbitMQ's management UI

# kombu (and so nameko's AMQP_URI) names its transports; pika only knows amqp/amqps.
_SCHEMES = {"amqp": "amqp", "pyamqp": "amqp", "amqps": "amqps", "pyamqps": "amqps"}

# Anything that means "this connection or channel can no longer be trusted".
_BROKEN = (AMQPError, OSError)


class _NotPublished(ServiceUnavailable):
    """The connection was found dead before the request left: the call can be retried."""


def connection_parameters(
    amqp_uri: str,
    *,
    heartbeat: int = 60,
    connect_timeout: float = 3.0,
    blocked_timeout: float | None = None,
) -> pika.URLParameters:
    """pika parameters for `amqp_uri`, which may use kombu's `pyamqp://` scheme."""
    parts = urlsplit(amqp_uri)
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"not an AMQP URI: scheme {parts.scheme!r}")
    parameters = pika.URLParameters(urlunsplit(parts._replace(scheme=scheme)))
    parameters.heartbeat = heartbeat
    # socket_timeout bounds the TCP connect, stack_timeout the whole AMQP handshake.
    parameters.socket_timeout = connect_timeout
    parameters.stack_timeout = connect_timeout
    parameters.connection_attempts = 1
    # A broker under a resource alarm blocks publishers; give up instead of hanging.
    parameters.blocked_connection_timeout = blocked_timeout
    parameters.client_properties = {"connection_name": CONNECTION_NAME}
    return parameters


class RpcClient:
    """One connection, one channel and one exclusive reply queue, for one call at a time.

    Not thread-safe: `RpcClientPool` lends each client to one thread at a time. After a
    timeout the client stays usable (a late reply is dropped by its correlation id); after a
    connection error `broken` is set and the client must be closed and replaced.
    """

    def __init__(self, parameters: pika.ConnectionParameters):
        self.reply_queue = f"rpc.reply-gateway-{uuid.uuid4()}"
        self.broken = False
        self._pending_id: str | None = None
        self._reply: bytes | None = None
        self._connection: pika.BlockingConnection | None = None
        try:
            self._connection = pika.BlockingConnection(parameters)
            self._channel = self._open_channel(self._connection)
        except _BROKEN as exc:
            self.close()
            raise ServiceUnavailable(f"cannot connect to the broker: {exc!r}") from exc

    def _open_channel(self, connection: pika.BlockingConnection) -> BlockingChannel:
        channel = connection.channel()
        # Same arguments as nameko, otherwise the broker refuses the redeclaration.
        channel.exchange_declare(RPC_EXCHANGE, "topic", durable=True)
        channel.queue_declare(self.reply_queue, exclusive=True, auto_delete=True)
        channel.queue_bind(self.reply_queue, RPC_EXCHANGE, routing_key=self.reply_queue)
        channel.basic_consume(self.reply_queue, self._on_reply)
        # Confirms + mandatory turn "no queue bound for this service" into UnroutableError.
        channel.confirm_delivery()
        return channel

    def is_usable(self) -> bool:
        """Service heartbeats and pending frames now; False if the connection has died.

        An idle BlockingConnection only notices a broker-side close (or sends heartbeats)
        when called into, so the pool asks before lending the client out.
        """
        if self.broken or self._connection is None or not self._connection.is_open:
            return False
        try:
            self._connection.process_data_events(time_limit=0)
        except _BROKEN as exc:
            log.info("rpc connection is dead, replacing it: %r", exc)
            self.broken = True
        return not self.broken and self._channel.is_open

    def call(
        self,
        service: str,
        method: str,
        body: bytes,
        *,
        timeout: float,
        context: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send the JSON `body` to `service.method` and return the result within `timeout` s."""
        deadline = time.monotonic() + timeout
        correlation_id = str(uuid.uuid4())
        self._publish(service, method, body, correlation_id, timeout, context or {})
        return _decode_reply(self._wait(correlation_id, deadline))

    def _publish(
        self,
        service: str,
        method: str,
        body: bytes,
        correlation_id: str,
        timeout: float,
        context: Mapping[str, Any],
    ) -> None:
        routing_key = f"{service}.{method}"
        properties = _request_properties(
            self.reply_queue, correlation_id, routing_key, timeout, context
        )
        try:
            self._channel.basic_publish(RPC_EXCHANGE, routing_key, body, properties, mandatory=True)
        except UnroutableError as exc:
            raise ServiceUnavailable(f"no queue is bound for {routing_key}") from exc
        except NackError as exc:
            raise ServiceUnavailable(f"the broker refused the request to {routing_key}") from exc
        except (ChannelWrongStateError, ConnectionWrongStateError) as exc:
            # pika knew the channel was closed and sent nothing.
            self.broken = True
            raise _NotPublished(f"connection closed before publishing: {exc!r}") from exc
        except _BROKEN as exc:
            # The request may have reached the broker: it must not be retried.
            self.broken = True
            raise ServiceUnavailable(f"connection lost while publishing: {exc!r}") from exc

    def _wait(self, correlation_id: str, deadline: float) -> bytes:
        self._pending_id = correlation_id
        self._reply = None
        try:
            while self._reply is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RpcTimeout(f"no reply within the deadline ({correlation_id})")
                self._connection.process_data_events(time_limit=remaining)
        except _BROKEN as exc:
            self.broken = True
            raise ServiceUnavailable(f"connection lost while waiting: {exc!r}") from exc
        finally:
            self._pending_id = None
        reply, self._reply = self._reply, None
        return reply

    def _on_reply(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        channel.basic_ack(method.delivery_tag)
        if self._pending_id is not None and properties.correlation_id == self._pending_id:
            self._reply = body
        else:
            # A late reply to a call that already timed out: its caller has gone.
            log.info("dropping a late rpc reply (correlation id %s)", properties.correlation_id)

    def close(self) -> None:
        """Close the connection (and so the reply queue); never raises."""
        self.broken = True
        if self._connection is None or not self._connection.is_open:
            return
        try:
            self._connection.close()
        except _BROKEN as exc:
            log.debug("error while closing an rpc connection: %r", exc)


def _request_properties(
    reply_to: str,
    correlation_id: str,
    routing_key: str,
    timeout: float,
    context: Mapping[str, Any],
) -> BasicProperties:
    headers = {f"{HEADER_PREFIX}.{key}": value for key, value in context.items()}
    headers[f"{HEADER_PREFIX}.call_id_stack"] = [f"gateway.{routing_key}.{uuid.uuid4()}"]
    return BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        reply_to=reply_to,
        correlation_id=correlation_id,
        delivery_mode=2,
        # The broker drops a request nobody took before the caller gave up, so a service
        # coming back after an outage never executes calls whose answers nobody awaits.
        expiration=str(max(1, int(timeout * 1000))),
        headers=headers,
    )


def _decode_reply(body: bytes) -> Any:
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise RpcError(f"malformed rpc reply: {body[:200]!r}") from exc
    error = payload.get("error")
    if error:
        raise RemoteError.from_payload(error)
    return payload.get("result")


class RpcClientPool:
    """A thread-safe pool of up to `size` `RpcClient`s, created on first use.

    Nothing connects at construction, so a pool built before gunicorn forks is safe; a pool
    used in a process that then forked starts afresh in the child. `timeout` is the default
    deadline of a call, including the wait for a free client; `connect_timeout` bounds
    opening a connection.
    """

    def __init__(
        self,
        amqp_uri: str,
        *,
        size: int = 8,
        timeout: float = 10.0,
        heartbeat: int = 60,
        connect_timeout: float = 3.0,
    ):
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.connects = 0  # connections opened so far, for metrics and tests
        self._amqp_uri = amqp_uri
        self._parameters = connection_parameters(
            amqp_uri,
            heartbeat=heartbeat,
            connect_timeout=connect_timeout,
            blocked_timeout=timeout,
        )
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.size)
        self._idle: list[RpcClient] = []
        self._closed = False

    def call(
        self,
        service: str,
        method: str,
        /,
        *args: Any,
        timeout: float | None = None,
        context: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call `service.method(*args, **kwargs)` and return its result.

        Raises `RpcTimeout` after `timeout` seconds (the pool's default if None),
        `ServiceUnavailable` or `RemoteError`. `context` items reach the service as nameko
        context data (for example `request_id`). Arguments must be JSON types.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        # Serialize first: an argument that is not JSON should not cost a connection.
        body = json.dumps({"args": list(args), "kwargs": kwargs}).encode("utf-8")
        self._forget_parent_clients()
        with self._slot(service, method, deadline):
            return self._call_with_one_retry(service, method, body, deadline, context)

    def _call_with_one_retry(
        self,
        service: str,
        method: str,
        body: bytes,
        deadline: float,
        context: Mapping[str, Any] | None,
    ) -> Any:
        # Retrying is safe only when the request never left; a published call may have run.
        for attempt in (1, 2):
            client = self._checkout()
            try:
                return client.call(
                    service,
                    method,
                    body,
                    timeout=_remaining(deadline, service, method),
                    context=context,
                )
            except _NotPublished:
                if attempt == 2:
                    raise
                log.info("rpc connection died before publishing; retrying on a new one")
            except RpcError:
                raise
            except BaseException:
                # Interrupted half-way (a worker timeout, a bug): the channel's state is unknown.
                client.broken = True
                raise
            finally:
                self._checkin(client)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _slot(self, service: str, method: str, deadline: float) -> Iterator[None]:
        if not self._slots.acquire(timeout=_remaining(deadline, service, method)):
            raise RpcTimeout(f"all {self.size} rpc clients stayed busy ({service}.{method})")
        try:
            yield
        finally:
            self._slots.release()

    def _checkout(self) -> RpcClient:
        if self._closed:
            raise ServiceUnavailable("the rpc pool is closed")
        with self._lock:
            client = self._idle.pop() if self._idle else None
        if client is not None and client.is_usable():
            return client
        if client is not None:
            client.close()
        return self._connect()

    def _checkin(self, client: RpcClient) -> None:
        if client.broken or self._closed:
            client.close()
            return
        with self._lock:
            # Last in, first out: the busiest connections stay warm, the rest may expire.
            self._idle.append(client)

    def _connect(self) -> RpcClient:
        client = RpcClient(self._parameters)
        with self._lock:
            self.connects += 1
        return client

    def _forget_parent_clients(self) -> None:
        # Connections inherited through fork() belong to the parent: never touch them.
        if os.getpid() != self._pid:
            self._reset()

    def check_broker(self, timeout: float | None = None) -> bool:
        """True if a connection to the broker opens within `timeout` seconds (for /readyz)."""
        parameters = connection_parameters(
            self._amqp_uri, connect_timeout=self.connect_timeout if timeout is None else timeout
        )
        try:
            connection = pika.BlockingConnection(parameters)
        except _BROKEN as exc:
            log.warning("broker check failed: %r", exc)
            return False
        try:
            connection.close()
        except _BROKEN as exc:
            log.debug("error while closing the broker check connection: %r", exc)
        return True

    def close(self) -> None:
        """Close the idle clients; clients in use are closed when their call returns."""
        self._forget_parent_clients()
        self._closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for client in idle:
            client.close()


def _remaining(deadline: float, service: str, method: str) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise RpcTimeout(f"deadline passed before {service}.{method} was sent")
    return remaining
