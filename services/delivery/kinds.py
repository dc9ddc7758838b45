"""Every kind of mail Just in Case sends, the values each one needs, and which are marketing.

A kind has one or more variants (a reminder is `upcoming` or `overdue`; a released message
comes as a link or inline), each a pair of templates, `<template>.txt` and `<template>.html`,
and a subject. The requester chooses the variant with a context value (`variant_key`).

Some values are never stored with the mail: a variant's `fetched` values (the text of a
released message sent inline) are asked for at the moment the mail is built, and a
request that tries to hand them over in its context is refused.

Requests are checked here, before anything is stored: an unknown kind, a missing value or
a link that is not an absolute http(s) URL is refused at once with a message naming it,
rather than failing later in the sending loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.errors import InvalidInput

MAX_CONTEXT_KEYS = 32
MAX_KEY_LENGTH = 64
# Room for a long piece of news; the text of an inline release is no context value (it is
# fetched when the mail is sent).
MAX_VALUE_LENGTH = 200_000


@dataclass(frozen=True)
class Variant:
    """One pair of templates of a kind, and what it needs from the context."""

    template: str
    subject: str  # a Jinja template over the same values as the body
    required: tuple[str, ...] = ()
    # Values the templates need that are fetched when the mail is sent, never stored.
    fetched: tuple[str, ...] = ()


@dataclass(frozen=True)
class MailKind:
    """A kind of mail. Marketing mail needs consent; every other kind always goes out."""

    name: str
    variants: Mapping[str, Variant]
    variant_key: str | None = None
    marketing: bool = False
    reason: str = field(default="", compare=False)  # for operators: why this mail exists
    # Mail about an erasure: its record keeps only a hash of the address once it has left.
    forget_recipient: bool = False
    # A switch may not fire while this mail waits to leave (reminders.py): its outcome is
    # announced, and asking for it again sends it again if it failed on our side.
    holds_release: bool = False

    def variant(self, context: Mapping[str, str]) -> Variant:
        """The variant `context` asks for; InvalidInput if it names none."""
        if self.variant_key is None:
            return next(iter(self.variants.values()))
        chosen = context.get(self.variant_key, "")
        if chosen not in self.variants:
            choices = ", ".join(sorted(self.variants))
            raise InvalidInput(
                f"context.{self.variant_key} must be one of {choices} for {self.name} mail",
                code="invalid_mail_context",
                details={"field": f"context.{self.variant_key}"},
            )
        return self.variants[chosen]


def _single(template: str, subject: str, *required: str) -> dict[str, Variant]:
    return {"": Variant(template, subject, required)}


KINDS: dict[str, MailKind] = {
    kind.name: kind
    for kind in (
        MailKind(
            "verification",
            _single("verification", "Confirm your email address for Just in Case",
                    "link", "expires_at"),
            reason="sign-up or a request for a new verification link",
        ),
        MailKind(
            "password_reset",
            _single("password_reset", "Reset your Just in Case password", "link", "expires_at"),
            reason="someone asked to reset the password of this address's account",
        ),
        MailKind(
            "account_exists",
            _single("account_exists", "You already have a Just in Case account",
                    "reset_link", "expires_at"),
            reason="someone tried to sign up with an address that already has an account",
        ),
        MailKind(
            "reminder",
            {
                "upcoming": Variant("reminder_upcoming",
                                    "Please check in with Just in Case by {{ deadline }}",
                                    ("link", "deadline")),
                "overdue": Variant("reminder_overdue",
                                   "You missed your check-in: please check in now",
                                   ("link", "deadline")),
            },
            variant_key="stage",
            reason="a switch's check-in deadline is near or has passed",
            holds_release=True,
        ),
        MailKind(
            "released_message",
            {
                "link": Variant("released_message_link",
                                "A message for you from {{ sender_name }}",
                                ("sender_name", "link")),
                # The text is asked of the vault (`released_content`) when the mail is
                # built: it never rests in delivery's store, nor travels in an event.
                "inline": Variant("released_message_inline",
                                  "A message for you from {{ sender_name }}",
                                  ("sender_name", "message_id", "recipient_id"),
                                  fetched=("message_subject", "message_body")),
            },
            variant_key="variant",
            reason="a sender stopped checking in and their message is being delivered",
        ),
        MailKind(
            "test_release",
            {
                # The real release's templates, marked as a test (test_release_mail.py).
                "link": Variant("test_release_link",
                                "[Test] A message for you from {{ sender_name }}",
                                ("sender_name", "recipient_name", "link", "expires_at")),
                "inline": Variant("test_release_inline",
                                  "[Test] A message for you from {{ sender_name }}",
                                  ("sender_name", "recipient_name", "test_release_id",
                                   "message_id", "recipient_id"),
                                  fetched=("message_subject", "message_body")),
            },
            variant_key="variant",
            reason="the sender asked to see what their recipients would receive; "
                   "it goes to the sender only",
        ),
        MailKind(
            "privacy_export_ready",
            _single("privacy_export_ready", "Your Just in Case data export is ready",
                    "link", "expires_at"),
            reason="the account owner asked for a copy of their data",
        ),
        MailKind(
            "privacy_erasure_received",
            _single("privacy_erasure_received",
                    "We received your request to erase your Just in Case data", "due_at"),
            reason="the account owner asked for their data to be erased",
            forget_recipient=True,
        ),
        MailKind(
            "privacy_erasure_completed",
            _single("privacy_erasure_completed", "Your Just in Case data has been erased"),
            reason="an erasure the owner asked for is complete",
            forget_recipient=True,
        ),
        MailKind(
            "payment_failed",
            # Billing also sends `amount`, `plan`, `invoice_number`, `next_attempt_at` when
            # it knows them; the templates show those that are there.
            _single("payment_failed",
                    "Your Just in Case payment failed (your switch keeps working)",
                    "billing_url"),
            reason="a subscription payment failed",
        ),
        # Trusted contacts (the scheduler's services/scheduler/trusted_contacts.py).
        MailKind(
            "trusted_contact_invitation",
            _single("trusted_contact_invitation",
                    "{{ owner_email }} asks you to be a trusted contact",
                    "owner_email", "link", "expires_at"),
            reason="a sender named this person as a trusted contact of their switch",
        ),
        MailKind(
            "trusted_contact_request",
            _single("trusted_contact_request", "{{ owner_email }} missed a check-in",
                    "owner_email", "link", "grace_ends_at", "hold", "holds_left"),
            reason="a switch this person accepted to watch over is overdue",
        ),
        MailKind(
            "trusted_contact_hold",
            _single("trusted_contact_hold", "A trusted contact held your release",
                    "contact_name", "grace_ends_at", "holds_left"),
            reason="a trusted contact held the release of the owner's overdue switch",
        ),
        MailKind(
            "product_news",
            _single("product_news", "{{ headline }}", "headline", "body"),
            marketing=True,
            reason="news about Just in Case, only for those who asked for it",
        ),
    )
}


def kind_named(name: str) -> MailKind:
    """The kind called `name`; InvalidInput naming the known kinds otherwise."""
    kind = KINDS.get(name)
    if kind is None:
        raise InvalidInput(
            f"kind: {name!r} is not a kind of mail we send ({', '.join(sorted(KINDS))})",
            code="unknown_mail_kind",
            details={"field": "kind"},
        )
    return kind


def check_context(kind: MailKind, context: Mapping[str, str]) -> Variant:
    """Refuse a context the kind's templates cannot render; return the chosen variant."""
    if len(context) > MAX_CONTEXT_KEYS:
        raise _bad("context", f"at most {MAX_CONTEXT_KEYS} values")
    for key, value in context.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
            raise _bad("context", f"keys are strings of 1 to {MAX_KEY_LENGTH} characters")
        if not isinstance(value, str) or len(value) > MAX_VALUE_LENGTH:
            raise _bad(f"context.{key}", f"must be a string of at most {MAX_VALUE_LENGTH} chars")
        if _is_link(key) and not value.startswith(("https://", "http://")):
            # Only our own absolute links go into mail: never javascript: or relative ones.
            raise _bad(f"context.{key}", "must be an absolute http(s) URL")
    variant = kind.variant(context)
    handed_over = [key for key in variant.fetched if key in context]
    if handed_over:
        raise _bad(f"context.{handed_over[0]}",
                   "is fetched when the mail is sent and must never be stored with it")
    missing = [key for key in variant.required if not context.get(key)]
    if missing:
        raise _bad(f"context.{missing[0]}", f"is required for {kind.name} mail")
    return variant


def _is_link(key: str) -> bool:
    return key == "link" or key.endswith(("_link", "_url"))


def _bad(field_name: str, problem: str) -> InvalidInput:
    return InvalidInput(f"{field_name}: {problem}", code="invalid_mail_context",
                        details={"field": field_name})
