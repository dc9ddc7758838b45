"""Messages: the list, writing, changing, previewing and deleting, for their author.

Recipients are rows of the form. Without any script, "Add a recipient" and "Remove"
are buttons that send the form back with one row more or less, keeping what was typed.
The plan's limits are stated before they are reached; the vault enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, current_app, flash, g, redirect, request, url_for
from werkzeug.exceptions import NotFound

from gateway.errors import ApiError
from gateway.remote import call
from gateway.routes.messages import MESSAGE_ID
from gateway.site.forms import FORM_ERROR, FormErrors, refusal, validated
from gateway.site.pages import render
from gateway.site.plans import plan_of
from gateway.site.session import signed_in
from services.delivery.kinds import kind_named
from services.delivery.render import render as render_mail
from services.vault.schemas import MessageChanges, NewMessage
from shared.config import SETTINGS_CONFIG_KEY
from shared.errors import ServiceError

bp = Blueprint("site_messages", __name__)

ROWS_MAX = 100  # no plan allows more recipients than this; a forged count stops here
LIMIT_FIELDS = {"recipients_per_message": "recipients", "body_bytes": "body"}


@dataclass
class Draft:
    """A message as the form holds it, typed values kept even when they are wrong."""

    subject: str = ""
    body: str = ""
    sender_name: str = ""
    inline: bool = False
    switch_id: str = ""
    recipients: list[dict[str, str]] = field(default_factory=lambda: [{"name": "", "email": ""}])

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Draft:
        return cls(subject=message["subject"], body=message["body"],
                   sender_name=message.get("sender_name") or "", inline=message["inline"],
                   switch_id=message["switch_id"],
                   recipients=[{"name": r["name"], "email": r["email"]}
                               for r in message["recipients"]])

    @classmethod
    def from_form(cls, form) -> Draft:
        count = min(_int(form.get("recipient_rows"), 1), ROWS_MAX)
        rows = [{"name": form.get(f"recipient_name_{i}", "").strip(),
                 "email": form.get(f"recipient_email_{i}", "").strip()} for i in range(count)]
        return cls(subject=form.get("subject", ""), body=form.get("body", ""),
                   sender_name=form.get("sender_name", "").strip(),
                   inline=form.get("inline") == "yes", switch_id=form.get("switch_id", ""),
                   recipients=rows or [{"name": "", "email": ""}])

    def filled_rows(self) -> list[int]:
        """Indexes of the rows with anything typed in them."""
        return [i for i, row in enumerate(self.recipients) if row["name"] or row["email"]]

    def fields(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The API's message fields, and where each recipient's errors belong in the form."""
        filled = self.filled_rows()
        names = {"recipients": "recipients"}
        for k, i in enumerate(filled):
            names[f"recipients.{k}.name"] = f"recipient_name_{i}"
            names[f"recipients.{k}.email"] = f"recipient_email_{i}"
            names[f"recipients.{k}"] = f"recipient_email_{i}"
        values = {"subject": self.subject.strip(), "body": self.body,
                  "recipients": [self.recipients[i] for i in filled],
                  "inline": self.inline, "sender_name": self.sender_name or None}
        if self.switch_id:
            values["switch_id"] = self.switch_id
        return values, names


def _int(value: str | None, default: int) -> int:
    try:
        return max(1, int(value or default))
    except ValueError:
        return default


def _message_id(message_id: str) -> str:
    if not MESSAGE_ID.fullmatch(message_id):
        raise NotFound()
    return message_id


def _switches() -> list[dict[str, Any]]:
    return call("scheduler", "list_switches", g.user["id"])["switches"]


def _form_page(draft: Draft, errors: FormErrors, *, message: dict | None = None,
               status: int = 200, preview: list | None = None) -> Response:
    return render("message_form.html", status, draft=draft, errors=errors, message=message,
                  plan=plan_of(g.user["id"]), switches=_switches(), preview=preview)


@bp.get("/app/messages")
@signed_in
def list_messages() -> Response:
    messages = call("vault", "list_messages", g.user["id"])["messages"]
    return render("messages.html", messages=messages, plan=plan_of(g.user["id"]),
                  switches=_switches())


@bp.get("/app/messages/new")
@signed_in
def new_message() -> Response:
    return _form_page(Draft(), FormErrors())


@bp.post("/app/messages/new")
@signed_in
def create_message() -> Response:
    draft = Draft.from_form(request.form)
    redisplay = _rework(draft)
    if redisplay is not None:
        return redisplay
    values, names = draft.fields()
    body, errors = validated(NewMessage, values, names)
    if errors:
        return _form_page(draft, errors, status=422)
    try:
        call("vault", "create_message", g.user["id"], g.user["email"],
             body.model_dump(mode="json"))
    except (ServiceError, ApiError) as exc:
        return _form_page(draft, _limit_refusal(exc), status=exc.status)
    flash(f"Your message \u201c{body.subject}\u201d is sealed.", "ok")
    return redirect(url_for(".list_messages"), 303)


@bp.get("/app/messages/<message_id>")
@signed_in
def edit_message(message_id: str) -> Response:
    message = call("vault", "get_message", g.user["id"], _message_id(message_id))
    return _form_page(Draft.from_message(message), FormErrors(), message=message)


@bp.post("/app/messages/<message_id>")
@signed_in
def update_message(message_id: str) -> Response:
    message = call("vault", "get_message", g.user["id"], _message_id(message_id))
    draft = Draft.from_form(request.form)
    redisplay = _rework(draft, message)
    if redisplay is not None:
        return redisplay
    values, names = draft.fields()
    changes, errors = validated(MessageChanges, values, names)
    if errors:
        return _form_page(draft, errors, message=message, status=422)
    try:
        call("vault", "update_message", g.user["id"], g.user["email"], message["id"],
             changes.model_dump(mode="json", exclude_unset=True))
    except (ServiceError, ApiError) as exc:
        return _form_page(draft, _limit_refusal(exc), message=message, status=exc.status)
    flash(f"Your message \u201c{changes.subject}\u201d is saved.", "ok")
    return redirect(url_for(".list_messages"), 303)


def _rework(draft: Draft, message: dict | None = None) -> Response | None:
    """The form's other buttons: add or remove a recipient row, or preview the mail."""
    action = request.form.get("action", "save")
    if action == "add":
        draft.recipients.append({"name": "", "email": ""})
    elif action.startswith("remove-"):
        index = action.removeprefix("remove-")
        rows = len(draft.recipients)
        if index.isdigit() and int(index) < rows and rows > 1:
            del draft.recipients[int(index)]
    elif action == "preview":
        return _form_page(draft, FormErrors(), message=message, preview=previews(draft))
    else:
        return None
    return _form_page(draft, FormErrors(), message=message)


def previews(draft: Draft) -> list[dict[str, str]]:
    """The mail each recipient would receive, rendered by delivery's own templates."""
    public_url = current_app.config[SETTINGS_CONFIG_KEY].public_url
    sender = draft.sender_name or g.user["email"]
    kind = kind_named("released_message")
    out = []
    for i in draft.filled_rows():
        row = draft.recipients[i]
        if draft.inline:
            context = {"variant": "inline", "sender_name": sender, "message_id": "preview",
                       "recipient_id": "preview"}
            fetched = {"message_subject": draft.subject, "message_body": draft.body}
        else:
            context = {"variant": "link", "sender_name": sender,
                       "link": f"{public_url}/r/(a link only this recipient receives)"}
            fetched = None
        mail = render_mail(kind, context, public_url=public_url, to_name=row["name"] or None,
                           fetched=fetched)
        out.append({"to": f"{row['name']} <{row['email']}>", "subject": mail.subject,
                    "text": mail.text})
    return out


def _limit_refusal(exc: ServiceError | ApiError) -> FormErrors:
    details = getattr(exc, "details", None) or {}
    return refusal(exc, LIMIT_FIELDS.get(details.get("limit"), FORM_ERROR))


@bp.get("/app/messages/<message_id>/delete")
@signed_in
def confirm_delete(message_id: str) -> Response:
    message = call("vault", "get_message", g.user["id"], _message_id(message_id))
    return render("message_delete.html", message=message)


@bp.post("/app/messages/<message_id>/delete")
@signed_in
def delete_message(message_id: str) -> Response:
    message = call("vault", "get_message", g.user["id"], _message_id(message_id))
    try:
        call("vault", "delete_message", g.user["id"], message["id"])
    except (ServiceError, ApiError) as exc:
        return render("message_delete.html", exc.status, message=message,
                      errors=refusal(exc))
    flash(f"Your message \u201c{message['subject']}\u201d is deleted.", "ok")
    return redirect(url_for(".list_messages"), 303)
