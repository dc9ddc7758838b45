"""The dashboard (`/app`): each switch in words and in a picture, the check-in button,
and the "send the verification link again" button of a switch not yet armed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, flash, g, redirect, request, url_for

from gateway.clients import client_context
from gateway.errors import ApiError
from gateway.pages import sentence
from gateway.remote import call
from gateway.site.pages import render
from gateway.site.plans import plan_of
from gateway.site.session import signed_in
from gateway.site.timefmt import parse_time, relative, when, zone
from gateway.site.timeline import Timeline, timeline
from gateway.site.words import consequence, next_steps, reminder_words, state_words
from shared.errors import ServiceError

bp = Blueprint("site_dashboard", __name__)

OK, PROBLEM = "ok", "problem"


@dataclass(frozen=True)
class SwitchCard:
    """One switch as the dashboard shows it."""

    switch: dict[str, Any]
    title: str
    state: str
    steps: list[str]
    schedule: str
    reminders: str
    timeline: Timeline | None
    messages: list[dict[str, Any]]


def switch_cards(switches: list[dict], messages: list[dict], now: datetime) -> list[SwitchCard]:
    """The owner's switches with their messages, the default one first."""
    tz = zone(g.user.get("time_zone"))
    cards = []
    for number, switch in enumerate(switches, start=1):
        own = [message for message in messages if message["switch_id"] == switch["id"]]
        recipients = sum(message["recipient_count"] for message in own)
        cards.append(SwitchCard(
            switch=switch,
            title="Your switch" if len(switches) == 1 else f"Switch {number}",
            state=state_words(switch, tz, now),
            steps=next_steps(switch, len(own), recipients, tz, now),
            schedule=consequence(switch["interval_seconds"], switch["grace_seconds"]),
            reminders=reminder_words(switch["reminders_seconds"]),
            timeline=timeline(switch, now),
            messages=own,
        ))
    return cards


@bp.get("/app")
@signed_in
def dashboard() -> Response:
    now = datetime.now(UTC)
    switches = call("scheduler", "list_switches", g.user["id"])["switches"]
    messages = call("vault", "list_messages", g.user["id"])["messages"]
    tz = zone(g.user.get("time_zone"))
    return render("dashboard.html", cards=switch_cards(switches, messages, now),
                  tz=tz, now=now, when=when,
                  plan=plan_of(g.user["id"]),
                  any_live=any(s["state"] in ("armed", "overdue") for s in switches))


@bp.post("/app/check-in")
@signed_in
def check_in() -> Response:
    request_body = {"switch_id": request.form["switch_id"]} if request.form.get(
        "switch_id") else {}
    try:
        result = call("scheduler", "check_in", g.user["id"], request_body, client_context())
    except (ServiceError, ApiError) as exc:
        flash(sentence(exc.message), PROBLEM)
        return redirect(url_for(".dashboard"), 303)
    now = datetime.now(UTC)
    tz = zone(g.user.get("time_zone"))
    for moved in result["switches"]:
        deadline = parse_time(moved["deadline"])
        flash(f"Checked in. Your next check-in is due {when(deadline, tz, now)}, "
              f"{relative(deadline, now)}.", OK)
    for skipped in result.get("skipped", []):
        flash(sentence(skipped["reason"]), PROBLEM)
    return redirect(url_for(".dashboard"), 303)


@bp.post("/app/verify/resend")
@signed_in
def resend_verification() -> Response:
    try:
        queued = call("accounts", "resend_verification", g.user["id"])
    except (ServiceError, ApiError) as exc:
        flash(sentence(exc.message), PROBLEM)
    else:
        flash(sentence(queued["message"]), OK)
    return redirect(url_for(".dashboard"), 303)
