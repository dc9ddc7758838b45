"""Dead letters: see what failed and why, and send it back (`jicm dead-letters`).

    jicm dead-letters list                 # every dead-letter queue, with counts
    jicm dead-letters show QUEUE [--limit N]
    jicm dead-letters replay QUEUE [--event-id ID ...]
    jicm dead-letters discard QUEUE --event-id ID [...]

A dead letter returns to the consumer queue it came from (its `x-jicm-queue` header)
with its retry count reset; an unrouted event returns to the events exchange under its
type. Each message is acknowledged only after the broker confirmed its copy, so an
interrupted replay duplicates at worst, and consumers deduplicate by event id.
Reading a queue does not consume it: `show` puts every message back.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from shared.commands import CONFIGURATION_ERROR, Commands
from shared.config import ConfigError, load_settings
from shared.events.consumer import ATTEMPT_HEADER
from shared.events.topology import (
    CONSUMERS,
    EVENTS_EXCHANGE_NAME,
    UNROUTED_NAME,
    consumer_queue_name,
    dead_letter_queue_name,
)

INTERNAL_HEADERS = (ATTEMPT_HEADER, "x-jicm-last-error", "x-jicm-reason", "x-jicm-queue",
                    "x-jicm-attempts", "x-jicm-dead-at", "x-death", "x-first-death-exchange",
                    "x-first-death-queue", "x-first-death-reason", "x-last-death-exchange",
                    "x-last-death-queue", "x-last-death-reason")


@dataclass
class DeadLetterInfo:
    """What an operator needs to know about one parked message."""

    delivery_tag: int
    event_id: str | None
    event_type: str | None
    reason: str | None
    origin: str | None
    dead_at: str | None
    body: bytes
    properties: pika.BasicProperties
    routing_key: str


def dead_letter_queues(consumers: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """The names of every dead-letter queue of the topology, and the unrouted queue."""
    table = CONSUMERS if consumers is None else consumers
    names = [
        dead_letter_queue_name(consumer_queue_name(service, event_type))
        for service, event_types in table.items()
        for event_type in event_types
    ]
    return [*names, UNROUTED_NAME]


def connect(amqp_uri: str) -> pika.BlockingConnection:
    # kombu accepts pyamqp://; pika only the standard schemes.
    uri = amqp_uri.replace("pyamqp://", "amqp://", 1)
    return pika.BlockingConnection(pika.URLParameters(uri))


def queue_depth(channel: BlockingChannel, queue: str) -> int | None:
    try:
        return channel.queue_declare(queue, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker:
        return None


def peek(channel: BlockingChannel, queue: str, limit: int) -> Iterator[DeadLetterInfo]:
    """Fetch up to `limit` messages without acknowledging them."""
    for _ in range(limit):
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            return
        yield _describe(method, properties, body)


def _describe(method, properties: pika.BasicProperties, body: bytes) -> DeadLetterInfo:
    headers = properties.headers or {}
    event_id = headers.get("x-event-id") or properties.message_id
    event_type = None
    try:
        envelope = json.loads(body)
        event_id = event_id or envelope.get("event_id")
        event_type = envelope.get("type")
    except (ValueError, AttributeError):
        pass
    return DeadLetterInfo(
        delivery_tag=method.delivery_tag,
        event_id=_text(event_id),
        event_type=_text(event_type),
        # A quorum queue dead-letters a message past its delivery limit itself: then the
        # broker's own headers say where it came from and why.
        reason=_text(headers.get("x-jicm-reason") or headers.get("x-first-death-reason")),
        origin=_text(headers.get("x-jicm-queue") or headers.get("x-first-death-queue")),
        dead_at=_text(headers.get("x-jicm-dead-at")),
        body=body,
        properties=properties,
        routing_key=method.routing_key,
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def replay(channel: BlockingChannel, queue: str, event_ids: set[str] | None = None,
           limit: int = 10_000) -> int:
    """Send dead letters back to where they came from. Returns how many were replayed."""
    channel.confirm_delivery()
    replayed = 0
    for info in list(peek(channel, queue, limit)):
        if event_ids is not None and info.event_id not in event_ids:
            continue
        exchange, routing_key = _destination(queue, info)
        channel.basic_publish(
            exchange=exchange,
            routing_key=routing_key,
            body=info.body,
            properties=_fresh_properties(info.properties),
            mandatory=True,
        )
        channel.basic_ack(info.delivery_tag)
        replayed += 1
    return replayed


def discard(channel: BlockingChannel, queue: str, event_ids: set[str], limit: int = 10_000) -> int:
    """Drop the named dead letters for good. Returns how many were dropped."""
    dropped = 0
    for info in list(peek(channel, queue, limit)):
        if info.event_id in event_ids:
            channel.basic_ack(info.delivery_tag)
            dropped += 1
    return dropped


def _destination(queue: str, info: DeadLetterInfo) -> tuple[str, str]:
    if queue == UNROUTED_NAME:
        return EVENTS_EXCHANGE_NAME, info.routing_key
    if not info.origin:
        raise SystemExit(f"a message in {queue} has no x-jicm-queue header; cannot replay it")
    return "", info.origin


def _fresh_properties(properties: pika.BasicProperties) -> pika.BasicProperties:
    headers = {k: v for k, v in (properties.headers or {}).items() if k not in INTERNAL_HEADERS}
    return pika.BasicProperties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=headers,
        delivery_mode=2,
        message_id=properties.message_id,
    )


def add_commands(commands: Commands) -> None:
    """`jicm dead-letters list|show|replay|discard`."""
    dead = commands.add_parser("dead-letters", help="events that failed, and why; replay them",
                               description=__doc__.split("\n\n")[0])
    verbs = dead.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs.add_parser("list", help="dead-letter queues and how many messages each holds")
    show = verbs.add_parser("show", help="the messages of one queue and why they failed")
    show.add_argument("queue")
    show.add_argument("--limit", type=int, default=100)
    again = verbs.add_parser("replay", help="send messages back to their consumer")
    again.add_argument("queue")
    again.add_argument("--event-id", action="append", help="only these events (repeatable)")
    drop = verbs.add_parser("discard", help="drop named messages for good")
    drop.add_argument("queue")
    drop.add_argument("--event-id", action="append", required=True)
    dead.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return CONFIGURATION_ERROR
    connection = connect(settings.amqp_uri)
    try:
        return _run(args, connection.channel())
    finally:
        connection.close()  # unacknowledged messages go back to their queue


def _run(args: argparse.Namespace, channel: BlockingChannel) -> int:
    if args.verb == "list":
        for queue in dead_letter_queues():
            depth = queue_depth(channel, queue)
            if depth is None:
                channel = channel.connection.channel()
                depth_text = "not declared"
            else:
                depth_text = str(depth)
            print(f"{queue}\t{depth_text}")
        return 0
    if args.verb == "show":
        for info in peek(channel, args.queue, args.limit):
            print(f"{info.event_id}\t{info.event_type}\t{info.dead_at}\t{info.origin}\t{info.reason}")
        return 0
    if args.verb == "replay":
        ids = set(args.event_id) if args.event_id else None
        print(f"replayed {replay(channel, args.queue, ids)} message(s) from {args.queue}")
        return 0
    print(f"discarded {discard(channel, args.queue, set(args.event_id))} message(s)")
    return 0
