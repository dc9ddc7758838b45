"""Requests and answers of the messages API, shared by the gateway (which validates HTTP
bodies with them and documents them in OpenAPI) and the vault (which validates its RPC
arguments with them again).

Limits that depend on the plan (recipients per message, body size, messages per switch)
are checked by the vault, with a 402 naming the limit; the bounds here are the absolute
ones no plan lifts.
"""

from __future__ import annotations

import re
import unicodedata

from email_validator import EmailNotValidError, validate_email
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

SUBJECT_MAX = 200
NAME_MAX = 100
EMAIL_MAX = 254
BODY_MAX_CHARS = 1_000_000
RECIPIENTS_MAX = 100
RELEASE_DELAY_MAX = 365 * 86_400
ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Line breaks, tabs and carriage returns are fine in a body; in a subject or a name they
# could split a mail header, so one-line fields refuse every control character.
_BODY_CONTROLS_ALLOWED = {"\n", "\r", "\t"}


def _refuse_unprintable(value: str, *, multiline: bool) -> str:
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs":
            raise ValueError("contains an unpaired surrogate, which is not text")
        if multiline and char in _BODY_CONTROLS_ALLOWED:
            continue
        if category == "Cc" or char in ("\u2028", "\u2029"):
            raise ValueError(f"contains the control character U+{ord(char):04X}")
    return value


def one_line(value: str) -> str:
    """A name or subject: trimmed, not empty, without control characters."""
    value = _refuse_unprintable(value, multiline=False).strip()
    if not value:
        raise ValueError("must not be blank")
    return value


def normalized_email(value: str) -> str:
    """A syntactically valid address, normalized (no DNS lookup: recipients may be anywhere)."""
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


class Strict(BaseModel):
    """Unknown fields are refused, so a typo is an error rather than silently ignored, and
    values are not coerced: `false` is no number of seconds, `"1"` is no boolean."""

    model_config = ConfigDict(extra="forbid", strict=True)


class RecipientIn(Strict):
    name: str = Field(min_length=1, max_length=NAME_MAX, examples=["Grace Hopper"])
    email: str = Field(min_length=3, max_length=EMAIL_MAX, examples=["grace@example.org"],
                       json_schema_extra={"format": "email"})

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return one_line(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalized_email(value)


def _distinct_recipients(recipients: list[RecipientIn]) -> list[RecipientIn]:
    seen: set[str] = set()
    for recipient in recipients:
        key = recipient.email.casefold()
        if key in seen:
            raise ValueError(f"{recipient.email} is listed twice; name each recipient once")
        seen.add(key)
    return recipients


def _check_switch_id(value: str | None) -> str | None:
    if value is not None and not ID_PATTERN.fullmatch(value):
        raise ValueError("is not a switch id")
    return value


class _MessageFieldRules(Strict):
    """The checks a message's fields pass, whether written anew or changed."""

    @field_validator("subject", "sender_name", check_fields=False)
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        return None if value is None else one_line(value)

    @field_validator("body", check_fields=False)
    @classmethod
    def _body(cls, value: str) -> str:
        return _refuse_unprintable(value, multiline=True)

    @field_validator("recipients", check_fields=False)
    @classmethod
    def _recipients(cls, value: list[RecipientIn]) -> list[RecipientIn]:
        return _distinct_recipients(value)

    @field_validator("switch_id", check_fields=False)
    @classmethod
    def _switch(cls, value: str | None) -> str | None:
        return _check_switch_id(value)


class NewMessage(_MessageFieldRules):
    """A message to write. `switch_id` defaults to your default switch."""

    subject: str = Field(min_length=1, max_length=SUBJECT_MAX)
    body: str = Field(
        min_length=1, max_length=BODY_MAX_CHARS,
        description="plain text; your plan limits its size in UTF-8 bytes",
    )
    recipients: list[RecipientIn] = Field(min_length=1, max_length=RECIPIENTS_MAX)
    switch_id: str | None = Field(None, description="default: your default switch")
    inline: bool = Field(
        False, description="true: the mail carries the text itself; false: a link to read it"
    )
    release_delay_seconds: int = Field(
        0, ge=0, le=RELEASE_DELAY_MAX,
        description="send this long after the switch fires (a farewell letter); 0: at once",
    )
    sender_name: str | None = Field(
        None, min_length=1, max_length=NAME_MAX,
        description="how recipients see you named; default: your email address",
    )


def _no_documented_defaults(schema: dict) -> None:
    # A left-out field keeps its value: there is no default to document.
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)


class MessageChanges(_MessageFieldRules):
    """Any fields of a message to change; those left out keep their value.
    `sender_name: null` goes back to your email address."""

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra=_no_documented_defaults)

    # Typed without None on purpose: a field left out keeps its value, but an explicit
    # null (for anything but sender_name) is refused like any other wrong type.
    subject: str = Field(None, min_length=1, max_length=SUBJECT_MAX)
    body: str = Field(None, min_length=1, max_length=BODY_MAX_CHARS)
    recipients: list[RecipientIn] = Field(None, min_length=1, max_length=RECIPIENTS_MAX)
    switch_id: str = Field(None)
    inline: bool = Field(None)
    release_delay_seconds: int = Field(None, ge=0, le=RELEASE_DELAY_MAX)
    sender_name: str | None = Field(None, min_length=1, max_length=NAME_MAX)

    @model_validator(mode="after")
    def _something_to_change(self) -> MessageChanges:
        if not self.model_fields_set:
            raise ValueError("name at least one field to change")
        return self

    def given(self, name: str) -> bool:
        """Whether the request set this field (a left-out field keeps its value)."""
        return name in self.model_fields_set


class Recipient(BaseModel):
    id: str
    name: str
    email: str


class Message(BaseModel):
    """A message as its author reads it back."""

    id: str
    switch_id: str
    subject: str
    body: str
    recipients: list[Recipient]
    sender_name: str | None
    inline: bool
    release_delay_seconds: int
    state: str = Field(description="sealed (waiting), or released (handed to delivery)")
    created_at: AwareDatetime
    updated_at: AwareDatetime
    released_at: AwareDatetime | None = None


class MessageSummary(BaseModel):
    """A message in a list: its subject, never its body."""

    id: str
    switch_id: str
    subject: str
    recipient_count: int
    inline: bool
    release_delay_seconds: int
    state: str
    created_at: AwareDatetime
    updated_at: AwareDatetime
    released_at: AwareDatetime | None = None


class MessageList(BaseModel):
    messages: list[MessageSummary]


class MessageCreated(BaseModel):
    id: str


class ReleasedContent(BaseModel):
    """A released message as one recipient may read it (the /r/<token> page, delivery)."""

    message_id: str
    recipient_id: str
    recipient_name: str
    sender_name: str
    subject: str
    body: str
    inline: bool
    released_at: AwareDatetime
    written_at: AwareDatetime = Field(description="when its author last wrote or changed it")


class TestReleaseOwner(BaseModel):
    """The signed-in owner as the gateway knows them: the only address a test goes to."""

    model_config = ConfigDict(extra="ignore")

    email: str
    email_verified: bool


class TestReleaseStarted(BaseModel):
    """A test release handed to delivery: what was sent, to whom, and until when it opens."""

    id: str
    switch_id: str
    messages: int = Field(description="messages of the switch that were sent as a test")
    mails: int = Field(description="test mails, one per message and recipient")
    sent_to: str = Field(description="your own verified address: recipients receive nothing")
    created_at: AwareDatetime
    expires_at: AwareDatetime = Field(description="when the links in the test mails stop working")


class TestReleaseContent(ReleasedContent):
    """A message as one recipient would read it, opened from a test link."""

    test: bool = True
    expires_at: AwareDatetime = Field(description="when this test link stops working")
