"""The billing service: nameko entrypoints only; the rules live in the modules beside it.

RPC methods (all answers are JSON-ready dicts):
- `entitlements(user_id)`: `{plan, status, entitlements, revision}`; free for a user
  billing never heard of. What the scheduler and the vault ask (see `shared.entitlements`).
- `overview(user_id)`: `GET /api/v1/billing`.
- `start_checkout(user_id, email, request)`: `POST /api/v1/billing/checkout`.
- `open_portal(user_id)`: `POST /api/v1/billing/portal`.
- `receive_webhook(payload_b64, signature)`: `POST /webhooks/stripe`, the raw body as
  base64 so not one byte changes on the way.
- `export_user(user_id)`: billing's part of a privacy export.
"""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta

from services.billing import privacy
from services.billing.billing import Billing
from services.billing.schemas import StartCheckout
from services.billing.storage import CUSTOMERS, INDEXES, BillingRepository
from services.billing.stripe_api import StripePayments
from services.billing.webhooks import Webhooks
from shared.dependencies import Clock, Config, LogContext
from shared.errors import ServiceError
from shared.events import Event, OutboxRelay, event_handler
from shared.health import health_report
from shared.logging import request_id
from shared.metrics import ServiceMetrics
from shared.privacy import Erasures
from shared.retention import retention
from shared.rpc.entrypoint import rpc
from shared.storage.provider import Storage

# Production refuses to start billing without these (the secret key names erased users'
# pseudonyms in the erasure records).
REQUIRED_SETTINGS = ("JICM_SECRET_KEY", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET",
                     "STRIPE_PRICE_MONTHLY", "STRIPE_PRICE_YEARLY")


class BillingService:
    name = "billing"

    log_context = LogContext()
    settings = Config()
    clock = Clock()
    store = Storage(INDEXES, repository=BillingRepository)
    metrics = ServiceMetrics()
    outbox = OutboxRelay(CUSTOMERS)
    payments = StripePayments()

    def _billing(self) -> Billing:
        return Billing(self.store, self.payments, self.settings, self.clock.now())

    @rpc
    def entitlements(self, user_id: str) -> dict:
        return self._billing().entitlements(user_id).as_dict()

    @rpc
    def overview(self, user_id: str) -> dict:
        return self._billing().overview(user_id).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def start_checkout(self, user_id: str, email: str, request: dict) -> dict:
        plan = StartCheckout.model_validate(request).plan
        return self._billing().start_checkout(user_id, email, plan).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def open_portal(self, user_id: str) -> dict:
        return self._billing().open_portal(user_id).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def receive_webhook(self, payload_b64: str, signature: str | None) -> dict:
        try:
            payload = base64.b64decode(payload_b64, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise ServiceError("the body is not a Stripe event", code="malformed_event") from None
        webhooks = Webhooks(self.store, self.payments, self.settings, self.clock.now(),
                            request_id=request_id.get())
        return webhooks.receive(payload, signature).model_dump(mode="json")

    @rpc
    def health(self) -> dict:
        return health_report(self.name, self.store.customers)

    # Privacy (services/billing/privacy.py) ------------------------------------------------

    @rpc
    def export_user(self, user_id: str) -> dict:
        return privacy.export_user(self.store, user_id)

    erasures = Erasures()

    @event_handler("ErasureRequested")
    def on_erasure_requested(self, event: Event) -> None:
        data = event.data
        self.erasures.answer(data, lambda: privacy.erase_user(
            self.store, self.payments, data.user_id, self.clock.now()))

    @retention
    def purge(self) -> None:
        privacy.purge_old_invoices(self.store, self.clock.now(),
                                   timedelta(days=self.settings.retention_invoice_days))
