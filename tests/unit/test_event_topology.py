"""The broker topology follows the services: every event a service handles has its
consumer queue declared (or it would be dropped while that service is down), no queue is
declared for an event nobody handles (it would fill for ever), and every handler of an
event about a user, in a service that keeps erasure records, asks them first."""

from __future__ import annotations

import inspect

import pytest
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

from services.accounts.service import AccountsService
from services.billing.service import BillingService
from services.delivery.service import DeliveryService
from services.privacy.service import PrivacyService
from services.scheduler.service import SchedulerService
from services.vault.service import VaultService
from shared.events.broadcast import BROADCAST_EXCHANGE, BROADCASTS, listener_queue
from shared.events.consumer import EventHandler
from shared.events.schemas import EVENT_SCHEMAS
from shared.events.topology import CONSUMERS, PRODUCERS, all_entities
from shared.privacy import Erasures

SERVICES = (AccountsService, BillingService, DeliveryService, PrivacyService,
            SchedulerService, VaultService)


def handlers(service: type) -> dict[str, object]:
    """Event type -> the method that handles it, as the service class declares them."""
    found = {}
    for _, method in inspect.getmembers(service):
        for entrypoint in getattr(method, ENTRYPOINT_EXTENSIONS_ATTR, ()):
            if isinstance(entrypoint, EventHandler):
                found[entrypoint.event_type] = method
    return found


def test_the_consumer_table_is_exactly_what_the_services_handle():
    declared = {service.name: set(handlers(service)) for service in SERVICES}
    tabled = {name: set(events) for name, events in CONSUMERS.items()}
    assert tabled == {name: events for name, events in declared.items() if events}


# Privacy runs the erasure saga: it guards by the erasure it was asked for (its ledger),
# which it knows before any other service has answered, and its saga events are about
# the erasure itself.
ERASING_SERVICES = [s for s in SERVICES if s is not PrivacyService
                    and isinstance(getattr(s, "erasures", None), Erasures)]


def about_a_user(event_type: str) -> bool:
    return event_type != "ErasureRequested" and "user_id" in EVENT_SCHEMAS[event_type].model_fields


@pytest.mark.parametrize("service", ERASING_SERVICES, ids=lambda s: s.name)
def test_handlers_of_events_about_a_user_skip_users_erased_here(service):
    for event_type, method in handlers(service).items():
        if not about_a_user(event_type):
            continue
        assert hasattr(method, "__wrapped__"), (
            f"{service.name}.{method.__name__} handles {event_type} about a user: declare it "
            "with unless_erased=True")


def test_a_broadcast_is_heard_by_every_process_never_claimed_by_one_service_queue():
    # A competing consumer queue would hand each broadcast to one replica only.
    for event in BROADCASTS:
        assert not [service for service, events in CONSUMERS.items() if event in events]
        assert PRODUCERS[event], f"{event} has a producer"
    assert BROADCAST_EXCHANGE in all_entities(CONSUMERS)


def test_each_listening_process_gets_a_server_named_queue_that_dies_with_it():
    queue = listener_queue(BROADCASTS)
    assert (queue.name, queue.exclusive, queue.auto_delete, queue.durable) == (
        "", True, True, False)
    assert {b.routing_key for b in queue.bindings} == set(BROADCASTS)
