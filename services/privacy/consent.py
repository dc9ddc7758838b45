"""Consent: marketing by channel, cookie categories, the policy accepted, and the proof.

Marketing and non-essential cookies are opt-in: everything is off until the person turns
it on. Each change is recorded as an append-only consent receipt, in the same conditional
update that changes the choices and puts `ConsentChanged` in the outbox:

    {id, at, method, changes: [{purpose, choice}], notice_version, notice_sha256,
     ip_truncated, user_agent, gpc, dnt}

(`gpc`/`dnt`: the privacy signals the request carried.)

`method` is how the choice was made: `signup` (the policy accepted with the account),
`api` (a program's signed-in request), `web` (a person on the web site, signed in or
not: `visitors.py`), `gpc` / `dnt` (a browser's privacy signal), or `unsubscribe_link`
(the link in a marketing mail).

A Global Privacy Control (`Sec-GPC: 1`) or Do Not Track (`DNT: 1`) signal on any consent
request, reading or writing, is honoured as an opt-out of sale and sharing and of
non-essential cookies: marketing and cookie choices are kept off (and turned off, with a
receipt of method `gpc`/`dnt`, if they were on). The published policy says DNT is not
honoured; we honour it anyway.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from services.privacy.notices import Notice, notice
from services.privacy.schemas import (
    CHANNELS,
    COOKIE_CATEGORIES,
    ClientContext,
    ConsentReceiptList,
    ConsentUpdate,
    ConsentView,
)
from services.privacy.storage import PrivacyRepository
from shared.client import truncate_ip
from shared.errors import Conflict
from shared.events import new_event
from shared.throttle import Limit, hashed_key

log = logging.getLogger(__name__)

PRODUCER = "privacy"
CAS_ATTEMPTS = 5
CONSENT_CHANGES_PER_USER = Limit("consent-user", count=60, window_seconds=3600)
RECEIPT_NAMESPACE = uuid.UUID("3b0f2a54-64f4-4c1e-9a0f-6a1d1f0b7c21")

# Every purpose a receipt can name, and what is off until given.
PURPOSES = ([f"marketing.{channel}" for channel in CHANNELS]
            + [f"cookies.{category}" for category in COOKIE_CATEGORIES])
# What a privacy signal keeps off: everything that is not essential.
SIGNAL_OFF = tuple(PURPOSES)


def receipt_id_for_event(event_id: str) -> str:
    """A receipt made from an event has the event's id in its own: a redelivered event
    finds its receipt already there."""
    return str(uuid.uuid5(RECEIPT_NAMESPACE, event_id))


def default_consent(now: datetime) -> dict[str, Any]:
    """A consent document before any choice: everything off."""
    return {
        "marketing": {channel: False for channel in CHANNELS},
        "cookies": {category: False for category in COOKIE_CATEGORIES},
        "policy_version": None,
        "policy_accepted_at": None,
        "version": 0,
        "receipts": [],
        "created_at": now,
        "updated_at": None,
    }


def choices_of(doc: dict[str, Any]) -> dict[str, bool]:
    """`purpose: choice` for every purpose of a consent document."""
    found = {}
    for purpose in PURPOSES:
        group, name = purpose.split(".")
        found[purpose] = bool(doc.get(group, {}).get(name, False))
    return found


def fields_of(choices: dict[str, bool]) -> dict[str, Any]:
    """The document fields holding `choices` (`marketing.email`... as dotted paths)."""
    return dict(choices)


class Consents:
    """Use cases around consent, for one request or event."""

    def __init__(self, repo: PrivacyRepository, current_notice: Notice, now: datetime, *,
                 request_id: str | None = None) -> None:
        self.repo = repo
        self.notice = current_notice
        self.now = now
        self.request_id = request_id

    # Reading ----------------------------------------------------------------------------

    def view(self, user_id: str, client: ClientContext) -> ConsentView:
        """The user's choices. A privacy signal on the request is honoured here too: what it
        keeps off is turned off (with a receipt), so reading never shows a choice the
        browser just opted out of."""
        doc = self.repo.consent(user_id)
        if client.signal and doc is not None and any(choices_of(doc)[p] for p in SIGNAL_OFF):
            return self.change(user_id, ConsentUpdate.model_construct(), client)
        return _view(doc, client.signal, [])

    def receipts(self, user_id: str) -> ConsentReceiptList:
        """Every receipt of the user's consent, oldest first: the proof of each choice."""
        doc = self.repo.consent(user_id) or {}
        found = sorted(doc.get("receipts", []), key=lambda receipt: receipt["at"])
        return ConsentReceiptList.model_validate({"receipts": found})

    # Changing -----------------------------------------------------------------------------

    def change(self, user_id: str, update: ConsentUpdate, client: ClientContext) -> ConsentView:
        """Apply the choices asked for (a signal keeps non-essential ones off)."""
        self.repo.throttle.consume(CONSENT_CHANGES_PER_USER, hashed_key(user_id), self.now)
        asked = update.choices() if update.model_fields_set else {}
        method = client.signal or client.via
        for _ in range(CAS_ATTEMPTS):
            doc = self.repo.ensure_consent(user_id, default_consent(self.now))
            before = choices_of(doc)
            after = {**before, **asked}
            kept_off: list[str] = []
            if client.signal:
                kept_off = [p for p in SIGNAL_OFF if asked.get(p)]
                after.update({purpose: False for purpose in SIGNAL_OFF})
            changes = {p: after[p] for p in PURPOSES if after[p] != before[p]}
            if not changes:
                return _view(doc, client.signal, kept_off)
            receipt = self._receipt(str(uuid.uuid4()), method, changes, client.ip,
                                    client.user_agent, self.notice, self.now)
            receipt.update(gpc=client.gpc, dnt=client.dnt)
            written = self.repo.change_consent(doc, fields_of(after), receipt,
                                               self.changed_event(user_id, after, method),
                                               self.now)
            if written is not None:
                return _view(written, client.signal, kept_off)
        raise Conflict("your choices changed while we recorded them; try again", code="busy")

    def unsubscribed(self, user_id: str, source: str, event_id: str, at: datetime) -> bool:
        """Record the unsubscribe link delivery acted on: marketing mail off, with a receipt
        of method `unsubscribe_link`. Once per event. True if recorded now."""
        receipt_id = receipt_id_for_event(event_id)
        for _ in range(CAS_ATTEMPTS):
            doc = self.repo.ensure_consent(user_id, default_consent(self.now))
            if _has_receipt(doc, receipt_id):
                return False
            after = {**choices_of(doc), "marketing.email": False}
            receipt = self._receipt(receipt_id, "unsubscribe_link",
                                    {"marketing.email": False}, None, None, self.notice, at)
            receipt["source"] = source
            written = self.repo.change_consent(
                doc, fields_of(after), receipt,
                self.changed_event(user_id, after, "unsubscribe_link"), self.now)
            if written is not None:
                return True
        raise Conflict("consent changed too often while recording an unsubscribe", code="busy")

    def signed_up(self, user_id: str, policy_version: str, ip_truncated: str | None,
                  user_agent: str | None, event_id: str, at: datetime) -> bool:
        """Record the policy accepted with the account (from UserRegistered). Once per event."""
        receipt_id = receipt_id_for_event(event_id)
        accepted = notice(policy_version)
        if accepted is None:
            log.error("user %s accepted policy %r, of which we keep no text", user_id,
                      policy_version)
        for _ in range(CAS_ATTEMPTS):
            doc = self.repo.ensure_consent(user_id, default_consent(self.now))
            if _has_receipt(doc, receipt_id):
                return False
            receipt = {
                "id": receipt_id, "at": at, "method": "signup",
                "changes": [{"purpose": "policy", "choice": policy_version}],
                "notice_version": policy_version,
                "notice_sha256": accepted.sha256 if accepted else None,
                # Already truncated by accounts (a /24 or /48 network, never an address).
                "ip_truncated": ip_truncated,
                "user_agent": user_agent,
            }
            fields = {"policy_version": policy_version, "policy_accepted_at": at}
            if self.repo.add_receipt(doc, fields, receipt, self.now) is not None:
                return True
        raise Conflict("consent changed too often while recording a sign-up", code="busy")

    # Building blocks ----------------------------------------------------------------------

    @staticmethod
    def _receipt(receipt_id: str, method: str, changes: dict[str, bool], ip: str | None,
                 user_agent: str | None, shown: Notice, at: datetime) -> dict[str, Any]:
        return {
            "id": receipt_id,
            "at": at,
            "method": method,
            "changes": [{"purpose": purpose, "choice": choice}
                        for purpose, choice in sorted(changes.items())],
            "notice_version": shown.version,
            "notice_sha256": shown.sha256,
            "ip_truncated": truncate_ip(ip),
            "user_agent": user_agent,
        }

    def changed_event(self, user_id: str, choices: dict[str, bool], method: str) -> dict:
        """`ConsentChanged` with the user's choices as they are after the change."""
        return new_event(
            "ConsentChanged",
            {
                "user_id": user_id,
                "marketing": {c: choices[f"marketing.{c}"] for c in CHANNELS},
                "cookies": {c: choices[f"cookies.{c}"] for c in COOKIE_CATEGORIES},
                "gpc": method in ("gpc", "dnt"),
                "source": method,
            },
            producer=PRODUCER,
            now=self.now,
            request_id=self.request_id,
        )


def _has_receipt(doc: dict[str, Any], receipt_id: str) -> bool:
    return any(receipt.get("id") == receipt_id for receipt in doc.get("receipts", []))


def _view(doc: dict[str, Any] | None, signal: str | None, kept_off: list[str]) -> ConsentView:
    doc = doc or {}
    return ConsentView(
        marketing={c: bool(doc.get("marketing", {}).get(c, False)) for c in CHANNELS},
        cookies={c: bool(doc.get("cookies", {}).get(c, False)) for c in COOKIE_CATEGORIES},
        policy_version=doc.get("policy_version"),
        policy_accepted_at=doc.get("policy_accepted_at"),
        signal=signal,
        kept_off=kept_off,
        updated_at=doc.get("updated_at"),
    )
