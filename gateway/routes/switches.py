"""Switches and check-ins: the signed-in owner's schedule, grace, reminders and pauses;
and a test release of a switch to its owner."""

from __future__ import annotations

from flask import Blueprint, g

from gateway.api import operation
from gateway.auth import current_user_id
from gateway.clients import client_context
from gateway.errors import ApiError
from gateway.remote import call
from gateway.site.timefmt import duration
from services.scheduler.schemas import (
    SWITCH_ID_MAX_LENGTH,
    CheckInRequest,
    CheckInResult,
    SwitchList,
    SwitchSettings,
    SwitchUpdate,
    SwitchView,
)
from services.scheduler.switches import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_INTERVAL_SECONDS,
    DEFAULT_REMINDERS_SECONDS,
    MAX_PAUSE_SECONDS,
)
from services.vault.schemas import TestReleaseStarted
from services.vault.test_release import MAX_TEST_MAILS, TEST_RELEASES_PER_OWNER

# The vault asks the scheduler, then hands up to MAX_TEST_MAILS mails to delivery.
TEST_RELEASE_TIMEOUT_SECONDS = 15.0


def _listed(offsets: tuple[int, ...]) -> str:
    """Reminder offsets as a sentence lists them: "3 days, 1 day and 1 hour"."""
    words = [duration(offset) for offset in offsets]
    return ", ".join(words[:-1]) + f" and {words[-1]}" if len(words) > 1 else "".join(words)


bp = Blueprint("switches", __name__)


def _switch_id(switch_id: str) -> str:
    # An id that cannot exist is not worth a round trip to the scheduler.
    if not switch_id or len(switch_id) > SWITCH_ID_MAX_LENGTH:
        raise ApiError(404, "switch_not_found", "there is no such switch")
    return switch_id


@operation(bp, "GET", "/api/v1/switches", summary="Your switches", tag="switches",
           response=SwitchList)
def list_switches() -> dict:
    return call("scheduler", "list_switches", current_user_id())


@operation(bp, "POST", "/api/v1/switches", summary="Add a switch", tag="switches",
           body=SwitchSettings, response=SwitchView, status=201, errors=(402,),
           description="Creates another switch (402 when your plan's limit is reached). "
                       "Omitted settings take the defaults: "
                       f"{duration(DEFAULT_INTERVAL_SECONDS)}, "
                       f"{duration(DEFAULT_GRACE_SECONDS)} of grace, reminders "
                       f"{_listed(DEFAULT_REMINDERS_SECONDS)} before the deadline.")
def create_switch(body: SwitchSettings) -> dict:
    return call("scheduler", "create_switch", current_user_id(),
                body.model_dump(mode="json", exclude_unset=True))


@operation(bp, "GET", "/api/v1/switches/<switch_id>", summary="One switch", tag="switches",
           response=SwitchView)
def get_switch(switch_id: str) -> dict:
    return call("scheduler", "get_switch", current_user_id(), _switch_id(switch_id))


@operation(bp, "PUT", "/api/v1/switches/<switch_id>", summary="Change a switch's settings",
           tag="switches", body=SwitchUpdate, response=SwitchView, errors=(409,),
           description="Any of interval_seconds, grace_seconds, reminders_seconds and "
                       "paused_until. Changing a running switch counts as a check-in: its "
                       "deadline moves to now plus the interval. A pause stops the clock "
                       f"(at most {duration(MAX_PAUSE_SECONDS)}); paused_until: null resumes "
                       "at once.")
def update_switch(body: SwitchUpdate, switch_id: str) -> dict:
    return call("scheduler", "update_switch", current_user_id(), _switch_id(switch_id),
                body.model_dump(mode="json", exclude_unset=True))


@operation(bp, "POST", "/api/v1/checkins", summary="Check in", tag="switches",
           body=CheckInRequest, response=CheckInResult, errors=(409,),
           description="Send {} to check in every switch, or {\"switch_id\": ...} for one. "
                       "Answers with the switches it moved. A switch that has fired "
                       "answers 409 with its state: a check-in cannot undo a release.")
def check_in(body: CheckInRequest) -> dict:
    return call("scheduler", "check_in", current_user_id(),
                body.model_dump(mode="json", exclude_unset=True), client_context())


@operation(bp, "POST", "/api/v1/switches/<switch_id>/test-release",
           summary="Send yourself a test release", tag="switches",
           response=TestReleaseStarted, status=202, errors=(403, 409),
           description="Sends every message of the switch as each recipient would receive "
                       "it, but only to your own verified address: the subject starts with "
                       "\"[Test]\", and each link opens the recipient's page marked as a test "
                       "for 24 hours. Recipients receive nothing, and nothing about the switch "
                       "changes. 403 `email_not_verified`: confirm your address first; 409 "
                       "`switch_fired` (the real release happened), `no_messages`, or "
                       f"`test_release_too_large` (more than {MAX_TEST_MAILS} mails); "
                       f"429 `test_release_limit` beyond {TEST_RELEASES_PER_OWNER.count} a day "
                       "per account, all switches together (UTC days; Retry-After says when).")
def test_release(switch_id: str) -> dict:
    owner = {"email": g.user["email"], "email_verified": g.user["email_verified"]}
    return call("vault", "test_release", current_user_id(), _switch_id(switch_id), owner,
                timeout=TEST_RELEASE_TIMEOUT_SECONDS)
