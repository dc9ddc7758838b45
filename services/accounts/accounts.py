"""The accounts domain: sign-up with the age gate, log-in, sessions, log-out.

Plain code over a repository, a password hasher and a clock; the nameko service only
wires these together, and unit tests drive this module directly.

Nothing here reveals whether an address is registered: a sign-up with a taken address
answers exactly like a new one (it stores no account, and mails the address's owner
instead), and a log-in with an unknown address fails like a wrong password, after the
same argon2id work.

A new account is stored together with its `UserRegistered` event and the request for its
verification mail (`MailRequested`), in one write: the answer never waits for SMTP.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from datetime import date, datetime, timedelta
from typing import Any

from services.accounts.emails import normalize_email
from services.accounts.links import EmailLinks
from services.accounts.passwords import PasswordHasher, check_password_policy
from services.accounts.schemas import (
    MINIMUM_AGE,
    Account,
    ClientContext,
    LogIn,
    LogInAnswer,
    OpenSession,
    PasswordChange,
    Profile,
    ProfileChanges,
    RecoveryCodes,
    ResolvedSession,
    SecondStep,
    Session,
    SessionList,
    SessionsEnded,
    SignUp,
    TotpConfirm,
    TotpDisable,
    TotpSetup,
    TotpStatus,
)
from services.accounts.sessions import account_changed, session_id
from services.accounts.storage import AccountsRepository, EmailTaken
from services.accounts.tokens import LinkSettings
from services.accounts.totp import TotpKeys, TwoFactor, is_on
from shared.client import truncate_ip
from shared.errors import AuthenticationFailed, Forbidden, InvalidInput
from shared.events import new_event
from shared.throttle import Limit, hashed_key
from shared.visitors import is_visitor_token, visitor_consent_id

MAXIMUM_AGE = 130
TOKEN_BYTES = 32

# Log-in limits. Failures count per account (whether or not it exists, so the limit
# reveals nothing); every attempt counts per client.
LOGIN_FAILURES_PER_ACCOUNT = Limit("login-account", count=10, window_seconds=15 * 60)
LOGIN_ATTEMPTS_PER_CLIENT = Limit("login-client", count=30, window_seconds=15 * 60)
SIGNUPS_PER_CLIENT = Limit("signup-client", count=20, window_seconds=60 * 60)

BAD_CREDENTIALS = "the email address or password is incorrect"
WRONG_PASSWORD = "your current password is not the one you typed"  # noqa: S105 (a message)


def age_on(birth: date, today: date) -> int:
    """Whole years between `birth` and `today`."""
    before_birthday = (today.month, today.day) < (birth.month, birth.day)
    return today.year - birth.year - before_birthday


def token_hash(token: str) -> str:
    """Sessions are stored under a hash of their token, never the token itself."""
    return session_id(token)


class Accounts:
    """Use cases of the accounts service."""

    def __init__(
        self,
        repo: AccountsRepository,
        hasher: PasswordHasher,
        now: datetime,
        *,
        policy_version: str,
        session_ttl: int,
        links: LinkSettings,
        totp_keys: TotpKeys | None = None,
        request_id: str | None = None,
    ) -> None:
        self.repo = repo
        self.hasher = hasher
        self.now = now
        self.policy_version = policy_version
        self.session_ttl = timedelta(seconds=session_ttl)
        self.request_id = request_id
        self.links = EmailLinks(repo, links, now, hasher=hasher, request_id=request_id)
        self.totp_keys = totp_keys

    # Sign-up ------------------------------------------------------------------------

    def sign_up(self, request: SignUp, client: ClientContext) -> Account:
        """Create an account, or answer as if we had when the address is taken."""
        # The age gate comes first: an applicant under 16 leaves no trace, not even a counter.
        self._check_age(request.date_of_birth)
        if client.ip:
            self.repo.throttle.consume(SIGNUPS_PER_CLIENT, hashed_key(client.ip), self.now)
        self._check_policy_version(request.accept_policy_version)
        email, email_key = normalize_email(request.email)
        check_password_policy(request.password, email)
        user = self._new_user(email, email_key, self.hasher.hash(request.password))
        token, verification_mail = self.links.verification_mail(user)
        self.repo.add_token(token)
        try:
            self.repo.add_user(user, [self._registered_event(user, client), verification_mail],
                               self.now)
        except EmailTaken:
            self.repo.delete_token(token["_id"])
            self.links.tell_owner_about_sign_up(email_key)
            # Same answer as a fresh sign-up, with an id that belongs to nobody.
            return Account(id=str(uuid.uuid4()), email=email, email_verified=False)
        return Account(id=user["_id"], email=email, email_verified=False)

    def _check_age(self, birth: date) -> None:
        age = age_on(birth, self.now.date())
        if birth > self.now.date() or age > MAXIMUM_AGE:
            raise InvalidInput(
                "date_of_birth is not a plausible date of birth",
                code="invalid_date_of_birth",
                details={"field": "date_of_birth"},
            )
        if age < MINIMUM_AGE:
            # Nothing about the applicant is stored or logged past this point.
            raise InvalidInput(
                f"you must be at least {MINIMUM_AGE} years old to use Just in Case",
                code="age_requirement",
                details={"field": "date_of_birth"},
            )

    def _check_policy_version(self, version: str) -> None:
        if not hmac.compare_digest(version.encode(), self.policy_version.encode()):
            raise InvalidInput(
                f"accept_policy_version must be the current policy, {self.policy_version}",
                code="policy_version_mismatch",
                details={"field": "accept_policy_version", "current": self.policy_version},
            )

    def _new_user(self, email: str, email_key: str, password_hash: str) -> dict[str, Any]:
        # The date of birth is not kept: the age check is all it was asked for.
        return {
            "_id": str(uuid.uuid4()),
            "email": email,
            "email_key": email_key,
            "password_hash": password_hash,
            "email_verified": False,
            "status": "active",
            "policy_version": self.policy_version,
            "policy_accepted_at": self.now,
            "age_confirmed_at": self.now,
            "created_at": self.now,
            "password_changed_at": self.now,
        }

    def _registered_event(self, user: dict[str, Any], client: ClientContext) -> dict:
        return new_event(
            "UserRegistered",
            {
                "user_id": user["_id"],
                "email": user["email"],
                "policy_version": user["policy_version"],
                "client": {
                    "ip_truncated": truncate_ip(client.ip),
                    "user_agent": client.user_agent,
                },
                "visitor_consent_id": (visitor_consent_id(client.visitor)
                                       if is_visitor_token(client.visitor) else None),
            },
            producer="accounts",
            now=self.now,
            request_id=self.request_id,
        )

    # Log-in and sessions --------------------------------------------------------------

    def log_in(self, request: LogIn, client: ClientContext) -> LogInAnswer:
        """Open a session for the right email and password; refuse anything else alike.

        An account with two-factor sign-in gets the challenge of a second step instead.
        """
        account_key = self._account_key(request.email)
        if client.ip:
            self.repo.throttle.consume(LOGIN_ATTEMPTS_PER_CLIENT, hashed_key(client.ip), self.now)
        self.repo.throttle.check(LOGIN_FAILURES_PER_ACCOUNT, account_key, self.now)
        user = self._user_for_login(request.email)
        password_hash = user["password_hash"] if user else self.hasher.decoy_hash
        if not self.hasher.verify(password_hash, request.password) or user is None:
            self.repo.throttle.hit(LOGIN_FAILURES_PER_ACCOUNT, account_key, self.now)
            raise AuthenticationFailed(BAD_CREDENTIALS, code="invalid_credentials")
        if is_on(user):
            return self._two_factor().challenge(user, client)
        session = self._open_session(user, client)
        return LogInAnswer(token=session.token, expires_at=session.expires_at)

    def log_in_second_step(self, request: SecondStep, client: ClientContext) -> Session:
        """The session of a log-in whose challenge is answered with a good code."""
        return self._open_session(self._two_factor().pass_second_step(request), client)

    def _account_key(self, raw_email: str) -> str:
        return hashed_key(raw_email.strip().casefold())

    def _user_for_login(self, raw_email: str) -> dict[str, Any] | None:
        try:
            _, email_key = normalize_email(raw_email)
        except InvalidInput:
            return None
        user = self.repo.user_by_email_key(email_key)
        if user is None or user.get("status") != "active":
            return None
        return user

    def _open_session(self, user: dict[str, Any], client: ClientContext) -> Session:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        expires_at = self.now + self.session_ttl
        self.repo.add_session(
            {
                "_id": token_hash(token),
                "user_id": user["_id"],
                "created_at": self.now,
                "expires_at": expires_at,
                "ip_truncated": truncate_ip(client.ip),
                "user_agent": client.user_agent,
            }
        )
        return Session(token=token, expires_at=expires_at)

    def authenticate(self, token: str) -> Profile:
        """The profile behind a bearer token, or AuthenticationFailed."""
        return _profile(self._signed_in(token)[1])

    def resolve_session(self, token: str) -> ResolvedSession:
        """The profile behind a bearer token with the session's expiry, for a gateway that
        caches it (never past that expiry), or AuthenticationFailed."""
        session, user = self._signed_in(token)
        return ResolvedSession(profile=_profile(user), expires_at=session["expires_at"])

    def _signed_in(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(session, user) of a live session token, or AuthenticationFailed."""
        session = self.repo.session(token_hash(token)) if token else None
        if session is None or session["expires_at"] <= self.now:
            raise _invalid_token()
        user = self.repo.user(session["user_id"])
        if user is None or user.get("status") != "active":
            raise _invalid_token()
        if session["created_at"] < user.get("password_changed_at", session["created_at"]):
            # Sessions opened before a password change end with it.
            raise _invalid_token()
        return session, user

    def log_out(self, token: str) -> None:
        """End the session of `token` (idempotent); every gateway forgets it."""
        ended = token_hash(token)
        session = self.repo.session(ended)
        if session is None:
            return
        self.repo.delete_session(ended)
        self.repo.announce(session["user_id"],
                           self._changed(session["user_id"], "log_out", sessions=[ended]),
                           self.now)

    def _changed(self, user_id: str, reason: str, sessions: list[str] | None = None) -> dict:
        return account_changed(user_id, reason, now=self.now, sessions=sessions,
                               request_id=self.request_id)

    # The signed-in owner's own account ------------------------------------------------

    def list_sessions(self, token: str) -> SessionList:
        """Every live session of the owner of `token`, oldest first, this one marked."""
        current, user = self._signed_in(token)
        changed_at = user.get("password_changed_at")
        live = [
            session for session in self.repo.sessions_of(user["_id"])
            if session["expires_at"] > self.now
            and (changed_at is None or session["created_at"] >= changed_at)
        ]
        return SessionList(sessions=[
            OpenSession(created_at=session["created_at"], expires_at=session["expires_at"],
                        user_agent=session.get("user_agent"),
                        ip_truncated=session.get("ip_truncated"),
                        current=session["_id"] == current["_id"])
            for session in live
        ])

    def end_sessions(self, user_id: str) -> SessionsEnded:
        """Sign out everywhere: every session of the user ends, this one included."""
        return SessionsEnded(ended=self.repo.end_sessions(
            user_id, self._changed(user_id, "sessions_ended"), self.now))

    def change_password(self, token: str, request: PasswordChange,
                        client: ClientContext) -> Session:
        """Replace the password after checking the current one; every session ends and a
        fresh one is opened for the device that asked (its new token is the answer)."""
        _, user = self._signed_in(token)
        account_key = hashed_key(user["email_key"])
        # Wrong guesses count against the log-in limit: this form is no way around it.
        self.repo.throttle.check(LOGIN_FAILURES_PER_ACCOUNT, account_key, self.now)
        if not self.hasher.verify(user["password_hash"], request.current_password):
            self.repo.throttle.hit(LOGIN_FAILURES_PER_ACCOUNT, account_key, self.now)
            raise Forbidden(WRONG_PASSWORD, code="wrong_password",
                            details={"field": "current_password"})
        check_password_policy(request.new_password, user["email"], field="new_password")
        self.repo.set_password(user["_id"], self.hasher.hash(request.new_password),
                               self._changed(user["_id"], "password_changed"), self.now)
        self.repo.delete_sessions(user["_id"])
        return self._open_session(user, client)

    def update_profile(self, user_id: str, changes: ProfileChanges) -> Profile:
        """Store the owner's choices (their time zone)."""
        user = self.repo.set_profile(user_id, changes.model_dump(),
                                     self._changed(user_id, "profile_changed"), self.now)
        if user is None:
            raise _invalid_token()
        return _profile(user)


    # Two-factor sign-in (totp.py) -----------------------------------------------------

    def _two_factor(self) -> TwoFactor:
        if self.totp_keys is None:
            raise RuntimeError("two-factor sign-in needs its keys (TotpKeys.from_settings)")
        return TwoFactor(self.repo, self.totp_keys, self.now)

    def _active_user(self, user_id: str) -> dict[str, Any]:
        user = self.repo.user(user_id)
        if user is None or user.get("status") != "active":
            raise _invalid_token()
        return user

    def totp_status(self, user_id: str) -> TotpStatus:
        """Whether two-factor sign-in is on, since when, and the recovery codes left."""
        return self._two_factor().status(self._active_user(user_id))

    def start_totp(self, user_id: str) -> TotpSetup:
        """A new secret to set two-factor sign-in up with (not on until confirmed)."""
        return self._two_factor().start(self._active_user(user_id))

    def totp_set_up(self, user_id: str) -> TotpSetup | None:
        """The set-up under way, not yet confirmed, or None."""
        return self._two_factor().set_up_under_way(self._active_user(user_id))

    def confirm_totp(self, user_id: str, request: TotpConfirm) -> RecoveryCodes:
        """Turn two-factor sign-in on with a first code; the recovery codes, shown once."""
        return self._two_factor().confirm(self._active_user(user_id), request)

    def disable_totp(self, user_id: str, request: TotpDisable) -> TotpStatus:
        """Turn two-factor sign-in off, given the password and a code."""
        user = self._active_user(user_id)
        if not is_on(user):
            return TotpStatus(enabled=False)
        self._check_password(user, request.password, "password")
        return self._two_factor().disable(user, request)

    def _check_password(self, user: dict[str, Any], password: str, field: str) -> None:
        """Forbidden unless `password` is the user's; wrong guesses count against the
        log-in limit, so a form asking for it again is no way around that limit."""
        account_key = hashed_key(user["email_key"])
        self.repo.throttle.check(LOGIN_FAILURES_PER_ACCOUNT, account_key, self.now)
        if not self.hasher.verify(user["password_hash"], password):
            self.repo.throttle.hit(LOGIN_FAILURES_PER_ACCOUNT, account_key, self.now)
            raise Forbidden(WRONG_PASSWORD, code="wrong_password", details={"field": field})


def _invalid_token() -> AuthenticationFailed:
    return AuthenticationFailed("the session token is invalid or has expired",
                                code="invalid_token")


def _profile(user: dict[str, Any]) -> Profile:
    return Profile(
        id=user["_id"],
        email=user["email"],
        email_verified=user["email_verified"],
        created_at=user["created_at"],
        policy_version=user["policy_version"],
        time_zone=user.get("time_zone"),
    )
