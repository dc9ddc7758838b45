"""Cookie choices of visitors who are not signed in, and how they join an account.

The site asks every visitor about non-essential cookies before setting any. The browser
keeps the answer with a random visitor token (`shared.visitors`); privacy keeps the proof
under the token's SHA-256, never the token itself:

    {_id: sha256(token), cookies: {analytics, marketing}, receipts: [...], version,
     created_at, updated_at, expires_at}

The first choice is recorded whole: its receipt names every category, those left off too
("no" is an answer the visitor gave). Later choices record what changed, like an
account's. A Global Privacy Control or Do Not Track signal keeps every category off
(the receipt is then of method `gpc` or `dnt`). The record expires with the cookie,
`COOKIE_CHOICE_DAYS` after the last choice, when the site asks again.

When the visitor signs up, the site hands accounts the token, `UserRegistered` names its
id, and `adopt` moves the choice and its receipts into the new account's consent (one
conditional update, with `ConsentChanged` if a choice changed), then deletes the
visitor's record. Receipts keep their ids, so a redelivered event adopts nothing twice.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from services.privacy.consent import (
    CAS_ATTEMPTS,
    Consents,
    choices_of,
    default_consent,
    fields_of,
)
from services.privacy.schemas import (
    COOKIE_CATEGORIES,
    ClientContext,
    CookieChoices,
    VisitorConsentView,
)
from shared.client import truncate_ip
from shared.errors import Conflict, InvalidInput
from shared.throttle import Limit, hashed_key
from shared.visitors import COOKIE_CHOICE_DAYS, is_visitor_token, visitor_consent_id

log = logging.getLogger(__name__)

# Choices are made by people clicking a banner; this only stops a script filling the store.
VISITOR_CHOICES_PER_CLIENT = Limit("visitor-consent-client", count=60, window_seconds=3600)
LIFETIME = timedelta(days=COOKIE_CHOICE_DAYS)


class VisitorConsents:
    """Use cases of a visitor's cookie choice, for one request or event."""

    def __init__(self, consents: Consents) -> None:
        self.consents = consents
        self.repo = consents.repo
        self.now = consents.now

    def choose(self, token: str, asked: dict[str, bool],
               client: ClientContext) -> VisitorConsentView:
        """Record the visitor's answer (every category); a signal keeps them all off."""
        if not is_visitor_token(token):
            raise InvalidInput("the visitor token is malformed", code="invalid_visitor_token",
                               details={"field": "visitor"})
        if client.ip:
            self.repo.throttle.consume(VISITOR_CHOICES_PER_CLIENT, hashed_key(client.ip),
                                       self.now)
        wanted = {category: bool(asked[category]) for category in COOKIE_CATEGORIES}
        kept_off = [f"cookies.{c}" for c, on in wanted.items() if on] if client.signal else []
        if client.signal:
            wanted = dict.fromkeys(COOKIE_CATEGORIES, False)
        visitor_id = visitor_consent_id(token)
        for _ in range(CAS_ATTEMPTS):
            written = self._record(visitor_id, wanted, client)
            if written is not None:
                return _view(written, client, kept_off)
        raise Conflict("your choice changed while we recorded it; try again", code="busy")

    def _record(self, visitor_id: str, wanted: dict[str, bool],
                client: ClientContext) -> dict[str, Any] | None:
        method = client.signal or "web"
        doc = self.repo.visitor_consent(visitor_id)
        if doc is None:
            receipt = self._receipt(method, wanted, client)
            return self.repo.add_visitor_consent({
                "_id": visitor_id, "cookies": wanted, "receipts": [receipt], "version": 0,
                "created_at": self.now, "updated_at": self.now,
                "expires_at": self.now + LIFETIME})
        changes = {c: on for c, on in wanted.items() if doc["cookies"].get(c) != on}
        receipt = self._receipt(method, changes, client) if changes else None
        return self.repo.change_visitor_consent(doc, wanted, receipt, self.now,
                                                self.now + LIFETIME)

    def _receipt(self, method: str, choices: dict[str, bool],
                 client: ClientContext) -> dict[str, Any]:
        notice = self.consents.notice
        return {
            "id": str(uuid.uuid4()), "at": self.now, "method": method,
            "changes": [{"purpose": f"cookies.{category}", "choice": on}
                        for category, on in sorted(choices.items())],
            "notice_version": notice.version, "notice_sha256": notice.sha256,
            "ip_truncated": truncate_ip(client.ip), "user_agent": client.user_agent,
            "gpc": client.gpc, "dnt": client.dnt,
        }

    # Signing up ---------------------------------------------------------------------------

    def adopt(self, user_id: str, visitor_id: str) -> bool:
        """Move a visitor's cookie choice and its receipts into their new account.
        True if moved now; False when there was nothing (left) to move."""
        visitor = self.repo.visitor_consent(visitor_id)
        if visitor is None or visitor["expires_at"] <= self.now:
            return False
        for _ in range(CAS_ATTEMPTS):
            doc = self.repo.ensure_consent(user_id, default_consent(self.now))
            known = {receipt.get("id") for receipt in doc.get("receipts", [])}
            receipts = [r for r in visitor["receipts"] if r["id"] not in known]
            if not receipts:
                break  # adopted before (a redelivered event): only the record is left
            before = choices_of(doc)
            after = {**before, **{f"cookies.{c}": bool(on)
                                  for c, on in visitor["cookies"].items()}}
            event = (self.consents.changed_event(user_id, after, "web")
                     if after != before else None)
            if self.repo.adopt_receipts(doc, fields_of(after), receipts, event, self.now):
                log.info("a visitor's cookie choice joined account %s", user_id)
                break
        else:
            raise Conflict("consent changed too often while a visitor's choice joined it",
                           code="busy")
        self.repo.delete_visitor_consent(visitor_id)
        return bool(receipts)


def _view(doc: dict[str, Any], client: ClientContext,
          kept_off: list[str]) -> VisitorConsentView:
    return VisitorConsentView(cookies=CookieChoices(**doc["cookies"]), signal=client.signal,
                              kept_off=kept_off, expires_at=doc["expires_at"])
