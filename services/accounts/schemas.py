"""Requests and answers of the accounts API: the gateway validates HTTP bodies with
these models, the OpenAPI document is generated from them, and the service validates
its RPC arguments with them again."""

from __future__ import annotations

from datetime import date
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from shared.throttle import Limit

EMAIL_MAX_LENGTH = 254
# The age gate (accounts.py applies it) and the password policy's lengths (passwords.py).
MINIMUM_AGE = 16
PASSWORD_LENGTHS = (12, 256)
PASSWORD_RULE = f"{PASSWORD_LENGTHS[0]} to {PASSWORD_LENGTHS[1]} characters"
# How often a new verification link may be asked for (links.py enforces it).
VERIFICATION_RESENDS = Limit("verify-resend", count=3, window_seconds=60 * 60)


class Strict(BaseModel):
    """Unknown fields are refused, so a typo is an error rather than silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class SignUp(Strict):
    email: str = Field(min_length=3, max_length=EMAIL_MAX_LENGTH, examples=["ada@example.org"])
    password: str = Field(min_length=1, max_length=1024, description=PASSWORD_RULE)
    date_of_birth: date = Field(description=f"YYYY-MM-DD; you must be {MINIMUM_AGE} or older")
    accept_policy_version: str = Field(
        min_length=1, max_length=64, description="the privacy policy version you accept"
    )


class Account(BaseModel):
    id: str
    email: str
    email_verified: bool


class LogIn(Strict):
    email: str = Field(min_length=1, max_length=EMAIL_MAX_LENGTH)
    password: str = Field(min_length=1, max_length=1024)


class Session(BaseModel):
    token: str = Field(description="send as `Authorization: Bearer <token>`")
    expires_at: AwareDatetime


class Profile(BaseModel):
    id: str
    email: str
    email_verified: bool
    created_at: AwareDatetime
    policy_version: str
    time_zone: str | None = Field(
        None, description="IANA name of the time zone times are shown in; null: not chosen"
    )


class ResolvedSession(BaseModel):
    """A live session as the gateway caches it: whose it is, and until when it lasts."""

    profile: Profile
    expires_at: AwareDatetime


def iana_time_zone(name: str) -> str:
    """`name` if it is an IANA time zone this system knows (Europe/Paris, UTC...)."""
    if "/" not in name and name != "UTC":
        # Bare abbreviations (CET, EST5EDT...) exist in the database but name no place.
        raise ValueError("must be an IANA time zone name such as Europe/Paris")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone name such as Europe/Paris") from None
    return name


class ProfileChanges(Strict):
    time_zone: str = Field(min_length=1, max_length=64, examples=["Europe/Paris"],
                           description="IANA time zone name")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return iana_time_zone(value)


class PasswordChange(Strict):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024, description=PASSWORD_RULE)


class OpenSession(BaseModel):
    """One signed-in device, as its owner sees it (never its token)."""

    created_at: AwareDatetime
    expires_at: AwareDatetime
    user_agent: str | None
    ip_truncated: str | None
    current: bool = Field(description="the session this request is made with")


class SessionList(BaseModel):
    sessions: list[OpenSession]


class SessionsEnded(BaseModel):
    ended: int = Field(description="how many sessions were signed out")


class ClientContext(BaseModel):
    """What the gateway tells a service about the HTTP client (never trusted for auth)."""

    model_config = ConfigDict(extra="forbid")

    ip: str | None = None
    user_agent: str | None = Field(None, max_length=512)
    # The token of the site's cookie-choice cookie, at sign-up (`shared.visitors`).
    visitor: str | None = Field(None, max_length=128)


class VerifyEmail(Strict):
    token: str = Field(min_length=1, max_length=256, description="the token of the mailed link")


class MailQueued(BaseModel):
    status: str = "accepted"
    message: str


class PasswordResetRequest(Strict):
    email: str = Field(min_length=1, max_length=EMAIL_MAX_LENGTH, examples=["ada@example.org"])


class PasswordReset(Strict):
    token: str = Field(min_length=1, max_length=256, description="the token of the mailed link")
    password: str = Field(min_length=1, max_length=1024, description=PASSWORD_RULE)


class PasswordChanged(BaseModel):
    status: str = "password_changed"
    message: str = "your password was changed; every session opened before is signed out"


# Two-factor sign-in (totp.py) ----------------------------------------------------------

TOTP_CODE_PATTERN = r"^[0-9]{6}$"
# A recovery code as shown (`abcd-efgh-jkmn`), or typed without its dashes or in capitals.
RECOVERY_CODE_PATTERN = r"^[A-Za-z0-9 -]{12,20}$"


class LogInAnswer(BaseModel):
    """A session, or, for an account with two-factor sign-in, the challenge of its second
    step (`second_step` is then `totp` and `token` null)."""

    token: str | None = Field(
        None, description="send as `Authorization: Bearer <token>`; null when a second "
                          "step is needed")
    expires_at: AwareDatetime = Field(description="when the session, or the challenge, ends")
    second_step: Literal["totp"] | None = Field(
        None, description="`totp`: send `challenge` and a code to POST /api/v1/sessions/totp")
    challenge: str | None = Field(None, description="single-use, valid a few minutes")


class SecondStep(Strict):
    """The second step of a log-in: the challenge and either a code or a recovery code."""

    challenge: str = Field(min_length=1, max_length=256)
    code: str | None = Field(None, pattern=TOTP_CODE_PATTERN,
                             description="the 6 digits your authenticator app shows")
    recovery_code: str | None = Field(None, pattern=RECOVERY_CODE_PATTERN,
                                      description="one of your recovery codes (works once)")

    @model_validator(mode="after")
    def _one_proof(self) -> SecondStep:
        if (self.code is None) == (self.recovery_code is None):
            raise ValueError("give either code or recovery_code")
        return self


class TotpStatus(BaseModel):
    enabled: bool
    enabled_at: AwareDatetime | None = None
    recovery_codes_left: int = Field(0, description="unused recovery codes")


class TotpSetup(BaseModel):
    """A set-up under way: nothing is enabled until a first code confirms it."""

    secret: str = Field(description="base32, for typing into an authenticator app")
    otpauth_uri: str = Field(description="the same secret as an `otpauth://totp/` URI")
    qr_svg: str = Field(description="the URI as a QR code, an SVG document")


class TotpConfirm(Strict):
    code: str = Field(pattern=TOTP_CODE_PATTERN,
                      description="the 6 digits your authenticator app shows")


class RecoveryCodes(BaseModel):
    enabled_at: AwareDatetime
    recovery_codes: list[str] = Field(
        description="shown this once: each works once instead of a code")


class TotpDisable(Strict):
    password: str = Field(min_length=1, max_length=1024)
    code: str | None = Field(None, pattern=TOTP_CODE_PATTERN)
    recovery_code: str | None = Field(None, pattern=RECOVERY_CODE_PATTERN)

    @model_validator(mode="after")
    def _one_proof(self) -> TotpDisable:
        if (self.code is None) == (self.recovery_code is None):
            raise ValueError("give either code or recovery_code")
        return self
