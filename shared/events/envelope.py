"""The event envelope: `event_id`, `type`, `version`, `occurred_at`, `producer`, `data`.

`new_event` builds and validates an envelope before it is stored in an outbox, so an
invalid event fails the write that would announce it. `parse_event` validates what a
consumer received; a `MalformedEvent` goes to the dead-letter queue with its reason.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.clock import to_utc_ms
from shared.events.schemas import EVENT_SCHEMAS, EVENT_VERSIONS, EventData

ENVELOPE_FIELDS = ("event_id", "type", "version", "occurred_at", "producer", "data")


class MalformedEvent(ValueError):
    """An event that no consumer can handle as it stands; the message says why."""


@dataclass(frozen=True)
class Event:
    """A received, validated event: the envelope with its typed `data`."""

    event_id: str
    type: str
    version: int
    occurred_at: datetime
    producer: str
    data: EventData
    request_id: str | None = None


def new_event(
    event_type: str,
    data: dict[str, Any] | BaseModel,
    *,
    producer: str,
    now: datetime,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Build a validated envelope as plain JSON-ready data, ready for an outbox."""
    schema = _schema_for(event_type)
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    try:
        model = schema.model_validate(payload)
    except ValidationError as exc:
        raise MalformedEvent(f"{event_type}: {_first_error(exc)}") from None
    envelope = {
        "event_id": str(uuid.uuid4()),
        "type": event_type,
        "version": EVENT_VERSIONS[event_type],
        "occurred_at": to_utc_ms(now).isoformat().replace("+00:00", "Z"),
        "producer": producer,
        "data": model.model_dump(mode="json"),
    }
    if request_id:
        envelope["request_id"] = request_id
    return envelope


def parse_event(body: Any) -> Event:
    """Validate a received message body. Raises MalformedEvent naming the problem."""
    if not isinstance(body, dict):
        raise MalformedEvent("the message body is not a JSON object")
    missing = [name for name in ENVELOPE_FIELDS if name not in body]
    if missing:
        raise MalformedEvent(f"the envelope lacks {', '.join(missing)}")
    event_type = body["type"]
    schema = _schema_for(event_type)
    if body["version"] != EVENT_VERSIONS[event_type]:
        raise MalformedEvent(f"{event_type} version {body['version']!r} is not understood")
    try:
        event_id = str(uuid.UUID(str(body["event_id"])))
        occurred_at = datetime.fromisoformat(str(body["occurred_at"]))
        data = schema.model_validate(body["data"])
    except ValidationError as exc:
        raise MalformedEvent(f"{event_type}: {_first_error(exc)}") from None
    except ValueError as exc:
        raise MalformedEvent(f"{event_type}: bad envelope ({exc})") from None
    if occurred_at.tzinfo is None:
        raise MalformedEvent(f"{event_type}: occurred_at has no timezone")
    return Event(
        event_id=event_id,
        type=event_type,
        version=body["version"],
        occurred_at=to_utc_ms(occurred_at),
        producer=str(body["producer"]),
        data=data,
        request_id=body.get("request_id"),
    )


def _schema_for(event_type: Any) -> type[EventData]:
    schema = EVENT_SCHEMAS.get(event_type) if isinstance(event_type, str) else None
    if schema is None:
        raise MalformedEvent(f"unknown event type {event_type!r}")
    return schema


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "data"
    return f"{where}: {error['msg']}"
