"""The scheduler service: nameko entrypoints only; the rules live in `switches.py`, the
owner's use cases in `scheduler.py`, and the loop in `loop.py`."""

from __future__ import annotations

from datetime import timedelta

import eventlet
from nameko.timer import timer

from services.scheduler import census, privacy
from services.scheduler.contacts import TrustedContacts
from services.scheduler.dependencies import (
    InstanceId,
    delivery_status,
    reminder_question,
    tick,
)
from services.scheduler.loop import DueSwitches, LoopSettings, liveness
from services.scheduler.metrics import CHECK_INS
from services.scheduler.scheduler import Scheduler
from services.scheduler.schemas import (
    CheckInRequest,
    ClientContext,
    ReleasedSwitches,
    SwitchSettings,
    SwitchUpdate,
    TrustedContactRequest,
)
from services.scheduler.storage import INDEXES, SWITCHES, TRUSTED_CONTACTS, SchedulerRepository
from services.scheduler.tokens import link_key
from shared.dependencies import Clock, Config, LogContext
from shared.entitlements import billing_rpc
from shared.errors import ServiceError
from shared.events import DeadLetter, Event, OutboxRelay, event_handler
from shared.health import health_report
from shared.logging import request_id
from shared.metrics import ServiceMetrics
from shared.privacy import Erasures
from shared.rpc.entrypoint import rpc
from shared.storage.provider import Storage

REQUIRED_SETTINGS = ("JICM_SECRET_KEY",)


class SchedulerService:
    name = "scheduler"

    log_context = LogContext()
    settings = Config()
    clock = Clock()
    store = Storage(INDEXES, repository=SchedulerRepository)
    metrics = ServiceMetrics()
    outbox = OutboxRelay(SWITCHES, TRUSTED_CONTACTS)
    delivery = delivery_status()
    instance = InstanceId()
    # Asked for a user's plan (creating a switch) when the scheduler's copy says "free".
    billing = billing_rpc()

    def _scheduler(self) -> Scheduler:
        return Scheduler(
            self.store,
            self.clock.now(),
            min_interval=self.settings.min_interval,
            link_key=link_key(self.settings.secret_key_bytes),
            request_id=request_id.get(),
            billing=self.billing,
        )

    # The loop -------------------------------------------------------------------------

    @tick
    def run_due_switches(self) -> None:
        settings = LoopSettings(
            instance=self.instance,
            batch=self.settings.scheduler_batch,
            lease=timedelta(seconds=self.settings.scheduler_lease),
            recheck=timedelta(seconds=self.settings.scheduler_recheck),
            link_key=link_key(self.settings.secret_key_bytes),
            public_url=self.settings.public_url,
        )
        # Between batches of a long tick, eventlet.sleep() lets RPCs and heartbeats through.
        DueSwitches(self.store, self.clock.now(), settings, reminder_question(self.delivery),
                    clock=self.clock.now, pause=eventlet.sleep).tick()

    @timer(interval=census.CENSUS_CHECK_SECONDS, eager=True)
    def count_switches(self) -> None:
        """Take a census of switches by state when the last one is `CENSUS_EVERY` old."""
        if census.due(self.store, self.clock.now()):
            census.take(self.store, self.clock.now, self.instance, pause=eventlet.sleep)

    # Events ---------------------------------------------------------------------------

    # An event about a user erased here (it waited in a retry queue behind the erasure, or
    # was replayed from a dead letter) must not bring back a switch or an address.

    @event_handler("UserRegistered", unless_erased=True)
    def on_user_registered(self, event: Event) -> None:
        self._scheduler().on_user_registered(event.data.user_id, event.data.email)

    @event_handler("EmailVerified", unless_erased=True)
    def on_email_verified(self, event: Event) -> None:
        self._scheduler().on_email_verified(event.data.user_id, event.data.email)

    @event_handler("ReminderSettled", unless_erased=True)
    def on_reminder_settled(self, event: Event) -> None:
        self._scheduler().on_reminder_settled(event.data)

    @event_handler("PlanChanged", unless_erased=True)
    def on_plan_changed(self, event: Event) -> None:
        self._scheduler().on_plan_changed(event.data)

    # The owner's API ------------------------------------------------------------------

    @rpc(expected_exceptions=ServiceError)
    def list_switches(self, user_id: str) -> dict:
        return self._scheduler().list(user_id).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def get_switch(self, user_id: str, switch_id: str) -> dict:
        return self._scheduler().get(user_id, switch_id).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def create_switch(self, user_id: str, settings: dict) -> dict:
        created = self._scheduler().create(user_id, SwitchSettings.model_validate(settings))
        return created.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def update_switch(self, user_id: str, switch_id: str, changes: dict) -> dict:
        updated = self._scheduler().update(user_id, switch_id,
                                           SwitchUpdate.model_validate(changes))
        return updated.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def check_in(self, user_id: str, request: dict, client: dict) -> dict:
        switch_id = CheckInRequest.model_validate(request).switch_id
        result = self._scheduler().check_in(user_id, switch_id,
                                            ClientContext.model_validate(client))
        return result.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def inspect_link(self, token: str, client: dict) -> dict:
        answer = self._scheduler().inspect_link(token, ClientContext.model_validate(client))
        return answer.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def check_in_by_link(self, token: str, client: dict) -> dict:
        answer = self._scheduler().check_in_by_link(token, ClientContext.model_validate(client))
        return answer.model_dump(mode="json")

    # Trusted contacts (services/scheduler/contacts.py) ------------------------------------

    def _contacts(self) -> TrustedContacts:
        return TrustedContacts(self._scheduler(), self.settings.public_url)

    @rpc(expected_exceptions=ServiceError)
    def list_trusted_contacts(self, user_id: str, switch_id: str) -> dict:
        return self._contacts().list(user_id, switch_id).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def add_trusted_contact(self, user_id: str, switch_id: str, request: dict) -> dict:
        added = self._contacts().add(user_id, switch_id,
                                     TrustedContactRequest.model_validate(request))
        return added.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def remove_trusted_contact(self, user_id: str, switch_id: str, contact_id: str) -> None:
        self._contacts().remove(user_id, switch_id, contact_id)

    @rpc(expected_exceptions=ServiceError)
    def inspect_invitation(self, token: str, client: dict) -> dict:
        answer = self._contacts().inspect_invitation(token, ClientContext.model_validate(client))
        return answer.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def decide_invitation(self, token: str, decision: str, client: dict) -> dict:
        answer = self._contacts().decide_invitation(token, decision,
                                                    ClientContext.model_validate(client))
        return answer.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def inspect_contact_request(self, token: str, client: dict) -> dict:
        answer = self._contacts().inspect_request(token, ClientContext.model_validate(client))
        return answer.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def hold_release(self, token: str, client: dict) -> dict:
        return self._contacts().hold(token, ClientContext.model_validate(client)).model_dump(
            mode="json")

    @rpc(expected_exceptions=ServiceError)
    def confirm_absence(self, token: str, client: dict) -> dict:
        return self._contacts().confirm(token, ClientContext.model_validate(client)).model_dump(
            mode="json")

    # Other services -------------------------------------------------------------------

    @rpc(expected_exceptions=ServiceError)
    def default_switch_id(self, user_id: str) -> str:
        """The vault asks where a message without a `switch_id` goes."""
        return self._scheduler().default_switch_id(user_id)

    @rpc(expected_exceptions=ServiceError)
    def owns_switch(self, user_id: str, switch_id: str) -> bool:
        """The vault asks whether a message may be written to this switch."""
        return self._scheduler().owns_switch(user_id, switch_id)

    @rpc(expected_exceptions=ServiceError)
    def mark_released(self, releases: list) -> dict:
        """The vault handed every message of these fired switches to delivery: by switch
        id, None once released, or why not."""
        request = ReleasedSwitches.model_validate({"releases": releases})
        return self._scheduler().mark_all_released(request.releases)

    @rpc
    def liveness(self) -> dict:
        return liveness(self.store, self.clock.now())

    @rpc
    def health(self) -> dict:
        return health_report(self.name, self.store.switches)

    # Privacy (services/scheduler/privacy.py) ----------------------------------------------

    # One history record per event id: a redelivered check-in adds nothing by itself.
    @event_handler("CheckedIn", unless_erased=True, keyed_by_event=True)
    def on_checked_in(self, event: Event) -> None:
        if privacy.record_check_in(self.store, event.event_id, event.data, event.occurred_at,
                                   timedelta(days=self.settings.retention_checkin_days)):
            CHECK_INS.labels(event.data.method).inc()

    @rpc
    def export_user(self, user_id: str) -> dict:
        return privacy.export_user(self.store, user_id)

    @rpc
    def retention_refusal(self, user_id: str) -> str | None:
        """The vault asks before a retention erasure: it must refuse it exactly when we do."""
        return privacy.retention_refusal(self.store, user_id)

    erasures = Erasures()

    @event_handler("ErasureRequested")
    def on_erasure_requested(self, event: Event) -> None:
        data = event.data
        try:
            self.erasures.answer(data, lambda: privacy.erase_user(self.store, data.user_id,
                                                                  data.reason))
        except privacy.ArmedSwitchKept as refused:
            raise DeadLetter(str(refused)) from None
