"""Requests and answers of the privacy API: the gateway validates HTTP bodies with these
models and builds the OpenAPI document from them; the service validates its RPC
arguments with them again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

CHANNELS = ("email", "postal", "phone", "sms")
COOKIE_CATEGORIES = ("analytics", "marketing")
PASSWORD_MAX = 1024

RequestType = Literal["export", "erasure"]
# In the manner of fides: received, being worked on, done, or failed (and retried).
RequestStatus = Literal["pending", "in_progress", "complete", "error"]
PartStatus = Literal["pending", "done", "waiting", "error"]
Signal = Literal["gpc", "dnt"]
# Where a choice was made: a program through the API, or a person on the web site.
Via = Literal["api", "web"]

# A request is due this long after it was made: stricter than GDPR's month and CCPA's 45 days
# (requests.py sets `due_at`).
DUE_AFTER = timedelta(days=30)


def _not_given(schema: dict) -> None:
    # A field left out keeps its value; there is no default to document.
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)


class Strict(BaseModel):
    """Unknown fields are refused and nothing is coerced: `"true"` is no boolean."""

    model_config = ConfigDict(extra="forbid", strict=True)


# Consent ---------------------------------------------------------------------------------


class MarketingChoices(BaseModel):
    """Marketing by channel. Opt-in: false until you say yes."""

    email: bool = False
    postal: bool = False
    phone: bool = False
    sms: bool = Field(False, description="text messages")


class CookieChoices(BaseModel):
    """Non-essential cookies by category (essential ones need no consent)."""

    analytics: bool = False
    marketing: bool = False


class MarketingUpdate(Strict):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_not_given)

    email: bool = None
    postal: bool = None
    phone: bool = None
    sms: bool = None


class CookieUpdate(Strict):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_not_given)

    analytics: bool = None
    marketing: bool = None


class ConsentUpdate(Strict):
    """The choices to change; those left out keep their value."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_not_given)

    marketing: MarketingUpdate = None
    cookies: CookieUpdate = None

    @model_validator(mode="after")
    def _something(self) -> ConsentUpdate:
        given = [group for group in (self.marketing, self.cookies) if group is not None]
        if not any(group.model_fields_set for group in given):
            raise ValueError("name at least one choice to change (marketing or cookies)")
        return self

    def choices(self) -> dict[str, bool]:
        """The choices given, as `purpose: choice` (`marketing.email: true`...)."""
        found: dict[str, bool] = {}
        for group_name in ("marketing", "cookies"):
            group = getattr(self, group_name)
            if group is not None:
                for name in sorted(group.model_fields_set):
                    found[f"{group_name}.{name}"] = getattr(group, name)
        return found


class ConsentView(BaseModel):
    """Your choices as they stand, and what this request's privacy signals did."""

    marketing: MarketingChoices
    cookies: CookieChoices
    policy_version: str | None = Field(description="the privacy policy version you accepted")
    policy_accepted_at: AwareDatetime | None
    sale_and_sharing: Literal["opted_out"] = Field(
        "opted_out", description="we never sell or share personal data; always opted out")
    signal: Signal | None = Field(
        None, description="a Global Privacy Control (Sec-GPC: 1) or Do Not Track (DNT: 1) "
                          "signal seen on this request: marketing and non-essential cookies "
                          "are kept off while your browser sends it")
    kept_off: list[str] = Field(
        default_factory=list,
        description="choices this request asked to turn on that the signal kept off")
    updated_at: AwareDatetime | None


class ClientContext(BaseModel):
    """What the gateway tells privacy about the HTTP client (never trusted for auth)."""

    model_config = ConfigDict(extra="forbid")

    ip: str | None = None
    user_agent: str | None = Field(None, max_length=512)
    gpc: bool = False
    dnt: bool = False
    via: Via = "api"

    @property
    def signal(self) -> Signal | None:
        if self.gpc:
            return "gpc"
        return "dnt" if self.dnt else None


class ReceiptChange(BaseModel):
    purpose: str = Field(description="`marketing.<channel>`, `cookies.<category>` or `policy`")
    choice: bool | str = Field(description="on or off; for `policy`, the version accepted")


class ConsentReceipt(BaseModel):
    """The proof of one change of your choices, exactly as it was recorded."""

    id: str
    at: AwareDatetime
    method: str = Field(description="signup, web, api, gpc, dnt or unsubscribe_link")
    changes: list[ReceiptChange]
    notice_version: str | None
    notice_sha256: str | None = Field(description="SHA-256 of the notice's text then")
    ip_truncated: str | None = Field(None, description="your network (/24 or /48), "
                                                       "never your address")
    user_agent: str | None = None
    gpc: bool | None = None
    dnt: bool | None = None


class ConsentReceiptList(BaseModel):
    receipts: list[ConsentReceipt] = Field(description="oldest first")


class VisitorCookieChoice(Strict):
    """A visitor's answer to the cookie question: every category, yes or no."""

    analytics: bool
    marketing: bool


class VisitorConsentView(BaseModel):
    """A visitor's cookie choice as recorded, and what this request's signal did."""

    cookies: CookieChoices
    signal: Signal | None = None
    kept_off: list[str] = Field(default_factory=list)
    expires_at: AwareDatetime = Field(description="the choice is asked again after this")


# Data subject requests ---------------------------------------------------------------------


class NewPrivacyRequest(Strict):
    """`export`: a copy of everything we hold about you. `erasure`: erase it all (your
    password again, please)."""

    type: RequestType
    password: str | None = Field(None, min_length=1, max_length=PASSWORD_MAX,
                                 description="required for an erasure, refused otherwise")

    @model_validator(mode="after")
    def _password_for_erasure(self) -> NewPrivacyRequest:
        if self.type == "erasure" and self.password is None:
            raise ValueError("an erasure needs your password (password)")
        if self.type == "export" and self.password is not None:
            raise ValueError("password is only for an erasure")
        return self


class CloseAccount(Strict):
    """Closing the account erases it: your password again, please."""

    password: str = Field(min_length=1, max_length=PASSWORD_MAX)


class PrivacyRequestCreated(BaseModel):
    id: str
    type: RequestType
    status: RequestStatus
    due_at: AwareDatetime = Field(description="we answer by then at the latest (30 days)")
    progress_token: str | None = Field(
        None, description="for an erasure you asked for, once: your account closes at once, "
                          "so this token is what shows the erasure's progress afterwards "
                          "(POST /api/v1/privacy/erasures/{id}/progress). Keep it secret.")


class ErasureProgressQuery(Strict):
    token: str = Field(min_length=20, max_length=128,
                       description="the progress_token the erasure was created with")


class ServicePart(BaseModel):
    """How one service stands with a request."""

    status: PartStatus
    detail: str | None = None
    completed_at: AwareDatetime | None = None


class Download(BaseModel):
    url: str
    expires_at: AwareDatetime


class PrivacyRequestView(BaseModel):
    id: str
    type: RequestType
    status: RequestStatus
    created_at: AwareDatetime
    due_at: AwareDatetime
    overdue: bool
    completed_at: AwareDatetime | None = None
    services: dict[str, ServicePart]
    download: Download | None = Field(
        None, description="a finished export, until it expires")


class PrivacyRequestList(BaseModel):
    requests: list[PrivacyRequestView]


class ExportDocument(BaseModel):
    """Everything Just in Case holds about you, by service (docs/export-format.md)."""

    format: str = Field(examples=["jicm-export/1"])
    request_id: str
    user_id: str
    generated_at: AwareDatetime
    about: str
    services: dict[str, dict[str, Any]]
