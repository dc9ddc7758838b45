"""Requests and answers of the accounts API: the gateway validates HTTP bodies with
these models, the OpenAPI document is generated from them, and the service validates
its RPC arguments with them again."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

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
