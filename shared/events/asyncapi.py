"""The event contract as an AsyncAPI 3.0 document, generated from the code that enforces it:
the pydantic schemas that validate every event (schemas.py), the envelope (envelope.py)
and the broker topology (topology.py: exchange, routing keys, consumer queues, who
publishes what; broadcast.py: the events every process of a kind hears).

    python -m shared.events.asyncapi            # rewrite docs/asyncapi.yaml
    python -m shared.events.asyncapi --check    # exit 1 if it is out of date

tests/unit/test_asyncapi.py fails when the committed document differs from what this
builds, so the document cannot drift from the schemas.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

from shared.config import REPO_ROOT
from shared.events.broadcast import BROADCAST_EXCHANGE_NAME, BROADCASTS, is_broadcast
from shared.events.consumer import ATTEMPT_HEADER
from shared.events.envelope import ENVELOPE_FIELDS
from shared.events.schemas import EVENT_SCHEMAS, EVENT_VERSIONS
from shared.events.topology import (
    CONSUMERS,
    EVENTS_EXCHANGE_NAME,
    PRODUCERS,
    RETRY_DELAYS_SECONDS,
    UNROUTED_NAME,
    consumer_queue_name,
    dead_letter_queue_name,
)

DOCUMENT = REPO_ROOT / "docs" / "asyncapi.yaml"
SCHEMAS_REF = "#/components/schemas/{model}"
AMQP_BINDING_VERSION = "0.3.0"

GUARANTEES = f"""\
Every event travels on the topic exchange `{EVENTS_EXCHANGE_NAME}` with its type as the
routing key, as a persistent JSON message published with publisher confirms from a
transactional outbox (the event is stored with the change it announces, then relayed).

Delivery is **at least once**: an event may arrive more than once (a relay that crashed
after the broker confirmed, a consumer that died before it acknowledged, a replayed dead
letter). Consumers **deduplicate by `event_id`**: each consumer records the ids it has
processed and acknowledges a copy it has seen without acting on it again. Order is not
guaranteed between events; consumers compare times and versions where order matters.

Each consumer has its own durable queue `jicm.<service>.<EventType>`. A handler that fails
is retried after {", ".join(f"{d} s" for d in RETRY_DELAYS_SECONDS)} (delay queues
`jicm.retry.<N>s`, header `{ATTEMPT_HEADER}` counting attempts), then its message is moved
to `jicm.<service>.<EventType>.dead` with the reason, where an operator lists and replays
it (`jicm dead-letters`). An event no queue takes is parked in `{UNROUTED_NAME}`.

Broadcast events ({", ".join(f"`{event}`" for event in sorted(BROADCASTS))}) travel instead
on the topic exchange `{BROADCAST_EXCHANGE_NAME}`, published the same way, to be heard by
**every** process of a kind: each listening process declares a server-named, exclusive,
auto-delete queue of its own bound for them, so every one receives a copy. A broadcast
is a hint to forget cached state, never work to be done: one that no process hears is
dropped, and a listener that (re)connects starts from nothing cached.
No event carries message content: ids, addresses and times only."""


def build_document() -> dict[str, Any]:
    """The whole AsyncAPI document as plain data."""
    data_schemas = _data_schemas()
    routed = sorted(set(PRODUCERS) | {event for events in CONSUMERS.values() for event in events})
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Just in Case events",
            "version": "1.0.0",
            "description": GUARANTEES,
            "x-delivery-guarantee": "at-least-once",
            "x-deduplicate-by": "event_id",
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": "rabbitmq:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The installation's RabbitMQ (AMQP_URI); vhost as configured.",
            },
        },
        "channels": {**{event: _event_channel(event) for event in routed},
                     **_queue_channels(), **_broadcast_channels()},
        "operations": _operations(routed),
        "components": {
            "messages": {event: _message(event) for event in routed},
            "schemas": {"Envelope": _envelope_schema(), **data_schemas,
                        **{f"{event}Envelope": _typed_envelope(event) for event in routed}},
        },
    }


def _data_schemas() -> dict[str, Any]:
    """Each event's `data` as JSON Schema, exactly as pydantic validates it."""
    _, definitions = models_json_schema(
        [(model, "validation") for model in EVENT_SCHEMAS.values()], ref_template=SCHEMAS_REF)
    return dict(sorted(definitions["$defs"].items()))


def _envelope_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "What every event carries around its `data`.",
        "required": list(ENVELOPE_FIELDS),
        "properties": {
            "event_id": {"type": "string", "format": "uuid",
                         "description": "uuid4; consumers deduplicate by it"},
            "type": {"type": "string", "description": "the event type, also the routing key"},
            "version": {"type": "integer", "description": "the schema's version"},
            "occurred_at": {"type": "string", "format": "date-time",
                            "description": "UTC, to the millisecond"},
            "producer": {"type": "string", "description": "the service that published it"},
            "request_id": {"type": "string",
                           "description": "the request that caused it, for logs (optional)"},
            "data": {"type": "object", "description": "the event's own fields"},
        },
    }


def _typed_envelope(event: str) -> dict[str, Any]:
    return {"allOf": [
        {"$ref": "#/components/schemas/Envelope"},
        {"type": "object", "properties": {
            "type": {"const": event},
            "version": {"const": EVENT_VERSIONS[event]},
            "data": {"$ref": SCHEMAS_REF.format(model=event)},
        }},
    ]}


def _message(event: str) -> dict[str, Any]:
    model = EVENT_SCHEMAS[event]
    return {
        "name": event,
        "title": event,
        "summary": (model.__doc__ or event).strip().split("\n\n")[0].replace("\n", " "),
        "contentType": "application/json",
        "headers": {"type": "object", "properties": {
            "x-event-id": {"type": "string", "description": "the envelope's event_id"},
        }},
        "payload": {"$ref": f"#/components/schemas/{event}Envelope"},
        "correlationId": {"location": "$message.payload#/event_id"},
        "bindings": {"amqp": {"contentEncoding": "utf-8", "messageType": event,
                              "bindingVersion": AMQP_BINDING_VERSION}},
    }


def _event_channel(event: str) -> dict[str, Any]:
    exchange = BROADCAST_EXCHANGE_NAME if is_broadcast(event) else EVENTS_EXCHANGE_NAME
    return {
        "address": event,
        "title": f"{event} on {exchange}",
        "messages": {event: {"$ref": f"#/components/messages/{event}"}},
        "bindings": {"amqp": {
            "is": "routingKey",
            "exchange": {"name": exchange, "type": "topic", "durable": True,
                         "autoDelete": False},
            "bindingVersion": AMQP_BINDING_VERSION,
        }},
    }


def queue_channel_id(service: str, event: str) -> str:
    """The channel id of a consumer queue (ids take no dots; the address is the queue)."""
    return f"{service}_{event}_queue"


def _queue_channels() -> dict[str, Any]:
    channels = {}
    for service, events in sorted(CONSUMERS.items()):
        for event in sorted(events):
            queue = consumer_queue_name(service, event)
            channels[queue_channel_id(service, event)] = {
                "address": queue,
                "title": f"{service}'s queue of {event}",
                "description": f"Bound to `{EVENTS_EXCHANGE_NAME}` with routing key `{event}`. "
                               f"Dead letters: `{dead_letter_queue_name(queue)}`.",
                "messages": {event: {"$ref": f"#/components/messages/{event}"}},
                "bindings": {"amqp": {
                    "is": "queue",
                    "queue": {"name": queue, "durable": True, "exclusive": False,
                              "autoDelete": False},
                    "bindingVersion": AMQP_BINDING_VERSION,
                }},
            }
    return channels


def broadcast_channel_id(listener: str, event: str) -> str:
    """The channel id of the queues through which each `listener` process hears `event`."""
    return f"{listener}_{event}_broadcast"


def _broadcast_channels() -> dict[str, Any]:
    channels = {}
    for event, listeners in sorted(BROADCASTS.items()):
        for listener in listeners:
            channels[broadcast_channel_id(listener, event)] = {
                # Server-named: each process's queue gets its name from the broker.
                "address": None,
                "title": f"each {listener} process's own queue of {event}",
                "description": f"One per {listener} process, bound to "
                               f"`{BROADCAST_EXCHANGE_NAME}` with routing key `{event}`: "
                               "every process hears every copy (no competing consumers).",
                "messages": {event: {"$ref": f"#/components/messages/{event}"}},
                "bindings": {"amqp": {
                    "is": "queue",
                    "queue": {"name": "", "durable": False, "exclusive": True,
                              "autoDelete": True},
                    "bindingVersion": AMQP_BINDING_VERSION,
                }},
            }
    return channels


def _operations(routed: list[str]) -> dict[str, Any]:
    operations = {}
    for event in routed:
        for producer in PRODUCERS.get(event, ()):
            operations[f"{producer}_publishes_{event}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{event}"},
                "summary": f"{producer} publishes {event} through its outbox",
                "messages": [{"$ref": f"#/channels/{event}/messages/{event}"}],
                "bindings": {"amqp": {"deliveryMode": 2, "mandatory": False,
                                      "bindingVersion": AMQP_BINDING_VERSION}},
            }
    for service, events in sorted(CONSUMERS.items()):
        for event in sorted(events):
            channel = queue_channel_id(service, event)
            operations[f"{service}_receives_{event}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel}"},
                "summary": f"{service} handles {event}, once per event_id",
                "messages": [{"$ref": f"#/channels/{channel}/messages/{event}"}],
                "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
            }
    for event, listeners in sorted(BROADCASTS.items()):
        for listener in listeners:
            channel = broadcast_channel_id(listener, event)
            operations[f"{listener}_hears_{event}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel}"},
                "summary": f"every {listener} process hears {event} and forgets what it "
                           "cached about the user",
                "messages": [{"$ref": f"#/channels/{channel}/messages/{event}"}],
                "bindings": {"amqp": {"ack": False, "bindingVersion": AMQP_BINDING_VERSION}},
            }
    return operations


class _Dumper(yaml.SafeDumper):
    """Multi-line text as literal blocks, so the document reads as it was written."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render() -> str:
    """The document as YAML, as committed in docs/asyncapi.yaml."""
    header = ("# Generated by `python -m shared.events.asyncapi` from shared/events: do not "
              "edit by hand.\n")
    return header + yaml.dump(build_document(), Dumper=_Dumper, sort_keys=False,
                              allow_unicode=True, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    parser.add_argument("--out", type=Path, default=DOCUMENT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.is_file() and args.out.read_text() == text
        print(f"{args.out} is {'current' if current else 'out of date'}")
        return 0 if current else 1
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
