"""The web site's own behaviour, with the services played by a fake (tests/unit/site_fakes.py):
cookies and their flags, CSRF, pages for errors, fields keeping what was typed, the API
untouched by the cookie, and times and durations in words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.site.cookies import cookie_policy
from gateway.site.timefmt import days_and_hours, duration, relative, when
from gateway.site.timeline import timeline
from gateway.site.words import consequence
from services.privacy.notices import notice
from shared.errors import Conflict, InvalidInput, NotFound, PaymentRequired
from tests.unit.site_fakes import (
    MESSAGE_ID,
    NOW,
    SWITCH_ID,
    TOKEN,
    FakeServices,
    csrf_token,
    refuse,
    site_app,
    switch,
)


@pytest.fixture
def world():
    return FakeServices()


@pytest.fixture
def client(tmp_path, world):
    return site_app(tmp_path, world).test_client()


@pytest.fixture
def signed_in(client):
    client.set_cookie("jicm_session", TOKEN)
    return client


def form_token(client, path: str) -> str:
    return csrf_token(client.get(path).get_data(as_text=True))


# Cookies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url, secure", [
    ("http://127.0.0.1:8000", False), ("http://localhost:8000", False),
    ("https://justincase.example", True), ("http://justincase.example", True),
])
def test_cookies_are_host_prefixed_and_secure_unless_plain_http_on_loopback(url, secure):
    policy = cookie_policy(url)
    assert policy.secure is secure
    assert policy.session_name == ("__Host-jicm_session" if secure else "jicm_session")


def test_logging_in_over_https_sets_a_host_prefixed_secure_httponly_lax_cookie(tmp_path,
                                                                               world):
    client = site_app(tmp_path, world, public_url="https://jic.example").test_client()
    token = form_token(client, "https://jic.example/login")
    answer = client.post("https://jic.example/login", data={
        "csrf_token": token, "email": "ada@example.org", "password": "whatever it is"},
        headers={"Referer": "https://jic.example/login"})
    assert answer.status_code == 303
    cookie = next(c for c in answer.headers.getlist("Set-Cookie")
                  if c.startswith("__Host-jicm_session="))
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in cookie
    assert "Domain" not in cookie


def test_the_bearer_api_never_reads_the_session_cookie(signed_in, world):
    answer = signed_in.get("/api/v1/me")
    assert answer.status_code == 401
    assert answer.is_json
    assert world.asked("accounts", "resolve_session") == []


def test_a_refused_session_cookie_is_dropped_and_the_browser_sent_to_log_in(client, world):
    client.set_cookie("jicm_session", "x" * 43)
    answer = client.get("/app")
    assert answer.status_code == 302 and answer.location.endswith("/login?next=/app")
    assert any(c.startswith("jicm_session=;") for c in answer.headers.getlist("Set-Cookie"))


# CSRF and error pages -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/signup", "/login", "/logout", "/forgot", "/app/check-in",
                                  f"/app/messages/{MESSAGE_ID}/delete",
                                  f"/app/switches/{SWITCH_ID}", "/app/account/close"])
def test_a_post_without_its_csrf_token_is_a_403_page(signed_in, world, path):
    answer = signed_in.post(path, data={"email": "ada@example.org"})
    assert answer.status_code == 403
    assert answer.mimetype == "text/html"
    assert "This form has expired" in answer.get_data(as_text=True)
    assert not [call for call in world.calls if call[1] != "resolve_session"]


def test_another_users_message_is_a_404_page(signed_in):
    answer = signed_in.get("/app/messages/44444444-4444-4444-8444-444444444444")
    assert answer.status_code == 404
    assert "There is nothing here" in answer.get_data(as_text=True)


def test_an_unknown_address_is_a_page_for_browsers_and_json_for_the_api(client):
    page = client.get("/no/such/page", headers={"Accept": "text/html"})
    assert page.status_code == 404 and page.mimetype == "text/html"
    api = client.get("/api/v1/no-such", headers={"Accept": "text/html"})
    assert api.status_code == 404 and api.is_json


def test_a_service_failure_on_a_page_is_a_page_not_a_stack_trace(signed_in, world):
    world.answer("scheduler", "list_switches", refuse(RuntimeError("boom")))
    answer = signed_in.get("/app")
    assert answer.status_code == 500
    assert "Something went wrong on our side" in answer.get_data(as_text=True)
    assert "boom" not in answer.get_data(as_text=True)


def test_every_page_has_the_strict_policy(client, signed_in):
    for path in ("/", "/privacy", "/signup", "/forgot", "/app", "/app/account"):
        answer = signed_in.get(path)
        assert answer.status_code == 200, path
        csp = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "unsafe-inline" not in csp


# Forms ----------------------------------------------------------------------------------


def test_sign_up_errors_stand_beside_their_fields_and_keep_what_was_typed(client, world):
    token = form_token(client, "/signup")
    answer = client.post("/signup", data={
        "csrf_token": token, "email": "ada@example.org", "password": "secret words here",
        "dob_day": "31", "dob_month": "2", "dob_year": "1990"})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert 'id="date_of_birth-error"' in page and 'id="accept_policy-error"' in page
    assert 'value="ada@example.org"' in page
    assert "secret words here" not in page
    assert world.asked("accounts", "sign_up") == []


def test_the_age_gate_refusal_is_shown_beside_the_date_of_birth(client, world):
    world.answer("accounts", "sign_up", refuse(InvalidInput(
        "you must be at least 16 years old to use Just in Case", code="age_requirement",
        details={"field": "date_of_birth"})))
    token = form_token(client, "/signup")
    answer = client.post("/signup", data={
        "csrf_token": token, "email": "kid@example.org", "password": "long enough words",
        "dob_day": "1", "dob_month": "1", "dob_year": "2020", "accept_policy": "2024-04-29"})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert ('<small id="date_of_birth-error" class="field-error">You must be at least 16 '
            'years old to use Just in Case.</small>') in page


def test_a_plan_limit_is_said_in_words_beside_the_recipients(signed_in, world):
    world.answer("vault", "create_message", refuse(PaymentRequired(
        "your Free plan allows 3 recipients per message; upgrade to go beyond it",
        details={"limit": "recipients_per_message", "allowed": 3})))
    token = form_token(signed_in, "/app/messages/new")
    answer = signed_in.post("/app/messages/new", data={
        "csrf_token": token, "subject": "Hello", "body": "Text", "recipient_rows": "1",
        "recipient_name_0": "Grace", "recipient_email_0": "grace@example.org"})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 402
    assert ('<small id="recipients-error" class="field-error">Your Free plan allows 3 '
            'recipients per message; upgrade to go beyond it.</small>') in page
    assert 'value="grace@example.org"' in page


def test_adding_a_recipient_row_keeps_everything_typed_and_sends_nothing(signed_in, world):
    token = form_token(signed_in, "/app/messages/new")
    answer = signed_in.post("/app/messages/new", data={
        "csrf_token": token, "action": "add", "subject": "Hi", "body": "Text",
        "recipient_rows": "1", "recipient_name_0": "Grace",
        "recipient_email_0": "grace@example.org"})
    page = answer.get_data(as_text=True)
    assert 'id="recipient_email_1"' in page and 'value="grace@example.org"' in page
    assert world.asked("vault", "create_message") == []


def test_a_schedule_refusal_is_said_in_days_and_hours(signed_in, world):
    world.answer("scheduler", "update_switch", refuse(InvalidInput(
        "interval_seconds: must be at least 86400 seconds", code="invalid_setting",
        details={"field": "interval_seconds", "minimum": 86_400})))
    token = form_token(signed_in, f"/app/switches/{SWITCH_ID}")
    answer = signed_in.post(f"/app/switches/{SWITCH_ID}", data={
        "csrf_token": token, "interval_days": "0", "interval_hours": "5",
        "grace_days": "7", "grace_hours": "0"})
    page = answer.get_data(as_text=True)
    assert "This must be at least 1 day." in page
    assert "seconds" not in page


def test_a_check_in_refused_for_an_unverified_address_says_why(signed_in, world):
    world.switches = [switch("unarmed", deadline=None)]
    world.answer("scheduler", "check_in", refuse(Conflict(
        "verify your email address first", code="email_not_verified")))
    token = form_token(signed_in, "/app")
    signed_in.post("/app/check-in", data={"csrf_token": token})
    page = signed_in.get("/app").get_data(as_text=True)
    assert "Verify your email address first." in page
    assert "Send the link again" in page


def test_a_missing_switch_is_a_404_page(signed_in, world):
    world.answer("scheduler", "get_switch", refuse(NotFound("there is no such switch")))
    assert signed_in.get(f"/app/switches/{SWITCH_ID}").status_code == 404


def test_the_privacy_page_is_the_published_notice_with_its_version_and_hash(client):
    page = client.get("/privacy").get_data(as_text=True)
    published = notice("2024-04-29")
    assert "Version <strong>2024-04-29</strong>" in page
    assert published.sha256 in page
    assert "Last Updated date: April 29, 2024" in page


# Words ----------------------------------------------------------------------------------


def test_a_moment_is_told_in_the_senders_zone_with_the_zone_named():
    moment = datetime(2030, 1, 14, 8, 0, tzinfo=UTC)
    now = datetime(2030, 1, 2, 8, 0, tzinfo=UTC)
    assert when(moment, ZoneInfo("Europe/Paris"), now) == "Monday 14 January, 09:00 Europe/Paris"
    assert when(moment, ZoneInfo("UTC"), now - timedelta(days=400)).startswith(
        "Monday 14 January 2030")
    assert relative(moment, now) == "in 12 days"
    assert relative(now - timedelta(hours=3), now) == "3 hours ago"


@pytest.mark.parametrize("seconds, words", [
    (30 * 86_400, "30 days"), (86_400 + 6 * 3600, "1 day and 6 hours"), (3600, "1 hour"),
    (120, "2 minutes"),
])
def test_durations_are_days_and_hours_never_seconds(seconds, words):
    assert duration(seconds) == words


def test_a_schedule_is_split_into_days_and_hours_for_its_form():
    assert days_and_hours(37 * 86_400 + 5 * 3600) == (37, 5)
    assert days_and_hours(90) == (0, 1)


def test_the_consequence_of_a_schedule_is_spelled_out():
    assert consequence(30 * 86_400, 7 * 86_400).startswith(
        "If you stop checking in, your messages go out 37 days after your last check-in")


def test_the_timeline_places_reminders_before_the_deadline_and_release_at_the_end():
    drawn = timeline(switch(), NOW)
    kinds = [point.kind for point in drawn.points]
    assert kinds == ["checkin", "reminder", "reminder", "reminder", "deadline", "release",
                     "now"]
    xs = [point.x for point in drawn.events]
    assert xs == sorted(xs) and xs[0] < drawn.now_x < drawn.deadline_x < drawn.end_x


def test_a_paused_switch_has_no_timeline():
    assert timeline(switch("paused"), NOW) is None


def test_a_wrong_method_on_a_page_is_a_405_page_naming_the_allowed_ones(client):
    answer = client.get("/logout")
    assert answer.status_code == 405 and answer.mimetype == "text/html"
    assert set(answer.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}


def test_a_wrong_method_elsewhere_stays_json(client):
    answer = client.delete("/readyz", headers={"Accept": "text/html"})
    assert answer.status_code == 405 and answer.is_json


def test_removing_the_first_recipient_keeps_the_second(signed_in):
    token = form_token(signed_in, "/app/messages/new")
    page = signed_in.post("/app/messages/new", data={
        "csrf_token": token, "action": "remove-0", "subject": "Hi", "body": "Text",
        "recipient_rows": "2", "recipient_name_0": "Grace",
        "recipient_email_0": "grace@example.org", "recipient_name_1": "Alan",
        "recipient_email_1": "alan@example.org"}).get_data(as_text=True)
    assert 'value="alan@example.org"' in page and "grace@example.org" not in page


def test_the_landing_page_knows_who_is_signed_in(signed_in):
    page = signed_in.get("/").get_data(as_text=True)
    assert "Go to your dashboard" in page and "Sign up for free" not in page
