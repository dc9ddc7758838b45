"""A test release: every message of a switch, as each recipient would receive it, sent
only to its owner.

The owner asks (`start`); the vault checks the owner's address is verified (403
otherwise), that the switch is theirs (another user's is the same 404 as none) and has
not fired (409: a switch that fired or was released has had its real release), that it
holds messages, and the limit (`TEST_RELEASES_PER_OWNER`: per owner, across all their
switches, so more switches do not mean more mail; 429 with Retry-After beyond). Then:

1. a `test_releases` record (the owner's history, in the export), and one test link per
   (message, recipient): a fresh token whose lookup is kept in `test_read_tokens`, apart
   from the real release's `read_tokens`, hashed with a purpose of its own, and expiring
   after `TEST_LINK_LIFETIME`;
2. one mail per (message, recipient) asked of delivery over RPC, kind `test_release`,
   to the owner's address only, rendered from the real release's templates with the
   subject marked "[Test]".

Nothing of the switch changes: no message changes state, nothing is written to the real
release's collections (`releases`, `read_tokens`), the scheduler is only asked the
switch's state, and delivery's records of kind `test_release` never count as a real
release's (whose kind is `released_message`).

A test link opens its message, as the recipient's page marked as a test, until it
expires or the switch fires for real (then only the recipients' own links open it). A
real read link never opens a test page, and a test link never opens the real page: the
pages, the RPCs, the collections and the token hashes are separate.

If delivery cannot be reached half-way, the owner is told (503) and the record says how
many mails were accepted; the attempt still counts against the limit.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.vault.keys import DataKeys
from services.vault.records import SEALED, StoredMessage
from services.vault.scheduler_client import FIRED_STATES, SwitchDirectory
from services.vault.schemas import TestReleaseContent, TestReleaseOwner, TestReleaseStarted
from services.vault.sealed_fields import Sealer
from services.vault.storage import VaultRepository
from shared.errors import Conflict, Forbidden, NotFound, RateLimited, Unavailable
from shared.rpc.bounded import BoundedClient
from shared.rpc.errors import RemoteError, RpcTimeout, ServiceUnavailable
from shared.throttle import Limit, hashed_key

log = logging.getLogger(__name__)

KIND = "test_release"
TEST_LINK_LIFETIME = timedelta(hours=24)
TEST_RELEASES_PER_OWNER = Limit("test-release-owner", count=3, window_seconds=86_400)
READS_PER_CLIENT = Limit("read-test-release-client", count=60, window_seconds=10 * 60)
# One mail per message and recipient lands in one inbox: beyond this, a test is a flood.
MAX_TEST_MAILS = 50
TOKEN_BYTES = 32
# Delivery stores each mail and answers; this bounds one answer.
DELIVERY_TIMEOUT_SECONDS = 3.0
MESSAGES_LIMIT = 1000

# Test releases' states.
SENDING, SENT, INCOMPLETE = "sending", "sent", "incomplete"


class TestMail(Protocol):
    def send(self, kind: str, reference: str, to: str, context: dict[str, str],
             to_name: str | None, user_id: str) -> None: ...


def test_token_hash(token: str) -> str:
    """A test link's lookup key: a SHA-256 with its own purpose, never a real read token's."""
    return hashlib.sha256(b"jicm/test-release/v1|" + token.encode()).hexdigest()


@dataclass(frozen=True)
class TestRelease:
    """A test release as stored: when, of which switch, how much was sent."""

    id: str
    user_id: str
    switch_id: str
    created_at: datetime
    expires_at: datetime
    messages: int
    mails: int
    accepted: int
    state: str

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> TestRelease:
        return cls(id=doc["_id"], user_id=doc["user_id"], switch_id=doc["switch_id"],
                   created_at=doc["created_at"], expires_at=doc["expires_at"],
                   messages=doc["messages"], mails=doc["mails"], accepted=doc["accepted"],
                   state=doc["state"])

    def exported(self) -> dict[str, Any]:
        return {"id": self.id, "switch_id": self.switch_id, "created_at": self.created_at,
                "expires_at": self.expires_at, "messages": self.messages, "mails": self.mails,
                "mails_accepted": self.accepted, "state": self.state}


@dataclass(frozen=True)
class _Mail:
    message: StoredMessage
    recipient_id: str
    recipient_name: str
    sender_name: str


class TestReleases:
    """Test releases of a switch to its owner, and opening their links."""

    def __init__(self, repo: VaultRepository, keys: DataKeys, switches: SwitchDirectory,
                 now: datetime, public_url: str = "") -> None:
        self.repo = repo
        self.keys = keys
        self.switches = switches
        self.now = now
        self.public_url = public_url

    # Sending ------------------------------------------------------------------------------

    def start(self, user_id: str, switch_id: str, owner: TestReleaseOwner,
              mail: TestMail) -> TestReleaseStarted:
        """Send every message of the switch, as each recipient would get it, to its owner."""
        if not owner.email_verified:
            raise Forbidden("confirm your email address first: a test release is sent to "
                            "it, and only to it", code="email_not_verified")
        self._check_switch(user_id, switch_id)
        messages = self._messages(user_id, switch_id)
        mails = self._mails(messages)
        self._count_against_limit(user_id)
        release = self._record(user_id, switch_id, len(messages), len(mails))
        accepted = 0
        try:
            for planned in mails:
                self._send(release, planned, owner.email, mail)
                accepted += 1
        finally:
            self._finish(release, accepted)
        log.info("test release %s of switch %s: %d mail(s) to its owner",
                 release.id, switch_id, accepted)
        return TestReleaseStarted(id=release.id, switch_id=switch_id, messages=len(messages),
                                  mails=accepted, sent_to=owner.email,
                                  created_at=release.created_at, expires_at=release.expires_at)

    def _check_switch(self, user_id: str, switch_id: str) -> None:
        state = self.switches.switch_state(user_id, switch_id)
        if state is None:
            raise NotFound(f"you have no switch {switch_id}", code="switch_not_found")
        if state in FIRED_STATES:
            raise Conflict(f"switch {switch_id} has fired (state: {state}): its messages "
                           "were released for real, so there is nothing left to test",
                           code="switch_fired", details={"switch_id": switch_id, "state": state})

    def _messages(self, user_id: str, switch_id: str) -> list[StoredMessage]:
        messages = self.repo.sealed_in_switch(user_id, switch_id, MESSAGES_LIMIT)
        if not messages:
            raise Conflict(f"switch {switch_id} holds no message yet: write one first",
                           code="no_messages", details={"switch_id": switch_id})
        return sorted(messages, key=lambda message: message.created_at)

    def _mails(self, messages: list[StoredMessage]) -> list[_Mail]:
        total = sum(len(message.recipients) for message in messages)
        if total > MAX_TEST_MAILS:
            raise Conflict(f"a test of this switch would be {total} mails (one per message "
                           f"and recipient); a test release sends at most {MAX_TEST_MAILS}",
                           code="test_release_too_large",
                           details={"mails": total, "maximum": MAX_TEST_MAILS})
        key = self.keys.get(messages[0].user_id)
        mails = []
        for message in messages:
            sealer = Sealer.of(key, message)
            sender_name = sealer.open_sender(message)
            for stored in message.recipients:
                recipient = sealer.open_recipient(stored)
                mails.append(_Mail(message, recipient.id, recipient.name, sender_name))
        return mails

    def _count_against_limit(self, user_id: str) -> None:
        try:
            self.repo.throttle.consume(TEST_RELEASES_PER_OWNER, hashed_key(user_id), self.now)
        except RateLimited as exc:
            raise RateLimited(f"a test release can be sent {TEST_RELEASES_PER_OWNER.count} "
                              "times a day per account (UTC days); try again later",
                              code="test_release_limit", details=exc.details) from None

    def _record(self, user_id: str, switch_id: str, messages: int, mails: int) -> TestRelease:
        doc = {"_id": str(uuid.uuid4()), "user_id": user_id, "switch_id": switch_id,
               "created_at": self.now, "expires_at": self.now + TEST_LINK_LIFETIME,
               "messages": messages, "mails": mails, "accepted": 0, "state": SENDING}
        self.repo.test_releases.insert(doc)
        return TestRelease.from_doc(doc)

    def _send(self, release: TestRelease, planned: _Mail, to: str, mail: TestMail) -> None:
        message = planned.message
        context = {"sender_name": planned.sender_name, "recipient_name": planned.recipient_name,
                   "expires_at": f"{release.expires_at:%-d %B %Y at %H:%M} UTC"}
        if message.inline:
            context |= {"variant": "inline", "test_release_id": release.id,
                        "message_id": message.id, "recipient_id": planned.recipient_id}
        else:
            context |= {"variant": "link", "link": self._link(release, planned)}
        mail.send(KIND, f"{release.id}/{message.id}/{planned.recipient_id}", to, context,
                  None, release.user_id)

    def _link(self, release: TestRelease, planned: _Mail) -> str:
        """A fresh test link, on the site's own page for test links (`/r/test/<token>`)."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self.repo.test_read_tokens.insert({
            "_id": test_token_hash(token), "test_release_id": release.id,
            "user_id": release.user_id, "switch_id": release.switch_id,
            "message_id": planned.message.id, "recipient_id": planned.recipient_id,
            "created_at": self.now, "expires_at": release.expires_at,
        })
        return f"{self.public_url}/r/test/{token}"

    def _finish(self, release: TestRelease, accepted: int) -> None:
        state = SENT if accepted == release.mails else INCOMPLETE
        self.repo.test_releases.update_one({"_id": release.id},
                                           {"$set": {"accepted": accepted, "state": state}})

    # Opening ---------------------------------------------------------------------------

    def read(self, token: str, client_ip: str | None) -> TestReleaseContent:
        """The message a test link opens, marked as a test; the same 404 for anything else."""
        if client_ip:
            self.repo.throttle.consume(READS_PER_CLIENT, hashed_key(client_ip), self.now)
        lookup = self.repo.test_read_tokens.get(test_token_hash(token))
        if lookup is None:
            raise _unknown_link()
        release = self._release(lookup["test_release_id"], lookup["user_id"])
        return self._content(release, lookup["message_id"], lookup["recipient_id"])

    def content(self, test_release_id: str, message_id: str,
                recipient_id: str) -> TestReleaseContent:
        """An inline test mail's text (delivery's question, when it builds the mail)."""
        release = self._release_or_none(test_release_id)
        if release is None:
            raise NotFound(f"no test release {test_release_id}", code="test_release_not_found")
        return self._content(release, message_id, recipient_id)

    def _release_or_none(self, test_release_id: str) -> TestRelease | None:
        doc = self.repo.test_releases.get(test_release_id)
        return None if doc is None else TestRelease.from_doc(doc)

    def _release(self, test_release_id: str, user_id: str) -> TestRelease:
        release = self._release_or_none(test_release_id)
        if release is None or release.user_id != user_id:
            raise _unknown_link()
        return release

    def _content(self, release: TestRelease, message_id: str,
                 recipient_id: str) -> TestReleaseContent:
        if release.expires_at <= self.now:
            raise _unknown_link()
        message = self.repo.message_of(release.user_id, message_id)
        # Once the switch fired for real, only the recipients' own links open the message.
        if (message is None or message.switch_id != release.switch_id
                or message.state != SEALED or message.recipient(recipient_id) is None):
            raise _unknown_link()
        stored = message.recipient(recipient_id)
        assert stored is not None, "checked just above"
        sealer = Sealer.of(self.keys.get(message.user_id), message)
        return TestReleaseContent(
            message_id=message.id,
            recipient_id=recipient_id,
            recipient_name=sealer.open_recipient(stored).name,
            sender_name=sealer.open_sender(message),
            subject=sealer.open("subject", message.subject),
            body=sealer.open("body", message.body),
            inline=message.inline,
            released_at=release.created_at,
            written_at=message.updated_at,
            expires_at=release.expires_at,
        )



def test_releases_of(repo: VaultRepository, user_id: str) -> list[TestRelease]:
    """The owner's test releases, oldest first (their export)."""
    return [TestRelease.from_doc(doc) for doc in repo.test_releases.find(
        {"user_id": user_id}, sort=[("created_at", 1)], limit=MESSAGES_LIMIT)]


def _unknown_link() -> NotFound:
    return NotFound("this test link does not open any message (test links last 24 hours)",
                    code="unknown_test_link")


class DeliveryTestMail:
    """Asks delivery to accept each test mail, through a bounded RPC client."""

    def __init__(self, client: BoundedClient) -> None:
        self.client = client

    def send(self, kind: str, reference: str, to: str, context: dict[str, str],
             to_name: str | None, user_id: str) -> None:
        try:
            self.client.call("send", kind, reference, to, context, to_name, user_id)
        except (RpcTimeout, ServiceUnavailable) as exc:
            log.warning("delivery cannot take a test mail now: %s", exc)
            raise _delivery_unavailable() from None
        except RemoteError as exc:
            log.error("delivery refused a test mail: %s", exc.exc_type)
            raise _delivery_unavailable() from None


def _delivery_unavailable() -> Unavailable:
    return Unavailable("mail cannot be sent right now, so the test release is incomplete; "
                       "try again later", code="delivery_unavailable")
