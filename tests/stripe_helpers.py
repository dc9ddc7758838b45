"""The local Stripe stand-in for tests, and the settings that point billing at it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from deploy.local.stripe_standin import StripeStandIn

API_KEY = "sk_test_jicm_tests"
PRICE_MONTHLY = "price_jicm_premium_monthly"
PRICE_YEARLY = "price_jicm_premium_yearly"


@contextmanager
def running_standin(webhook_secret: str, **options) -> Iterator[StripeStandIn]:
    """A stand-in serving on a free loopback port for the duration of the block."""
    standin = StripeStandIn(api_key=API_KEY, webhook_secret=webhook_secret, **options)
    standin.serve_in_thread()
    try:
        yield standin
    finally:
        standin.shutdown()


def billing_environment(data_dir: Path, standin_url: str, **extra: str) -> dict[str, str]:
    """Settings for a billing that talks to the stand-in at `standin_url`."""
    return {
        "JICM_ENV": "test",
        "JICM_DATA_DIR": str(data_dir),
        "STRIPE_API_BASE": standin_url,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_PRICE_MONTHLY": PRICE_MONTHLY,
        "STRIPE_PRICE_YEARLY": PRICE_YEARLY,
        **extra,
    }


def stripe_posts(standin: StripeStandIn, path: str) -> list[dict]:
    """The POSTs the stand-in received on `path` (replays included)."""
    return [r for r in standin.requests if r["method"] == "POST" and r["path"] == path]


def control(base_url: str, method: str, path: str, body: dict | None = None) -> dict:
    """Drive a stand-in running in another process through its control API."""
    response = requests.request(method, f"{base_url}/_control{path}", json=body or {},
                                timeout=10)
    response.raise_for_status()
    return response.json()


class BillingWorld:
    """Billing's domain code over a real embedded store, talking to a real stand-in.

    No broker: events stay in the customer documents' outboxes, where tests read them.
    """

    def __init__(self, tmp_path: Path) -> None:
        from datetime import UTC, datetime

        from services.billing.storage import INDEXES, BillingRepository
        from services.billing.stripe_api import Payments, new_stripe_client
        from shared.clock import FrozenClock
        from shared.config import load_settings
        from shared.storage.provider import open_store

        data_dir = tmp_path / "data"
        self.clock = FrozenClock(datetime.now(UTC))
        secret = load_settings({"JICM_ENV": "test", "JICM_DATA_DIR": str(data_dir)})
        self._standin = running_standin(secret.stripe_webhook_secret,
                                        clock=lambda: self.clock.now().timestamp())
        self.standin = self._standin.__enter__()
        self.settings = load_settings(billing_environment(data_dir, self.standin.public_url))
        self.db = open_store("billing", INDEXES, data_dir=data_dir)
        self.repo = BillingRepository(self.db)
        self.payments = Payments(new_stripe_client(API_KEY, self.standin.public_url))

    def close(self) -> None:
        self.db.close()
        self._standin.__exit__(None, None, None)

    def billing(self):
        from services.billing.billing import Billing

        return Billing(self.repo, self.payments, self.settings, self.clock.now())

    def webhooks(self):
        from services.billing.webhooks import Webhooks

        return Webhooks(self.repo, self.payments, self.settings, self.clock.now())

    def deliver(self, event: dict, **signing):
        """Hand `event` to billing as Stripe would: signed, over the raw bytes."""
        payload, signature = self.standin.signed(event, **signing)
        return self.webhooks().receive(payload, signature)

    def deliver_new(self, since: int = 0) -> list:
        """Deliver, in order, every event the stand-in emitted after the first `since`."""
        return [self.deliver(event) for event in self.standin.events_of()[since:]]

    def subscribe(self, user_id: str, email: str, plan: str = "premium_monthly") -> dict:
        """Checkout, pay in the stand-in, deliver the webhooks. Returns the subscription."""
        mark = len(self.standin.events_of())
        session = self.billing().start_checkout(user_id, email, plan)
        subscription = self.standin.pay(session.url.rsplit("/", 1)[1])
        self.deliver_new(mark)
        return subscription

    def outbox(self, user_id: str, event_type: str | None = None) -> list[dict]:
        doc = self.db.collection("customers").get(user_id) or {}
        return [e for e in doc.get("outbox", []) if event_type in (None, e["type"])]
