"""Publishing events durably: persistent messages and publisher confirms, a batch at a time.

A publisher confirm is the broker's word that it has taken responsibility for a message
(a persistent message on a durable queue is then on disk). Only a confirmed event may
leave its outbox. Waiting for each confirm before sending the next message makes a
publisher as slow as the broker's disk round trip, a few hundred events a second; so
`publish_all` sends a whole batch on one channel in confirm mode and then waits for the
confirms of all of it (RabbitMQ's own advice for throughput). Each envelope's answer is
its own: acknowledged, or not (refused, the connection lost, the deadline passed), and
only an acknowledged one counts as published.

Events go to the events exchange (a broadcast to the broadcast exchange), routed by type,
as nameko's JSON messages (`application/json`), each with its `event_id` as message id.
The connection is opened on first use and dropped after any error; the next batch opens
a new one. One batch at a time per publisher: a lock keeps concurrent callers apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from kombu import Connection
from kombu.utils.json import dumps

from shared.events.broadcast import BROADCAST_EXCHANGE, is_broadcast
from shared.events.topology import EVENTS_EXCHANGE

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0


class NotConfirmed(Exception):
    """The broker did not confirm an event."""


class EventPublisher:
    """Publishes envelopes and tells which of them the broker confirmed."""

    def __init__(self, amqp_uri: str, *,
                 confirm_timeout: float = CONFIRM_TIMEOUT_SECONDS) -> None:
        self.amqp_uri = amqp_uri
        self.confirm_timeout = confirm_timeout
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._channel: Any = None
        self._published = 0  # delivery tags given out on the current channel
        self._acked: set[int] = set()
        self._acked_upto = 0  # every tag up to this one was acknowledged
        self._nacked: set[int] = set()
        self._nacked_upto = 0

    def publish(self, envelope: dict[str, Any]) -> None:
        """Publish one envelope; NotConfirmed unless the broker confirmed it."""
        if not self.publish_all([envelope])[0]:
            raise NotConfirmed(f"{envelope['type']} {envelope['event_id']} was not confirmed")

    def publish_all(self, envelopes: Sequence[dict[str, Any]]) -> list[bool]:
        """Publish the envelopes in order; for each, whether the broker confirmed it."""
        if not envelopes:
            return []
        with self._lock:
            try:
                first = self._send(envelopes)
                return self._await_confirms(first, len(envelopes))
            except Exception:
                log.exception("publishing %d event(s) failed; the connection is dropped",
                              len(envelopes))
                self._drop()
                return [False] * len(envelopes)

    def close(self) -> None:
        """Close the connection, if one is open."""
        with self._lock:
            self._drop()

    # Sending -----------------------------------------------------------------------

    def _send(self, envelopes: Sequence[dict[str, Any]]) -> int:
        """Send every envelope; the delivery tag of the first."""
        channel = self._ready_channel()
        first = self._published + 1
        for envelope in envelopes:
            exchange = BROADCAST_EXCHANGE if is_broadcast(envelope["type"]) else EVENTS_EXCHANGE
            headers = {"x-event-id": envelope["event_id"]}
            if envelope.get("request_id"):
                headers["nameko.request_id"] = envelope["request_id"]
            message = channel.prepare_message(
                dumps(envelope), content_type="application/json", content_encoding="utf-8",
                headers=headers,
                properties={"delivery_mode": 2, "message_id": envelope["event_id"]},
            )
            # A broker that stops reading (a resource alarm) must not hold us for ever.
            channel.basic_publish(message, exchange=exchange.name,
                                  routing_key=envelope["type"], timeout=self.confirm_timeout)
            self._published += 1
        return first

    def _ready_channel(self) -> Any:
        if self._channel is not None:
            return self._channel
        connection = Connection(self.amqp_uri, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            channel = connection.channel()
            # The topology declares them too; declaring again (same arguments) is harmless
            # and spares a publisher started first from publishing into nothing.
            for exchange in (EVENTS_EXCHANGE, BROADCAST_EXCHANGE):
                exchange(channel).declare()
            channel.confirm_select()
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
        except Exception:
            connection.release()
            raise
        self._connection, self._channel = connection, channel
        self._published = self._acked_upto = self._nacked_upto = 0
        self._acked.clear()
        self._nacked.clear()
        return channel

    # Confirms ----------------------------------------------------------------------

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._acked_upto = max(self._acked_upto, delivery_tag)
        else:
            self._acked.add(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._nacked_upto = max(self._nacked_upto, delivery_tag)
        else:
            self._nacked.add(delivery_tag)

    def _acked_tag(self, tag: int) -> bool:
        return tag <= self._acked_upto or tag in self._acked

    def _answered(self, tag: int) -> bool:
        return self._acked_tag(tag) or tag <= self._nacked_upto or tag in self._nacked

    def _await_confirms(self, first: int, count: int) -> list[bool]:
        tags = range(first, first + count)
        deadline = time.monotonic() + self.confirm_timeout
        while not all(self._answered(tag) for tag in tags):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("the broker confirmed only part of %d event(s) within %.0f s; "
                            "the connection is dropped", count, self.confirm_timeout)
                answers = [self._acked_tag(tag) for tag in tags]
                self._drop()
                return answers
            try:
                self._connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        answers = [self._acked_tag(tag) for tag in tags]
        # Nothing will ask about these tags again: keep the sets from growing.
        self._acked = {tag for tag in self._acked if tag >= first + count}
        self._nacked = {tag for tag in self._nacked if tag >= first + count}
        return answers

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is None:
            return
        try:
            connection.release()
        except Exception as exc:  # a connection already broken may fail to close
            log.debug("closing the publisher's connection: %r", exc)
