"""The author's side of the vault: write, list, read, change and delete messages.

Plain code over the repository, the data keys, the scheduler's switch directory and a
moment in time; the nameko service only wires these together. Another user's message is
answered exactly like a message that does not exist (404). A released message can no
longer be changed or deleted (409): it is on its way to its recipients.

Once a switch has fired, every message on it is frozen (409, `switch_fired`): it may not
be changed, deleted, or moved off it, even before the vault has heard of the firing
(which can take as long as the vault or the broker is down). So every change asks first,
of the vault's own release records and then of the scheduler, whether the message's
switch is still live.

A write can still race the firing itself (the scheduler said the switch was live, then
it fired). The release records the fired switch before it looks for messages, and a
write looks for that record after it lands, so one of the two always sees the other: a
new message is then taken back (409, `switch_fired`), and a message moved into the
switch is released with it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.vault.keys import DataKeys, MissingDataKey
from services.vault.limits import Size, body_bytes, check_new_message, check_size
from services.vault.records import StoredMessage
from services.vault.release import Release
from services.vault.scheduler_client import (
    FIRED_STATES,
    SwitchDirectory,
    refusal,
    resolve_switch,
    switch_fired,
)
from services.vault.schemas import (
    Message,
    MessageChanges,
    MessageCreated,
    MessageList,
    MessageSummary,
    NewMessage,
    Recipient,
    normalized_email,
)
from services.vault.sealed_fields import Content, Sealer, new_recipients
from services.vault.storage import SEALED, VaultRepository
from shared.errors import Conflict, InvalidInput, NotFound
from shared.plans import PlanLimits

# The limits in force for a user (`shared.entitlements.limits_for`, wired by the service).
LimitsOf = Callable[[str], PlanLimits]

# An edit that loses a race with another edit is re-read and retried this many times.
EDIT_ATTEMPTS = 3


def _not_found(message_id: str) -> NotFound:
    return NotFound(f"you have no message {message_id}", code="message_not_found")


def _released(message_id: str, action: str) -> Conflict:
    return Conflict(f"message {message_id} was released and can no longer be {action}",
                    code="message_released")


def size_of(content: Content) -> Size:
    return Size(recipients=len(content.recipients), body_bytes=body_bytes(content.body))


class Messages:
    """Use cases of a message's author."""

    def __init__(
        self,
        repo: VaultRepository,
        keys: DataKeys,
        switches: SwitchDirectory,
        limits_of: LimitsOf,
        now: datetime,
    ) -> None:
        self.repo = repo
        self.keys = keys
        self.switches = switches
        self.limits_of = limits_of
        self.now = now

    # Writing ------------------------------------------------------------------------

    def create(self, user_id: str, sender_email: str, draft: NewMessage) -> MessageCreated:
        """Seal and store a new message in one of the author's switches."""
        switch_id = resolve_switch(self.switches, user_id, draft.switch_id)
        content = Content(
            subject=draft.subject,
            body=draft.body,
            sender_email=_sender_email(sender_email),
            sender_name=draft.sender_name,
            recipients=new_recipients([(r.name, r.email) for r in draft.recipients]),
        )
        limits = self.limits_of(user_id)
        check_new_message(limits, size_of(content), self.repo.count_in_switch(switch_id))
        key = self.keys.get_or_create(user_id, self.now)
        message_id = str(uuid.uuid4())
        self.repo.add_message({
            "_id": message_id,
            "user_id": user_id,
            "switch_id": switch_id,
            "state": SEALED,
            "rev": 0,
            **Sealer(key, user_id, message_id, 0).seal_content(content),
            "inline": draft.inline,
            "release_delay_seconds": draft.release_delay_seconds,
            "created_at": self.now,
            "updated_at": self.now,
        })
        stored = self.repo.count_in_switch(switch_id)
        if stored > limits.allowed("messages_per_switch"):
            # Two writes raced past the check above: take this one back rather than
            # exceed the plan (both racers may back off; a retry then succeeds).
            self.repo.delete_sealed(user_id, message_id)
            limits.require("messages_per_switch", stored)
        if self.repo.release_of(switch_id) and self.repo.delete_sealed(user_id, message_id):
            # The switch fired while this was being written. (If the message can no
            # longer be deleted, the release took it: it goes out with the others.)
            raise switch_fired(switch_id, "fired")
        return MessageCreated(id=message_id)

    def update(
        self, user_id: str, sender_email: str, message_id: str, changes: MessageChanges
    ) -> Message:
        """Change a sealed message. Every field is sealed again under the next revision."""
        for _ in range(EDIT_ATTEMPTS):
            message = self._sealed_message(user_id, message_id, "changed")
            self._require_live_switch(user_id, message.switch_id)
            key = self.keys.get(user_id)
            before = Sealer.of(key, message).open_content(message)
            after = _changed(before, changes, _sender_email(sender_email))
            switch_id = self._new_switch(user_id, message, changes)
            check_size(self.limits_of(user_id), size_of(after), before=size_of(before))
            rev = message.rev + 1
            updated = self.repo.replace_sealed(message, {
                **Sealer(key, user_id, message_id, rev).seal_content(after),
                "switch_id": switch_id,
                "inline": changes.inline if changes.given("inline") else message.inline,
                "release_delay_seconds": (
                    changes.release_delay_seconds if changes.given("release_delay_seconds")
                    else message.release_delay_seconds
                ),
                "updated_at": self.now,
            })
            if updated is None:
                continue
            if switch_id != message.switch_id and self.repo.release_of(switch_id):
                # Moved into a switch that fired meanwhile: it goes out with the others.
                Release(self.repo, self.keys, self.now).release_late(switch_id)
                updated = self.repo.message(message_id)
            assert updated is not None, "a released message is never deleted"
            return _message(Sealer.of(key, updated), updated)
        raise Conflict("the message changed while it was being edited; try again",
                       code="edit_conflict")

    def _require_live_switch(self, user_id: str, switch_id: str) -> None:
        """Refuse to touch a message whose switch has fired: its release is under way."""
        if self.repo.release_of(switch_id):
            raise switch_fired(switch_id, "fired")
        if self.switches.owns_switch(user_id, switch_id):
            return
        state = self.switches.switch_state(user_id, switch_id)
        if state in FIRED_STATES:
            raise switch_fired(switch_id, state)
        raise refusal(state, switch_id, default=False)

    def _sealed_message(self, user_id: str, message_id: str, action: str) -> dict[str, Any]:
        message = self.repo.message_of(user_id, message_id)
        if message is None:
            raise _not_found(message_id)
        if message.state != SEALED:
            raise _released(message_id, action)
        return message

    def _new_switch(self, user_id: str, message: StoredMessage,
                    changes: MessageChanges) -> str:
        if not changes.given("switch_id") or changes.switch_id == message.switch_id:
            return message.switch_id
        switch_id = resolve_switch(self.switches, user_id, changes.switch_id)
        self.limits_of(user_id).require("messages_per_switch",
                                        self.repo.count_in_switch(switch_id) + 1)
        return switch_id

    def delete(self, user_id: str, message_id: str) -> None:
        """Delete a sealed message of a live switch for good."""
        message = self._sealed_message(user_id, message_id, "deleted")
        self._require_live_switch(user_id, message.switch_id)
        if self.repo.delete_sealed(user_id, message_id):
            return
        if self.repo.message_of(user_id, message_id) is None:
            raise _not_found(message_id)
        raise _released(message_id, "deleted")

    # Reading ------------------------------------------------------------------------

    def list(self, user_id: str) -> MessageList:
        """The author's messages with their subjects (bodies stay sealed)."""
        messages = self.repo.messages_of(user_id)
        if not messages:
            return MessageList(messages=[])
        try:
            key = self.keys.get(user_id)
        except MissingDataKey:
            return MessageList(messages=[])  # the author is being erased
        return MessageList(messages=[_summary(Sealer.of(key, message), message)
                                     for message in messages])

    def get(self, user_id: str, message_id: str) -> Message:
        """One of the author's messages, opened."""
        message = self.repo.message_of(user_id, message_id)
        if message is None:
            raise _not_found(message_id)
        try:
            key = self.keys.get(user_id)
        except MissingDataKey:
            raise _not_found(message_id) from None  # the author is being erased
        return _message(Sealer.of(key, message), message)


def _sender_email(raw: str) -> str:
    try:
        return normalized_email(raw)
    except ValueError as exc:
        raise InvalidInput(f"the sender's address is not valid: {exc}",
                           code="invalid_sender") from None


def _changed(before: Content, changes: MessageChanges, sender_email: str) -> Content:
    recipients = before.recipients
    if changes.given("recipients"):
        entered = [(r.name, r.email) for r in changes.recipients]
        recipients = new_recipients(entered, before.recipients)
    return before.with_changes(
        subject=changes.subject if changes.given("subject") else before.subject,
        body=changes.body if changes.given("body") else before.body,
        sender_name=changes.sender_name if changes.given("sender_name") else before.sender_name,
        sender_email=sender_email,
        recipients=recipients,
    )


def _message(sealer: Sealer, message: StoredMessage) -> Message:
    content = sealer.open_content(message)
    return Message(
        **_plain(message),
        subject=content.subject,
        body=content.body,
        recipients=[Recipient(id=r.id, name=r.name, email=r.email) for r in content.recipients],
        sender_name=content.sender_name,
    )


def _summary(sealer: Sealer, message: StoredMessage) -> MessageSummary:
    return MessageSummary(**_plain(message), subject=sealer.open_subject(message),
                          recipient_count=len(message.recipients))


def _plain(message: StoredMessage) -> dict[str, Any]:
    """What a message shows its author without opening anything."""
    return {name: getattr(message, name) for name in (
        "id", "switch_id", "inline", "release_delay_seconds", "state", "created_at",
        "updated_at", "released_at")}
