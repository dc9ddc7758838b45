"""Links in mail: verifying an email address and resetting a password.

Each mail is requested through the user document's outbox (a `MailRequested` event in
the same write as the change that needs it), so the answer to the user never waits for
SMTP and a crash never loses the mail.

Using a token is the gate: one compare-and-set marks it used, then the effect follows
(the address verified, the password replaced). Should the process die between the two,
the token is spent but its effect missing; the same link then finishes the job instead
of answering "already used", since whoever holds it has proved what it proves.

Answers: a token that is not ours (or malformed) is 400 `token_invalid`; one already used
is 410 `token_used`; one past its expiry is 410 `token_expired`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.accounts.emails import normalize_email
from services.accounts.passwords import PasswordHasher, check_password_policy
from services.accounts.schemas import (
    VERIFICATION_RESENDS,
    Account,
    ClientContext,
    MailQueued,
    PasswordChanged,
    PasswordReset,
    PasswordResetRequest,
    VerifyEmail,
)
from services.accounts.sessions import account_changed
from services.accounts.storage import AccountsRepository
from services.accounts.tokens import (
    RESET,
    VERIFY,
    LinkSettings,
    human_time,
    new_token,
    token_id,
    well_formed,
)
from shared.errors import Conflict, Gone, NotFound, ServiceError
from shared.events import new_event
from shared.throttle import Limit, hashed_key

RESETS_PER_CLIENT = Limit("reset-client", count=10, window_seconds=60 * 60)
RESETS_PER_ADDRESS = Limit("reset-address", count=3, window_seconds=60 * 60)
# Sign-ups with a taken address mail its owner; a few an hour at most, whoever asks.
ACCOUNT_EXISTS_MAILS = Limit("account-exists-mail", count=3, window_seconds=60 * 60)

RESET_ACCEPTED = ("if an account uses this address, a link to choose a new password is on "
                  "its way there")


class EmailLinks:
    """Use cases around the links accounts mails: verification and password reset."""

    def __init__(
        self,
        repo: AccountsRepository,
        links: LinkSettings,
        now: datetime,
        *,
        hasher: PasswordHasher | None = None,
        request_id: str | None = None,
    ) -> None:
        self.repo = repo
        self.links = links
        self.now = now
        self.hasher = hasher
        self.request_id = request_id

    # Issuing links ------------------------------------------------------------------------

    def verification_mail(self, user: dict[str, Any]) -> tuple[dict, dict]:
        """(token document, MailRequested event) of a verification link for `user`."""
        return self._link_mail(VERIFY, "verification", user, "link")

    def tell_owner_about_sign_up(self, email_key: str) -> None:
        """Someone signed up with a taken address: mail its owner (with a reset link)."""
        if self.repo.throttle.hit(ACCOUNT_EXISTS_MAILS, hashed_key(email_key),
                                  self.now) > ACCOUNT_EXISTS_MAILS.count:
            return  # enough mail about this already; the sign-up still answers alike
        owner = self.repo.user_by_email_key(email_key)
        if owner is None or owner.get("status") != "active":
            return
        self._send(*self._link_mail(RESET, "account_exists", owner, "reset_link"))

    def resend_verification(self, user_id: str) -> MailQueued:
        """A fresh verification link for a signed-in user whose address is not verified."""
        user = self.repo.user(user_id)
        if user is None:
            raise NotFound("there is no such account", code="account_not_found")
        if user["email_verified"]:
            raise Conflict("your email address is already verified", code="already_verified")
        self.repo.throttle.consume(VERIFICATION_RESENDS, user_id, self.now)
        self._send(*self.verification_mail(user))
        return MailQueued(message=f"a new verification link is on its way to {user['email']}")

    def request_password_reset(self, request: PasswordResetRequest,
                               client: ClientContext) -> MailQueued:
        """Mail a reset link if the address has an account; answer alike either way."""
        if client.ip:
            self.repo.throttle.consume(RESETS_PER_CLIENT, hashed_key(client.ip), self.now)
        _, email_key = normalize_email(request.email)
        # Counted per address whether it exists or not, so the limit reveals nothing.
        self.repo.throttle.consume(RESETS_PER_ADDRESS, hashed_key(email_key), self.now)
        user = self.repo.user_by_email_key(email_key)
        if user is not None and user.get("status") == "active":
            self._send(*self._link_mail(RESET, "password_reset", user, "link"))
        return MailQueued(message=RESET_ACCEPTED)

    def _link_mail(self, purpose: str, kind: str, user: dict[str, Any],
                   link_name: str) -> tuple[dict, dict]:
        token, document = new_token(self.links, purpose, user, self.now)
        event = new_event(
            "MailRequested",
            {
                "kind": kind,
                "reference": document["reference"],
                "to": user["email"],
                "user_id": user["_id"],
                "context": {
                    link_name: self.links.link(purpose, token),
                    "expires_at": human_time(document["expires_at"]),
                },
            },
            producer="accounts",
            now=self.now,
            request_id=self.request_id,
        )
        return document, event

    def _send(self, token_document: dict, mail_event: dict) -> None:
        # The token first: a crash after it leaves an unused token that expires, never a
        # mail whose link does not work.
        self.repo.add_token(token_document)
        self.repo.announce(token_document["user_id"], mail_event, self.now)

    # Using links -----------------------------------------------------------------------------

    def verify_email(self, request: VerifyEmail) -> Account:
        """Verify the address the token was mailed to; EmailVerified announces it."""
        token = self._use(VERIFY, request.token, unfinished=self._unverified)
        user = self._owner(token)
        if not user["email_verified"]:
            self.repo.mark_verified(user, self._verified_events(user), self.now)
        self.repo.revoke_tokens(user["_id"], VERIFY, self.now)
        return Account(id=user["_id"], email=user["email"], email_verified=True)

    def reset_password(self, request: PasswordReset) -> PasswordChanged:
        """Set a new password with a reset token; every older session ends."""
        assert self.hasher is not None, "resetting a password needs the hasher"
        user = self._owner(self._peek(RESET, request.token))
        # Checked before the token is spent, so a refused password does not burn the link.
        check_password_policy(request.password, user["email"])
        password_hash = self.hasher.hash(request.password)
        token = self._use(RESET, request.token, unfinished=self._password_unchanged)
        self.repo.set_password(user["_id"], password_hash,
                               account_changed(user["_id"], "password_reset", now=self.now,
                                               request_id=self.request_id), self.now)
        self.repo.delete_sessions(user["_id"])
        self.repo.revoke_tokens(user["_id"], RESET, self.now)
        if not user["email_verified"] and user["email_key"] == token["email_key"]:
            # Receiving the reset mail proved the address as well as a verification would.
            self.repo.mark_verified(user, self._verified_events(user), self.now)
        return PasswordChanged()

    def _peek(self, purpose: str, token: str) -> dict[str, Any]:
        """The token's document if it could still be used, without using it."""
        document = self._document(purpose, token)
        if document.get("used_at") is None and document["expires_at"] <= self.now:
            raise _expired()
        return document

    def _use(self, purpose: str, token: str, *, unfinished) -> dict[str, Any]:
        document = self._document(purpose, token)
        used = self.repo.use_token(document["_id"], purpose, self.now)
        if used is not None:
            return used
        document = self._document(purpose, token)
        if document.get("used_at") is None:
            raise _expired()
        if not document.get("revoked") and unfinished(document):
            return document  # spent by a request that died before its effect: finish it
        raise Gone("this link has already been used", code="token_used")

    def _document(self, purpose: str, token: str) -> dict[str, Any]:
        document = self.repo.token(token_id(self.links.key, token)) if well_formed(token) else None
        if document is None or document["purpose"] != purpose:
            raise ServiceError("this link is not valid; check that it was copied whole, "
                               "or ask for a new one", code="token_invalid")
        return document

    def _owner(self, token: dict[str, Any]) -> dict[str, Any]:
        user = self.repo.user(token["user_id"])
        if user is None or user.get("status") != "active" or (
            token["purpose"] == VERIFY and user["email_key"] != token["email_key"]
        ):
            # The account is gone, or its address changed since the link was mailed.
            raise ServiceError("this link is no longer valid", code="token_invalid")
        return user

    def _unverified(self, token: dict[str, Any]) -> bool:
        user = self.repo.user(token["user_id"])
        return bool(user) and not user["email_verified"]

    def _password_unchanged(self, token: dict[str, Any]) -> bool:
        user = self.repo.user(token["user_id"])
        return bool(user) and user["password_changed_at"] < token["used_at"]

    def _verified_events(self, user: dict[str, Any]) -> list[dict]:
        # The gateways may hold the profile with the address unverified: they forget it.
        return [new_event("EmailVerified", {"user_id": user["_id"], "email": user["email"]},
                          producer="accounts", now=self.now, request_id=self.request_id),
                account_changed(user["_id"], "email_verified", now=self.now,
                                request_id=self.request_id)]


def _expired() -> Gone:
    return Gone("this link has expired; ask for a new one", code="token_expired")
