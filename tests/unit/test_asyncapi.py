"""docs/asyncapi.yaml is the event contract as the code enforces it: regenerated, it is
unchanged; every event the topology routes is in it with its payload exactly as pydantic
validates it, every consumer queue and every producer has its operation, every reference
resolves, and the document is valid AsyncAPI 3.0 (against the specification's own JSON
Schema, from the npm package @asyncapi/specs that `make test` installs). The producers it
names are those whose code writes the events."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from shared.events.asyncapi import (
    DOCUMENT,
    SCHEMAS_REF,
    broadcast_channel_id,
    queue_channel_id,
    render,
)
from shared.events.broadcast import BROADCASTS, is_broadcast
from shared.events.schemas import EVENT_SCHEMAS
from shared.events.topology import CONSUMERS, ERASING_SERVICES, PRODUCERS, consumer_queue_name

REPO = Path(__file__).resolve().parents[2]
SPEC_SCHEMA = REPO / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0.json"
DOC = yaml.safe_load(DOCUMENT.read_text())
ROUTED = sorted(set(PRODUCERS) | {event for events in CONSUMERS.values() for event in events})


def test_the_committed_document_is_what_the_schemas_generate():
    assert DOCUMENT.read_text() == render(), \
        "docs/asyncapi.yaml is out of date: run python -m shared.events.asyncapi"


@pytest.mark.parametrize("event", ROUTED)
def test_every_routed_event_is_published_with_its_exact_schema(event):
    expected = EVENT_SCHEMAS[event].model_json_schema(ref_template=SCHEMAS_REF)
    nested = expected.pop("$defs", {})
    schemas = DOC["components"]["schemas"]
    assert schemas[event] == expected
    for name, schema in nested.items():
        assert schemas[name] == schema
    envelope = schemas[f"{event}Envelope"]["allOf"][1]["properties"]
    assert envelope["type"] == {"const": event}
    assert envelope["data"] == {"$ref": f"#/components/schemas/{event}"}
    assert DOC["channels"][event]["address"] == event
    exchange = "jicm.broadcast" if is_broadcast(event) else "jicm.events"
    assert DOC["channels"][event]["bindings"]["amqp"]["exchange"]["name"] == exchange
    assert DOC["components"]["messages"][event]["payload"] == {
        "$ref": f"#/components/schemas/{event}Envelope"}


def test_every_consumer_queue_and_every_producer_has_its_operation():
    operations = DOC["operations"]
    for service, events in CONSUMERS.items():
        for event in events:
            receive = operations[f"{service}_receives_{event}"]
            channel = DOC["channels"][queue_channel_id(service, event)]
            assert receive["action"] == "receive"
            assert receive["channel"] == {"$ref": f"#/channels/{queue_channel_id(service, event)}"}
            assert channel["address"] == consumer_queue_name(service, event)
            assert channel["bindings"]["amqp"]["queue"]["durable"] is True
    for event, producers in PRODUCERS.items():
        for producer in producers:
            assert operations[f"{producer}_publishes_{event}"]["action"] == "send"


@pytest.mark.parametrize("event", sorted(BROADCASTS))
def test_every_listener_of_a_broadcast_hears_it_through_a_queue_of_its_own(event):
    for listener in BROADCASTS[event]:
        channel = DOC["channels"][broadcast_channel_id(listener, event)]
        assert channel["bindings"]["amqp"]["queue"] == {
            "name": "", "durable": False, "exclusive": True, "autoDelete": True}
        assert DOC["operations"][f"{listener}_hears_{event}"]["channel"] == {
            "$ref": f"#/channels/{broadcast_channel_id(listener, event)}"}


def test_the_guarantees_are_stated():
    info = DOC["info"]
    assert info["x-delivery-guarantee"] == "at-least-once"
    assert info["x-deduplicate-by"] == "event_id"
    assert "at least once" in info["description"]
    assert set(DOC["components"]["schemas"]["Envelope"]["required"]) >= {
        "event_id", "type", "version", "occurred_at", "producer", "data"}


def test_every_reference_resolves():
    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in set(refs(DOC)):
        target = DOC
        for part in ref.removeprefix("#/").split("/"):
            assert part in target, f"{ref} does not resolve"
            target = target[part]


@pytest.mark.skipif(not SPEC_SCHEMA.is_file(),
                    reason="@asyncapi/specs is not installed (make test runs npm ci)")
def test_the_document_is_valid_asyncapi_3():
    validator = jsonschema.Draft7Validator(json.loads(SPEC_SCHEMA.read_text()))
    problems = [f"{'/'.join(map(str, error.path))}: {error.message[:200]}"
                for error in validator.iter_errors(DOC)]
    assert problems == []


def test_the_producers_named_are_those_whose_code_writes_the_events():
    written = re.compile(r"(?:new_event|_event)\(\s*\"(\w+)\"")
    found: dict[str, set[str]] = {}
    for service_dir in sorted((REPO / "services").iterdir()):
        if not (service_dir / "service.py").is_file():
            continue
        for source in service_dir.rglob("*.py"):
            for event in written.findall(source.read_text()):
                found.setdefault(event, set()).add(service_dir.name)
    # Every erasing service answers the saga through shared/privacy.py.
    found.setdefault("ErasureCompleted", set()).update(ERASING_SERVICES)
    assert found == {event: set(producers) for event, producers in PRODUCERS.items()}
