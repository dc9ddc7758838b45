"""Two-factor sign-in with time-based one-time codes (RFC 6238, through `pyotp`).

Set-up: `start` makes a fresh 160-bit secret and answers it three ways (base32 text, an
`otpauth://` URI, that URI as a QR code drawn in SVG on the server); nothing is on until
`confirm` receives a first valid code. Then ten recovery codes are shown, once.

At rest the secret is sealed (XChaCha20-Poly1305, as the vault seals messages) under a key
derived from JICM_SECRET_KEY for this purpose only, bound to the user's id: a copy of the
database shows no secret, and a sealed secret copied onto another account does not open.
Recovery codes and log-in challenges are stored only as HMAC-SHA256 under another derived
key, like the links accounts mails (tokens.py).

Log-in: once the password is right, an account with two-factor sign-in gets a challenge
(single-use, five minutes) instead of a session; `pass_second_step` takes the challenge and
a code or a recovery code. A code's time step is used once (a compare-and-set on
`totp_last_step`: no replay within its window, nor of an older one); a recovery code is
marked used by a compare-and-set too. Wrong answers are limited per challenge and per
account, and every refusal reads alike, whatever was wrong.

A password reset by mail changes the password only: two-factor sign-in stays on. Turning
it off needs the password and a code (or a recovery code).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import nacl.exceptions
import nacl.secret
import pyotp
import segno

from services.accounts.schemas import (
    ClientContext,
    LogInAnswer,
    RecoveryCodes,
    SecondStep,
    TotpConfirm,
    TotpDisable,
    TotpSetup,
    TotpStatus,
)
from services.accounts.storage import AccountsRepository
from shared.client import truncate_ip
from shared.config import Settings
from shared.errors import AuthenticationFailed, Conflict, ServiceError
from shared.throttle import Limit

ISSUER = "Just in Case"
SEAL_PURPOSE = "accounts/totp-secrets"
HASH_PURPOSE = "accounts/totp-hashes"
SEAL_AD = "jicm/totp/v1|user={user}"
CHALLENGE_BYTES = 32
CHALLENGE_TTL = timedelta(minutes=5)
RECOVERY_CODE_COUNT = 10
# No 0/o, 1/l/i: a recovery code is read off paper. 12 of 31 characters: about 59 bits.
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
RECOVERY_GROUPS, RECOVERY_GROUP_LENGTH = 3, 4
# A code is accepted one 30-second step either side of now: clocks drift, people type slowly.
DRIFT_STEPS = 1

# Wrong answers to the second step: a challenge dies after a few, and an account takes
# only a few more a quarter of an hour, whichever challenge they come with.
WRONG_CODES_PER_CHALLENGE = Limit("totp-challenge", count=5, window_seconds=5 * 60)
WRONG_CODES_PER_ACCOUNT = Limit("totp-account", count=6, window_seconds=15 * 60)

WRONG_CODE = "the code is not right, or was already used"
CHALLENGE_ENDED = "this sign-in has expired; please log in again with your password"


@dataclass(frozen=True)
class TotpKeys:
    """The two keys two-factor sign-in needs, both derived from JICM_SECRET_KEY."""

    seal: bytes
    hash: bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> TotpKeys:
        return cls(seal=settings.derived_key(SEAL_PURPOSE), hash=settings.derived_key(HASH_PURPOSE))

    def seal_secret(self, user_id: str, secret: str) -> bytes:
        """The base32 secret sealed for this user only."""
        return bytes(nacl.secret.Aead(self.seal).encrypt(secret.encode(), _ad(user_id)))

    def open_secret(self, user_id: str, sealed: bytes) -> str:
        try:
            return nacl.secret.Aead(self.seal).decrypt(bytes(sealed), _ad(user_id)).decode()
        except (nacl.exceptions.CryptoError, ValueError) as exc:
            raise SealBroken(f"the two-factor secret of {user_id} does not open") from exc

    def digest(self, *parts: str) -> str:
        """Where a recovery code or a challenge is stored: an HMAC, never the value."""
        return hmac.new(self.hash, "|".join(parts).encode(), hashlib.sha256).hexdigest()


class SealBroken(Exception):
    """A sealed secret did not open: another key, or bytes that are not ours."""


def _ad(user_id: str) -> bytes:
    return SEAL_AD.format(user=user_id).encode()


def is_on(user: dict[str, Any]) -> bool:
    """Whether log-ins to this account need a second step."""
    return user.get("totp_secret") is not None


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step (within the drift allowed) whose code is `code`, or None."""
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_recovery_code() -> str:
    """`abcd-efgh-jkmn`: random, from an alphabet without look-alikes."""
    groups = ("".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_GROUP_LENGTH))
              for _ in range(RECOVERY_GROUPS))
    return "-".join(groups)


def normalized_recovery_code(typed: str) -> str:
    """A recovery code as typed (capitals, spaces, no dashes) in its stored form."""
    bare = "".join(typed.split()).replace("-", "").lower()
    size = RECOVERY_GROUP_LENGTH
    return "-".join(bare[at:at + size] for at in range(0, len(bare), size))


def qr_svg(uri: str) -> str:
    """The URI as a QR code: a standalone SVG document (with its namespace, so that it also
    shows as an image), dark on white whatever the page's colours."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=4, dark="#000", light="#fff",
                                    xmldecl=False, svgns=True, nl=False,
                                    title="QR code for your authenticator app")
    return out.getvalue().decode()


class TwoFactor:
    """Use cases of two-factor sign-in, for one moment (`now`)."""

    def __init__(self, repo: AccountsRepository, keys: TotpKeys, now: datetime) -> None:
        self.repo = repo
        self.keys = keys
        self.now = now

    # Set-up -------------------------------------------------------------------------------

    def status(self, user: dict[str, Any]) -> TotpStatus:
        if not is_on(user):
            return TotpStatus(enabled=False)
        return TotpStatus(enabled=True, enabled_at=user["totp_enabled_at"],
                          recovery_codes_left=self.repo.recovery_codes_left(user["_id"]))

    def start(self, user: dict[str, Any]) -> TotpSetup:
        """A fresh secret for the owner's authenticator app; nothing changes until confirmed."""
        if is_on(user):
            raise Conflict("two-factor sign-in is already on; turn it off first to set it "
                           "up again", code="totp_already_on")
        secret = pyotp.random_base32()
        self.repo.start_totp(user["_id"], str(uuid.uuid4()),
                             self.keys.seal_secret(user["_id"], secret), self.now)
        return _set_up(secret, user["email"])

    def set_up_under_way(self, user: dict[str, Any]) -> TotpSetup | None:
        """The set-up started and not yet confirmed (the site shows it again after a wrong
        first code), or None."""
        if is_on(user) or user.get("totp_pending_secret") is None:
            return None
        return _set_up(self.keys.open_secret(user["_id"], user["totp_pending_secret"]),
                       user["email"])

    def confirm(self, user: dict[str, Any], request: TotpConfirm) -> RecoveryCodes:
        """Turn two-factor sign-in on with a first valid code; the recovery codes, once."""
        if is_on(user):
            raise Conflict("two-factor sign-in is already on", code="totp_already_on")
        if user.get("totp_pending_secret") is None:
            raise Conflict("start the set-up first (POST /api/v1/me/totp)",
                           code="totp_not_started")
        secret = self.keys.open_secret(user["_id"], user["totp_pending_secret"])
        step = matching_step(secret, request.code, self.now)
        if step is None:
            raise _wrong_code()
        codes = [new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
        code_ids = [self._recovery_id(user["_id"], code) for code in codes]
        if not self.repo.enable_totp(user, step, code_ids, self.now):
            # Another start or confirmation got there first: this secret is no longer pending.
            raise Conflict("the set-up changed meanwhile; please start it again",
                           code="totp_not_started")
        return RecoveryCodes(enabled_at=self.now, recovery_codes=codes)

    def disable(self, user: dict[str, Any], request: TotpDisable) -> TotpStatus:
        """Turn two-factor sign-in off, given a proof of the second factor (the caller has
        checked the password)."""
        self.repo.throttle.check(WRONG_CODES_PER_ACCOUNT, user["_id"], self.now)
        if not self._proved(user, request.code, request.recovery_code):
            self.repo.throttle.hit(WRONG_CODES_PER_ACCOUNT, user["_id"], self.now)
            raise _wrong_code("recovery_code" if request.code is None else "code")
        self.repo.disable_totp(user["_id"])
        return TotpStatus(enabled=False)

    # Log-in -------------------------------------------------------------------------------

    def challenge(self, user: dict[str, Any], client: ClientContext) -> LogInAnswer:
        """The password was right: the challenge its second step answers."""
        challenge = secrets.token_urlsafe(CHALLENGE_BYTES)
        expires_at = self.now + CHALLENGE_TTL
        self.repo.add_second_step({
            "_id": self.keys.digest("challenge", challenge),
            "user_id": user["_id"],
            "created_at": self.now,
            "expires_at": expires_at,
            "used_at": None,
            "ip_truncated": truncate_ip(client.ip),
        })
        return LogInAnswer(expires_at=expires_at, second_step="totp", challenge=challenge)

    def pass_second_step(self, request: SecondStep) -> dict[str, Any]:
        """The user whose challenge this is, once it is answered with a good code (or a
        recovery code); AuthenticationFailed otherwise."""
        challenge_id = self.keys.digest("challenge", request.challenge)
        pending = self.repo.second_step(challenge_id)
        if pending is None or pending["used_at"] is not None or pending["expires_at"] <= self.now:
            raise _challenge_ended()
        user = self.repo.user(pending["user_id"])
        if user is None or user.get("status") != "active" or not is_on(user):
            raise _challenge_ended()
        self.repo.throttle.check(WRONG_CODES_PER_CHALLENGE, challenge_id, self.now)
        self.repo.throttle.check(WRONG_CODES_PER_ACCOUNT, user["_id"], self.now)
        if not self._proved(user, request.code, request.recovery_code):
            self.repo.throttle.hit(WRONG_CODES_PER_CHALLENGE, challenge_id, self.now)
            self.repo.throttle.hit(WRONG_CODES_PER_ACCOUNT, user["_id"], self.now)
            raise AuthenticationFailed(WRONG_CODE, code="wrong_code",
                                       details={"field": _field(request)})
        if not self.repo.use_second_step(challenge_id, self.now):
            raise _challenge_ended()
        return user

    # Proofs -------------------------------------------------------------------------------

    def _proved(self, user: dict[str, Any], code: str | None, recovery_code: str | None) -> bool:
        if code is not None:
            return self._code_works(user, code)
        return recovery_code is not None and self.repo.use_recovery_code(
            self._recovery_id(user["_id"], normalized_recovery_code(recovery_code)),
            user["_id"], self.now)

    def _code_works(self, user: dict[str, Any], code: str) -> bool:
        secret = self.keys.open_secret(user["_id"], user["totp_secret"])
        step = matching_step(secret, code, self.now)
        return step is not None and self.repo.use_totp_step(user["_id"], step)

    def _recovery_id(self, user_id: str, code: str) -> str:
        return self.keys.digest("recovery", user_id, code)


def _set_up(secret: str, email: str) -> TotpSetup:
    uri = pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)
    return TotpSetup(secret=secret, otpauth_uri=uri, qr_svg=qr_svg(uri))


def _field(request: SecondStep) -> str:
    return "code" if request.code is not None else "recovery_code"


def _wrong_code(field: str = "code") -> ServiceError:
    return ServiceError(WRONG_CODE, code="wrong_code", details={"field": field})


def _challenge_ended() -> AuthenticationFailed:
    return AuthenticationFailed(CHALLENGE_ENDED, code="challenge_invalid")
