"""The event envelope: validated when written to an outbox and again when received."""

from datetime import UTC, datetime

import pytest

from shared.events import MalformedEvent, new_event, parse_event
from shared.events.schemas import EVENT_SCHEMAS, UserRegistered

NOW = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
DESIGN_EVENTS = {
    "UserRegistered", "EmailVerified", "CheckedIn", "ReminderDue", "CheckInMissed",
    "MessageReleased", "DeliveryFailed", "PlanChanged", "ConsentChanged",
    "ErasureRequested", "ErasureCompleted",
}


def registered(**data):
    payload = {"user_id": "u1", "email": "ada@example.org", "policy_version": "2024-04-29"}
    return new_event("UserRegistered", {**payload, **data}, producer="accounts", now=NOW)


def test_every_event_of_the_design_has_a_schema():
    # Beyond the design's table: mail requests, and privacy's AccountExpired (retention) and
    # Unsubscribed (a consent receipt for the unsubscribe link), and the AccountChanged
    # broadcast to the gateways, each explained in docs/architecture.md.
    assert set(EVENT_SCHEMAS) == DESIGN_EVENTS | {"MailRequested", "AccountExpired",
                                                  "Unsubscribed", "ReminderSettled",
                                                  "AccountChanged"}


def test_an_envelope_carries_the_design_fields_and_survives_a_round_trip():
    envelope = registered()
    assert set(envelope) >= {"event_id", "type", "version", "occurred_at", "producer", "data"}
    event = parse_event(envelope)
    assert event.type == "UserRegistered"
    assert event.occurred_at == NOW
    assert isinstance(event.data, UserRegistered)
    assert event.data.email == "ada@example.org"


def test_each_envelope_gets_its_own_id():
    assert registered()["event_id"] != registered()["event_id"]


def test_an_invalid_event_is_refused_before_it_is_written():
    with pytest.raises(MalformedEvent, match="user_id"):
        new_event("UserRegistered", {"email": "a@b.c", "policy_version": "1"},
                  producer="accounts", now=NOW)


def test_an_unknown_field_is_refused_rather_than_silently_carried():
    with pytest.raises(MalformedEvent, match="plaintext"):
        registered(plaintext="secret")


@pytest.mark.parametrize(
    "body, reason",
    [
        ("not a dict", "not a JSON object"),
        ({"type": "UserRegistered"}, "lacks"),
        ({**registered(), "type": "Nope"}, "unknown event type"),
        ({**registered(), "version": 99}, "version 99"),
        ({**registered(), "event_id": "not-a-uuid"}, "bad envelope"),
        ({**registered(), "occurred_at": "2030-01-01T00:00:00"}, "no timezone"),
        ({**registered(), "data": {"user_id": 5}}, "user_id"),
    ],
)
def test_a_malformed_message_is_refused_with_the_reason(body, reason):
    with pytest.raises(MalformedEvent, match=reason):
        parse_event(body)
