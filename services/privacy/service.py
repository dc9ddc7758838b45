"""The privacy service: nameko entrypoints only; the rules live in `consent.py`,
`requests.py`, `exports.py` and `saga.py`.

RPC methods (answers are JSON-ready dicts):
- `get_consent(user_id, client)`, `update_consent(user_id, changes, client)`: consent;
- `list_receipts(user_id)`: every consent receipt of the user, oldest first;
- `choose_visitor_cookies(visitor_token, choices, client)`: the cookie choice of a visitor
  who is not signed in (`visitors.py`);
- `create_request(user_id, email, request, client)`: an export or an erasure;
- `list_requests(user_id)`, `get_request(user_id, request_id)`, `download_export(...)`;
- `erasure_progress(request_id, token, client)`: an erasure's status for the holder of
  its progress token (the account is closed by then);
- `export_user(user_id)`: privacy's own part of an export (every service has one);
- `erase_child(email_or_user_id)`: operators only (`jicm privacy mark-child`).

Events consumed: `UserRegistered` (the policy accepted at sign-up, and the cookie choice
made before it), `Unsubscribed` (a
consent receipt for delivery's unsubscribe link), `AccountExpired` (accounts' retention:
erase), `ErasureRequested` (its own part), `ErasureCompleted` (the saga's progress).
Produced: `ConsentChanged`, `ErasureRequested`, `ErasureCompleted`, `MailRequested`.
"""

from __future__ import annotations

from datetime import timedelta

from nameko.timer import timer
from pydantic import ValidationError

from services.privacy.consent import Consents
from services.privacy.dependencies import Services
from services.privacy.export_seal import KEY_PURPOSE as EXPORT_KEY_PURPOSE
from services.privacy.exports import Exports, ExportSettings, privacy_part
from services.privacy.notices import current_notice
from services.privacy.request_figures import request_figures
from services.privacy.requests import Requests, RequestSettings, retention_request_id
from services.privacy.saga import Saga, erase_privacy_part
from services.privacy.schemas import (
    ClientContext,
    ConsentUpdate,
    NewPrivacyRequest,
    VisitorCookieChoice,
)
from services.privacy.storage import CONSENTS, INDEXES, REQUESTS, PrivacyRepository
from services.privacy.visitors import VisitorConsents
from shared.config import Settings
from shared.dependencies import Clock, Config, LogContext
from shared.errors import InvalidInput, ServiceError
from shared.events import Event, OutboxRelay, event_handler
from shared.events.topology import ERASING_SERVICES
from shared.health import health_report
from shared.logging import request_id
from shared.metrics import ServiceMetrics
from shared.privacy import SUBJECT_KEY_PURPOSE, Erasures, subject_of
from shared.rpc.entrypoint import rpc
from shared.storage.provider import Storage

# Pseudonyms in the ledger and the sealing of exports are keyed from the secret key.
REQUIRED_SETTINGS = ("JICM_SECRET_KEY",)
GATHER_INTERVAL_SECONDS = 1.0


def check_settings(settings: Settings) -> None:
    """The published text of the configured policy version must be in the repository."""
    current_notice(settings.policy_version)


def waited_for(settings: Settings) -> tuple[str, ...]:
    """The services an erasure or an export waits for: those that hold personal data and
    that this deployment runs (`JICM_SERVICES`), privacy always among them."""
    running = set(settings.service_names) | {"privacy"}
    return tuple(name for name in ERASING_SERVICES if name in running)


class PrivacyService:
    name = "privacy"

    log_context = LogContext()
    settings = Config()
    clock = Clock()
    store = Storage(INDEXES, repository=PrivacyRepository)
    metrics = ServiceMetrics(request_figures)
    outbox = OutboxRelay(CONSENTS, REQUESTS)
    erasures = Erasures()
    services = Services()

    def _consents(self) -> Consents:
        return Consents(self.store, current_notice(self.settings.policy_version),
                        self.clock.now(), request_id=request_id.get())

    def _requests(self) -> Requests:
        services = waited_for(self.settings)
        settings = RequestSettings(
            subject_key=self.settings.derived_key(SUBJECT_KEY_PURPOSE),
            public_url=self.settings.public_url,
            ledger_retention=timedelta(days=self.settings.retention_ledger_days),
            erasing_services=services,
            export_services=services,
        )
        return Requests(self.store, self.clock.now(), settings, self.services,
                        request_id=request_id.get())

    def _exports(self) -> Exports:
        settings = ExportSettings(
            key=self.settings.derived_key(EXPORT_KEY_PURPOSE),
            public_url=self.settings.public_url,
            ttl=timedelta(seconds=self.settings.export_ttl),
            lease=timedelta(seconds=2 * self.settings.export_timeout + 30),
            ledger_retention=timedelta(days=self.settings.retention_ledger_days),
        )
        return Exports(self.store, self.services, settings, self.clock.now(),
                       request_id=request_id.get())

    def _saga(self) -> Saga:
        return Saga(self.store, self.clock.now(),
                    closed_retention=timedelta(days=self.settings.retention_closed_days),
                    ledger_retention=timedelta(days=self.settings.retention_ledger_days),
                    request_id=request_id.get())

    # Consent ---------------------------------------------------------------------------

    @rpc(expected_exceptions=ServiceError)
    def get_consent(self, user_id: str, client: dict) -> dict:
        view = self._consents().view(user_id, ClientContext.model_validate(client))
        return view.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def update_consent(self, user_id: str, changes: dict, client: dict) -> dict:
        view = self._consents().change(user_id, ConsentUpdate.model_validate(changes),
                                       ClientContext.model_validate(client))
        return view.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def list_receipts(self, user_id: str) -> dict:
        return self._consents().receipts(user_id).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def choose_visitor_cookies(self, visitor_token: str, choices: dict, client: dict) -> dict:
        try:
            answer = VisitorCookieChoice.model_validate(choices)
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]
            raise InvalidInput(f"choices: {problem['msg']}", code="invalid_cookie_choice",
                               details={"field": "choices"}) from None
        view = VisitorConsents(self._consents()).choose(
            visitor_token, answer.model_dump(), ClientContext.model_validate(client))
        return view.model_dump(mode="json")

    @event_handler("UserRegistered")
    def on_user_registered(self, event: Event) -> None:
        data = event.data
        if self._erased(data.user_id):
            return
        consents = self._consents()
        consents.signed_up(data.user_id, data.policy_version, data.client.ip_truncated,
                           data.client.user_agent, event.event_id, event.occurred_at)
        if data.visitor_consent_id:
            VisitorConsents(consents).adopt(data.user_id, data.visitor_consent_id)

    @event_handler("Unsubscribed")
    def on_unsubscribed(self, event: Event) -> None:
        if self._erased(event.data.user_id):
            return
        self._consents().unsubscribed(event.data.user_id, event.data.source, event.event_id,
                                      event.occurred_at)

    def _erased(self, user_id: str) -> bool:
        # An event that arrives after the person's erasure must not bring their consent
        # record back (an unsubscribe clicked just before closing the account, say).
        subject = subject_of(self.settings.derived_key(SUBJECT_KEY_PURPOSE), user_id)
        return self.store.erasure_asked(subject)

    # Requests --------------------------------------------------------------------------

    @rpc(expected_exceptions=ServiceError)
    def create_request(self, user_id: str, email: str, request: dict, client: dict) -> dict:
        answer = self._requests().create(user_id, email, NewPrivacyRequest.model_validate(request),
                                         ClientContext.model_validate(client))
        return answer.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def list_requests(self, user_id: str) -> dict:
        return self._requests().list(user_id).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def get_request(self, user_id: str, request_id: str) -> dict:
        return self._requests().get(user_id, request_id).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def erasure_progress(self, request_id: str, token: str, client: dict) -> dict:
        view = self._requests().progress(request_id, token, ClientContext.model_validate(client))
        return view.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def download_export(self, user_id: str, request_id: str) -> dict:
        request = self._requests().owned(user_id, request_id)
        return self._exports().download(request)

    @rpc(expected_exceptions=ServiceError)
    def erase_child(self, email_or_user_id: str) -> dict:
        return self._requests().erase_child(email_or_user_id).model_dump(mode="json")

    @rpc
    def export_user(self, user_id: str) -> dict:
        subject = subject_of(self.settings.derived_key(SUBJECT_KEY_PURPOSE), user_id)
        return privacy_part(self.store, user_id, subject)

    @timer(interval=GATHER_INTERVAL_SECONDS)
    def gather_exports(self) -> None:
        self._exports().gather_due()

    # The erasure saga --------------------------------------------------------------------

    @event_handler("AccountExpired")
    def on_account_expired(self, event: Event) -> None:
        data = event.data
        self._requests().start_erasure(data.user_id, data.email, reason="retention",
                                       requested_by="retention",
                                       request_id=retention_request_id(data.user_id))

    @event_handler("ErasureRequested")
    def on_erasure_requested(self, event: Event) -> None:
        data = event.data
        self.erasures.answer(data, lambda: erase_privacy_part(self.store, data.user_id,
                                                              data.request_id))

    @event_handler("ErasureCompleted")
    def on_erasure_completed(self, event: Event) -> None:
        self._saga().answered(event.data)

    @rpc
    def health(self) -> dict:
        return health_report(self.name, self.store.requests)
