"""The delivery service: nameko entrypoints only; the rules live in `deliveries.py` (accepting
mail, status, consent) and `pipeline.py` (sending)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from pydantic import BaseModel, ValidationError

from services.delivery import privacy
from services.delivery.context_seal import PURPOSE as SEAL_PURPOSE
from services.delivery.context_seal import ContextSeal
from services.delivery.deliveries import Deliveries
from services.delivery.loop import SendingLoopWaker, sending_loop
from services.delivery.pipeline import Pipeline
from services.delivery.release_mail import released_requests, vault_rpc
from services.delivery.reminders import reminder_request
from services.delivery.schemas import MailRequest, ReminderStatusRequest, StatusRequest
from services.delivery.smtp import SmtpSession, SmtpTransport
from services.delivery.storage import DELIVERIES, INDEXES, SUPPRESSIONS, DeliveryRepository
from services.delivery.test_release_mail import FetchedValues
from services.delivery.unsubscribe import PURPOSE as UNSUBSCRIBE_PURPOSE
from shared.dependencies import Clock, Config, LogContext
from shared.errors import InvalidInput, ServiceError
from shared.events import DeadLetter, Event, OutboxRelay, event_handler
from shared.health import health_report
from shared.metrics import ServiceMetrics
from shared.privacy import Erasures
from shared.retention import retention
from shared.rpc.entrypoint import rpc
from shared.storage.provider import Storage

# The sealed mail values and the unsubscribe links are keyed from the secret key.
REQUIRED_SETTINGS = ("JICM_SECRET_KEY",)
UNSUBSCRIBE_SOURCES = ("one_click", "page")


class DeliveryService:
    name = "delivery"

    log_context = LogContext()
    settings = Config()
    clock = Clock()
    store = Storage(INDEXES, repository=DeliveryRepository)
    metrics = ServiceMetrics()
    outbox = OutboxRelay(DELIVERIES, SUPPRESSIONS)
    wake_sender = SendingLoopWaker()
    # Asked for an inline release's (or test release's) text when its mail is built
    # (never stored here).
    vault = vault_rpc()

    def _seal(self) -> ContextSeal:
        return ContextSeal(self.settings.derived_key(SEAL_PURPOSE))

    def _deliveries(self) -> Deliveries:
        return Deliveries(
            self.store,
            self._seal(),
            self.clock.now(),
            public_url=self.settings.public_url,
            unsubscribe_key=self.settings.derived_key(UNSUBSCRIBE_PURPOSE),
            wake_sender=self.wake_sender,
        )

    # RPC ------------------------------------------------------------------------------

    @rpc(expected_exceptions=ServiceError)
    def send(self, kind: str, reference: str, to: str, context: dict,
             to_name: str | None = None, user_id: str | None = None) -> dict:
        request = _validated(MailRequest, kind=kind, reference=reference, to=to,
                             context=context, to_name=to_name, user_id=user_id)
        return self._deliveries().request(request).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def mail_status(self, kind: str, references: list) -> dict:
        request = _validated(StatusRequest, kind=kind, references=references)
        return self._deliveries().status(request)

    @rpc(expected_exceptions=ServiceError)
    def reminder_status(self, references: list) -> dict:
        """The scheduler asks, before a switch fires, where its reminders stand."""
        request = _validated(ReminderStatusRequest, references=references)
        answers = self._deliveries().reminder_status(request.references)
        return {ref: answer.model_dump(mode="json") for ref, answer in answers.items()}

    @rpc(expected_exceptions=ServiceError)
    def check_unsubscribe(self, token: str) -> None:
        self._deliveries().check_unsubscribe(token)

    @rpc(expected_exceptions=ServiceError)
    def unsubscribe(self, token: str, source: str = "one_click") -> None:
        if source not in UNSUBSCRIBE_SOURCES:
            raise InvalidInput(f"source must be one of {', '.join(UNSUBSCRIBE_SOURCES)}")
        self._deliveries().unsubscribe(token, source)

    @rpc
    def health(self) -> dict:
        return health_report(self.name, self.store.deliveries)

    # Events -------------------------------------------------------------------------------

    # A mail about an erased user's account (one that waited behind the erasure) is not
    # sent; privacy's receipts about the erasure itself carry no user id and always go.
    @event_handler("MailRequested", unless_erased=True)
    def on_mail_requested(self, event: Event) -> None:
        request = _from_event(MailRequest, event.data.model_dump())
        _refuse_bad_request(lambda: self._deliveries().request(request))

    @event_handler("ReminderDue", unless_erased=True)
    def on_reminder_due(self, event: Event) -> None:
        request = reminder_request(event.data, self.settings.public_url)
        _refuse_bad_request(lambda: self._deliveries().request(request))

    # An author erased here asked for nothing to be released; their messages are gone.
    @event_handler("MessageReleased", unless_erased=True)
    def on_message_released(self, event: Event) -> None:
        deliveries = self._deliveries()
        requests = released_requests(event.data, self.settings.public_url)
        refused = []
        for recipient, request in zip(event.data.recipients, requests, strict=True):
            try:
                deliveries.request(request)
            except InvalidInput as exc:
                # Ids only: names and addresses stay out of logs and dead letters.
                refused.append(f"recipient {recipient.recipient_id}: {exc.code}")
        if refused:
            # Every other recipient's mail is accepted; a replay accepts nothing twice.
            raise DeadLetter("; ".join(refused))

    # An erased address stays suppressed: a late opt-in must not lift it.
    @event_handler("ConsentChanged", unless_erased=True)
    def on_consent_changed(self, event: Event) -> None:
        self._deliveries().consent_changed(event.data, event.occurred_at)

    # Privacy (services/delivery/privacy.py) -----------------------------------------------

    @rpc
    def export_user(self, user_id: str) -> dict:
        return privacy.export_user(self.store, user_id)

    erasures = Erasures()

    @event_handler("ErasureRequested")
    def on_erasure_requested(self, event: Event) -> None:
        data = event.data
        self.erasures.answer(data, lambda: privacy.erase_user(
            self.store, data.user_id, data.email, self.clock.now()))

    @retention
    def purge(self) -> None:
        privacy.reduce_old_records(self.store, self.clock.now(),
                                   timedelta(days=self.settings.retention_mail_log_days))

    # The sending loop -------------------------------------------------------------------------

    @sending_loop
    def send_due_mail(self, keep_going: Callable[[], bool]) -> bool:
        pipeline = Pipeline(self.store, self.settings, self._seal(), self.clock,
                            lambda: SmtpSession(SmtpTransport.from_settings(self.settings)),
                            fetch=FetchedValues(self.vault), relay=self.outbox.wake)
        return pipeline.send_due(keep_going)


def _validated(model: type[BaseModel], **values: object) -> BaseModel:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or "request"
        raise InvalidInput(f"{where}: {error['msg']}", details={"field": where}) from None


def _from_event(model: type[BaseModel], values: dict) -> BaseModel:
    try:
        return _validated(model, **values)
    except InvalidInput as exc:
        raise DeadLetter(str(exc)) from None


def _refuse_bad_request(accept: Callable[[], object]) -> None:
    """A request no retry can fix (unknown kind, bad address or context) is dead-lettered."""
    try:
        accept()
    except InvalidInput as exc:
        raise DeadLetter(f"{exc.code}: {exc}") from None
