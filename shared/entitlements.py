"""A service's own copy of its users' plan limits, and the one way to ask for them.

Billing owns entitlements. The services that enforce them (the scheduler for switches,
the vault for messages) keep a copy in their own database, fed by `PlanChanged`, so a
limit check needs no round trip and still works while billing is down. How a service
uses it::

    from shared.entitlements import (ENTITLEMENTS, ENTITLEMENTS_INDEXES, EntitlementsCache,
                                     billing_rpc, limits_for)

    INDEXES = {..., **ENTITLEMENTS_INDEXES}

    class VaultRepository:
        def __init__(self, db):
            ...
            self.entitlements = EntitlementsCache(db.collection(ENTITLEMENTS))

    class VaultService:
        store = Storage(INDEXES, repository=VaultRepository)
        billing = billing_rpc()

        @event_handler("PlanChanged")
        def on_plan_changed(self, event):
            self.store.entitlements.record(event.data)

        @rpc(expected_exceptions=ServiceError)
        def add_message(self, user_id, ...):
            limits = limits_for(user_id, self.store.entitlements, self.billing)
            limits.require("messages_per_switch", messages_on_switch + 1)   # 402 when over

(add `"PlanChanged"` to the service's entry in `shared.events.topology.CONSUMERS`.)

Rules every caller keeps: check limits only when something new is created or grows;
never for what already exists (a downgrade keeps it), never for a release.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from shared.events.schemas import PlanChanged
from shared.plans import FREE, Entitlements, PlanLimits, free_limits
from shared.rpc.bounded import BoundedRpcProxy
from shared.rpc.errors import RpcTimeout
from shared.storage import Collection, DuplicateKeyError

log = logging.getLogger(__name__)

ENTITLEMENTS = "entitlements"
# Documents are keyed by user id: no index beyond `_id` is needed.
ENTITLEMENTS_INDEXES: dict[str, list] = {ENTITLEMENTS: []}

# How long a limit check waits for billing before it settles for what it has. A request
# that waited longer than that in the queue is dropped by the broker, not run late.
BILLING_RPC_TIMEOUT = 3.0


def billing_rpc() -> BoundedRpcProxy:
    """The RPC dependency to declare on a service that calls `limits_for`."""
    return BoundedRpcProxy("billing", timeout=BILLING_RPC_TIMEOUT)


class EntitlementsCache:
    """The newest known limits of each user, one document per user id."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def record(self, change: PlanChanged, now: datetime | None = None) -> bool:
        """Keep `change` unless a newer revision is already here. True if it was kept.

        Idempotent and order-proof: a redelivered or overtaken event changes nothing.
        """
        return self._store(change.user_id, change.plan, change.status,
                           change.entitlements.model_dump(), change.revision, now)

    def record_answer(self, user_id: str, answer: dict[str, Any],
                      now: datetime | None = None) -> bool:
        """Keep what `billing.entitlements` answered (same rule as `record`)."""
        return self._store(user_id, answer["plan"], answer["status"], answer["entitlements"],
                           int(answer.get("revision", 0)), now)

    def get(self, user_id: str) -> PlanLimits | None:
        doc = self.collection.get(user_id)
        if doc is None or "revision" not in doc:
            # None, or a copy in the flat shape the vault and the scheduler kept before
            # this module existed: unknown, so billing is asked.
            return None
        return PlanLimits(doc["plan"], doc["status"], Entitlements.from_dict(doc["entitlements"]),
                          source="cache", revision=int(doc["revision"]))

    def forget(self, user_id: str) -> None:
        """Drop a user's copy (erasure)."""
        self.collection.delete_one({"_id": user_id})

    def _store(self, user_id: str, plan: str, status: str, entitlements: dict[str, Any],
               revision: int, now: datetime | None) -> bool:
        fields = {"plan": plan, "status": status, "revision": revision,
                  "entitlements": Entitlements.from_dict(entitlements).as_dict()}
        if now is not None:
            fields["updated_at"] = now
        try:
            # Matches only an older revision; a miss inserts, and a newer (or equal) copy
            # makes that insert clash on `_id`: the copy we hold is already as new.
            self.collection.update_one(
                {"_id": user_id, "revision": {"$lt": revision}}, {"$set": fields}, upsert=True
            )
        except DuplicateKeyError:
            # Our copy is as new, or it is an older flat copy (no revision): replace that.
            replaced = self.collection.update_one(
                {"_id": user_id, "revision": {"$exists": False}}, {"$set": fields})
            return replaced is not None
        return True


def limits_for(user_id: str, cache: EntitlementsCache, billing: Any = None) -> PlanLimits:
    """The limits to enforce for `user_id` on NEW content: cache, then billing, then free.

    A cached paid plan is used as it is. A cached free plan (or none) is checked with
    billing first, because that is the one case where a stale copy hurts: someone who has
    just paid must not be told to upgrade because `PlanChanged` is still on its way.
    Billing unreachable: the cached copy, else the free plan (`source="fallback"`).
    """
    cached = cache.get(user_id)
    if cached is not None and cached.plan != FREE.name:
        return cached
    answer = _ask_billing(billing, user_id) if billing is not None else None
    if answer is None:
        return cached or free_limits(source="fallback")
    cache.record_answer(user_id, answer)
    return PlanLimits(answer["plan"], answer["status"],
                      Entitlements.from_dict(answer["entitlements"]),
                      source="billing", revision=int(answer.get("revision", 0)))


def _ask_billing(billing: Any, user_id: str) -> dict[str, Any] | None:
    try:
        return billing.call("entitlements", user_id)
    except RpcTimeout as exc:
        log.warning("%s; using the limits at hand", exc)
    except Exception as exc:
        log.warning("billing could not be asked for entitlements (%s: %s); "
                    "using the limits at hand", type(exc).__name__, exc)
    return None
