"""Switch settings in days and hours, with what they mean spelled out; pause and resume;
a test release to oneself; another switch on plans that allow it. The scheduler (and,
for a test release, the vault) decides what is allowed."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from flask import Blueprint, Response, flash, g, redirect, request, url_for
from werkzeug.exceptions import NotFound

from gateway.errors import ApiError
from gateway.pages import sentence
from gateway.remote import call
from gateway.routes.switches import TEST_RELEASE_TIMEOUT_SECONDS
from gateway.site.forms import FORM_ERROR, FormErrors, refusal
from gateway.site.pages import render
from gateway.site.session import signed_in
from gateway.site.timefmt import DAY, HOUR, days_and_hours, duration, parse_time, when, zone
from gateway.site.words import consequence, reminder_words, state_words
from services.scheduler.schemas import SWITCH_ID_MAX_LENGTH
from services.scheduler.switches import MAX_PAUSE_SECONDS, MAX_REMINDERS
from services.vault.test_release import TEST_RELEASES_PER_OWNER
from shared.errors import ServiceError

bp = Blueprint("site_switches", __name__)

# A pause ends at this hour of the chosen day, in the sender's zone: awake and able to
# check in, rather than at midnight.
PAUSE_ENDS_AT = time(9, 0)
FIELD_OF_SETTING = {"interval_seconds": "interval", "grace_seconds": "grace",
                    "reminders_seconds": "reminders", "paused_until": "until",
                    "hold_seconds": "hold", "confirmation": "confirmation",
                    "confirmation_wait_seconds": "confirmation_wait"}
CONTACT_STATUS_WORDS = {"invited": "invited, has not answered yet",
                        "accepted": "accepted", "declined": "declined"}
CONTACT_ID_MAX_LENGTH = 64


def _switch(switch_id: str) -> dict:
    if not switch_id or len(switch_id) > SWITCH_ID_MAX_LENGTH:
        raise NotFound()
    return call("scheduler", "get_switch", g.user["id"], switch_id)


def _settings_page(switch: dict, form: dict, errors: FormErrors, status: int = 200,
                   contact_form: dict | None = None) -> Response:
    tz = zone(g.user.get("time_zone"))
    now = datetime.now(UTC)
    paused_until = parse_time(switch.get("paused_until"))
    contacts = call("scheduler", "list_trusted_contacts", g.user["id"], switch["id"])
    return render("switch.html", status, switch=switch, form=form, errors=errors, tz=tz,
                  contacts=contacts["trusted_contacts"], contact_limit=contacts["limit"],
                  contact_form={**contact_form_of(switch), **(contact_form or {})},
                  contact_words=CONTACT_STATUS_WORDS,
                  hold_words=duration(switch.get("hold_seconds", 7 * DAY)),
                  wait_words=duration(switch.get("confirmation_wait_seconds", 14 * DAY)),
                  state=state_words(switch, tz, now),
                  consequence=consequence(switch["interval_seconds"], switch["grace_seconds"]),
                  reminders=reminder_words(switch["reminders_seconds"]),
                  reminder_rows=sum(1 for key in form if key.startswith("reminder_days_")),
                  paused_until=when(paused_until, tz, now) if paused_until else None,
                  max_pause_days=MAX_PAUSE_SECONDS // DAY,
                  test_release_limit=f"{TEST_RELEASES_PER_OWNER.count} times a day")


def form_of(switch: dict) -> dict[str, str]:
    """The settings as the form's fields: days and hours."""
    form: dict[str, str] = {}
    for name in ("interval", "grace"):
        days, hours = days_and_hours(switch[f"{name}_seconds"])
        form[f"{name}_days"], form[f"{name}_hours"] = str(days), str(hours)
    offsets = sorted(switch["reminders_seconds"], reverse=True)
    for i in range(reminder_rows(offsets)):
        days, hours = days_and_hours(offsets[i]) if i < len(offsets) else ("", "")
        form[f"reminder_days_{i}"], form[f"reminder_hours_{i}"] = str(days), str(hours)
    return form


def contact_form_of(switch: dict) -> dict[str, str]:
    """The trusted contacts' settings as the form's fields: days and hours, a checkbox."""
    form: dict[str, str] = {}
    for name, default in (("hold", 7 * DAY), ("confirmation_wait", 14 * DAY)):
        days, hours = days_and_hours(switch.get(f"{name}_seconds", default))
        form[f"{name}_days"], form[f"{name}_hours"] = str(days), str(hours)
    if switch.get("confirmation") == "required":
        form["confirmation"] = "required"
    return form


def reminder_rows(offsets: list) -> int:
    return min(max(len(offsets) + 1, 3), MAX_REMINDERS)


@bp.get("/app/switches/<switch_id>")
@signed_in
def settings(switch_id: str) -> Response:
    switch = _switch(switch_id)
    return _settings_page(switch, form_of(switch), FormErrors())


@bp.post("/app/switches/<switch_id>")
@signed_in
def save_settings(switch_id: str) -> Response:
    switch = _switch(switch_id)
    form = request.form.to_dict()
    errors = FormErrors()
    changes = {
        "interval_seconds": _seconds(form, "interval", errors),
        "grace_seconds": _seconds(form, "grace", errors),
        "reminders_seconds": _reminders(form, len(switch["reminders_seconds"]), errors),
    }
    if errors:
        return _settings_page(switch, form, errors, 422)
    try:
        updated = call("scheduler", "update_switch", g.user["id"], switch["id"], changes)
    except (ServiceError, ApiError) as exc:
        return _settings_page(switch, form, setting_refusal(exc), exc.status)
    flash("Your settings are saved. " + consequence(updated["interval_seconds"],
                                                   updated["grace_seconds"]), "ok")
    return redirect(url_for(".settings", switch_id=switch["id"]), 303)


def _seconds(form: dict, name: str, errors: FormErrors) -> int | None:
    try:
        days = int(form.get(f"{name}_days") or 0)
        hours = int(form.get(f"{name}_hours") or 0)
    except ValueError:
        errors[name] = "Please give whole numbers of days and hours."
        return None
    if days < 0 or hours < 0:
        errors[name] = "Please give whole numbers of days and hours."
        return None
    return days * DAY + hours * HOUR


def _reminders(form: dict, existing: int, errors: FormErrors) -> list[int]:
    offsets = []
    for i in range(reminder_rows([None] * existing)):
        if not (form.get(f"reminder_days_{i}") or form.get(f"reminder_hours_{i}")):
            continue
        seconds = _seconds(form, f"reminder_{i}", errors)
        if f"reminder_{i}" in errors:
            errors["reminders"] = errors.pop(f"reminder_{i}")
        elif seconds:
            offsets.append(seconds)
    return offsets


def setting_refusal(exc: ServiceError | ApiError) -> FormErrors:
    """The scheduler's refusal in days and hours, beside the field it concerns."""
    details = getattr(exc, "details", None) or {}
    field = FIELD_OF_SETTING.get(details.get("field"), FORM_ERROR)
    if "minimum" in details:
        return FormErrors({field: f"This must be at least {duration(details['minimum'])}."})
    if "maximum" in details and field != "reminders":
        return FormErrors({field: f"This must be at most {duration(details['maximum'])}."})
    return FormErrors({field: next(iter(refusal(exc).values()))})


@bp.post("/app/switches/<switch_id>/pause")
@signed_in
def pause(switch_id: str) -> Response:
    switch = _switch(switch_id)
    tz = zone(g.user.get("time_zone"))
    try:
        until = datetime.combine(date.fromisoformat(request.form.get("until", "")),
                                 PAUSE_ENDS_AT, tzinfo=tz)
    except ValueError:
        return _settings_page(switch, form_of(switch), FormErrors(
            {"until": "Please choose the date you will be back."}), 422)
    try:
        call("scheduler", "update_switch", g.user["id"], switch["id"],
             {"paused_until": until.astimezone(UTC).isoformat()})
    except (ServiceError, ApiError) as exc:
        return _settings_page(switch, form_of(switch), setting_refusal(exc), exc.status)
    flash(f"Paused until {when(until, tz, datetime.now(UTC))}. Nothing is sent meanwhile.",
          "ok")
    return redirect(url_for(".settings", switch_id=switch["id"]), 303)


@bp.post("/app/switches/<switch_id>/resume")
@signed_in
def resume(switch_id: str) -> Response:
    switch = _switch(switch_id)
    try:
        call("scheduler", "update_switch", g.user["id"], switch["id"], {"paused_until": None})
    except (ServiceError, ApiError) as exc:
        flash(sentence(exc.message), "problem")
    else:
        flash("Resumed: the clock runs again from now.", "ok")
    return redirect(url_for(".settings", switch_id=switch["id"]), 303)


@bp.post("/app/switches/<switch_id>/test-release")
@signed_in
def test_release(switch_id: str) -> Response:
    switch = _switch(switch_id)
    owner = {"email": g.user["email"], "email_verified": g.user["email_verified"]}
    try:
        sent = call("vault", "test_release", g.user["id"], switch["id"], owner,
                    timeout=TEST_RELEASE_TIMEOUT_SECONDS)
    except (ServiceError, ApiError) as exc:
        flash(sentence(exc.message), "problem")
    else:
        mails = "1 test mail" if sent["mails"] == 1 else f"{sent['mails']} test mails"
        flash(f"Test release sent: {mails} to {sent['sent_to']}, one for each message and "
              "recipient. Your recipients received nothing.", "ok")
    return redirect(url_for(".settings", switch_id=switch["id"]), 303)


@bp.post("/app/switches/new")
@signed_in
def add_switch() -> Response:
    try:
        created = call("scheduler", "create_switch", g.user["id"], {})
    except (ServiceError, ApiError) as exc:
        flash(sentence(exc.message), "problem")
        return redirect(url_for("site_dashboard.dashboard"), 303)
    flash("A new switch is ready. Choose its schedule below.", "ok")
    return redirect(url_for(".settings", switch_id=created["id"]), 303)


# Trusted contacts ----------------------------------------------------------------------------


@bp.post("/app/switches/<switch_id>/trusted-contacts")
@signed_in
def add_trusted_contact(switch_id: str) -> Response:
    switch = _switch(switch_id)
    form = {key: request.form.get(key, "").strip() for key in ("name", "email")}
    errors = FormErrors({f"contact_{key}": "Please fill this in."
                         for key, value in form.items() if not value})
    if errors:
        return _settings_page(switch, form_of(switch), errors, 422,
                              contact_form={f"contact_{k}": v for k, v in form.items()})
    try:
        call("scheduler", "add_trusted_contact", g.user["id"], switch["id"], form)
    except (ServiceError, ApiError) as exc:
        field = (exc.details or {}).get("field") if isinstance(exc, ServiceError) else None
        refused = refusal(exc)
        errors = FormErrors({f"contact_{field}" if field in ("name", "email") else FORM_ERROR:
                             next(iter(refused.values()))})
        return _settings_page(switch, form_of(switch), errors, exc.status,
                              contact_form={f"contact_{k}": v for k, v in form.items()})
    flash(f"We mailed {form['name']} an invitation. They are asked nothing more unless they "
          "accept.", "ok")
    return redirect(url_for(".settings", switch_id=switch["id"]) + "#contacts-title", 303)


@bp.post("/app/switches/<switch_id>/trusted-contacts/<contact_id>/remove")
@signed_in
def remove_trusted_contact(switch_id: str, contact_id: str) -> Response:
    switch = _switch(switch_id)
    if not contact_id or len(contact_id) > CONTACT_ID_MAX_LENGTH:
        raise NotFound()
    try:
        call("scheduler", "remove_trusted_contact", g.user["id"], switch["id"], contact_id)
    except (ServiceError, ApiError) as exc:
        flash(sentence(exc.message), "problem")
    else:
        flash("Removed: they will be asked nothing more, and nothing of them is kept.", "ok")
    return redirect(url_for(".settings", switch_id=switch["id"]) + "#contacts-title", 303)


@bp.post("/app/switches/<switch_id>/trusted-contacts/settings")
@signed_in
def save_contact_settings(switch_id: str) -> Response:
    switch = _switch(switch_id)
    form = request.form.to_dict()
    errors = FormErrors()
    changes = {
        "hold_seconds": _seconds(form, "hold", errors),
        "confirmation": "required" if form.get("confirmation") == "required" else "none",
        "confirmation_wait_seconds": _seconds(form, "confirmation_wait", errors),
    }
    if errors:
        return _settings_page(switch, form_of(switch), errors, 422, contact_form=form)
    try:
        call("scheduler", "update_switch", g.user["id"], switch["id"], changes)
    except (ServiceError, ApiError) as exc:
        return _settings_page(switch, form_of(switch), setting_refusal(exc), exc.status,
                              contact_form=form)
    flash("Saved. A hold now moves the release " + duration(changes["hold_seconds"] or 0)
          + " later.", "ok")
    return redirect(url_for(".settings", switch_id=switch["id"]) + "#contacts-title", 303)
