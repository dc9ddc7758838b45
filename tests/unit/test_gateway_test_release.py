"""The test release in the gateway: the API operation and the settings page's button pass
the signed-in owner's own address to the vault, say the vault's refusals (429 with
Retry-After), and the test page is the recipient's page marked as a test."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.openapi import build_spec
from gateway.redact import redact_url
from shared.errors import Conflict, Forbidden, NotFound, RateLimited
from tests.unit.site_fakes import (
    NOW,
    SWITCH_ID,
    TOKEN,
    FakeServices,
    csrf_token,
    iso,
    refuse,
    site_app,
)

TEST_TOKEN = "k" * 43
PATH = f"/api/v1/switches/{SWITCH_ID}/test-release"


def started(user_id: str, switch_id: str, owner: dict) -> dict:
    return {"id": "t-1", "switch_id": switch_id, "messages": 2, "mails": 3,
            "sent_to": owner["email"], "created_at": iso(NOW),
            "expires_at": iso(NOW + timedelta(hours=24))}


def letter(token: str, client: dict) -> dict:
    return {"message_id": "m-1", "recipient_id": "r-1", "recipient_name": "Grace",
            "sender_name": "Ada (ada@example.org)", "subject": "For Grace",
            "body": "The keys are in the blue box.", "inline": False,
            "released_at": iso(NOW), "written_at": iso(NOW), "test": True,
            "expires_at": "2030-05-04T10:00:00Z"}


@pytest.fixture
def world():
    world = FakeServices()
    world.answer("vault", "test_release", started)
    world.answer("vault", "read_test_release", letter)
    return world


@pytest.fixture
def client(tmp_path, world):
    return site_app(tmp_path, world).test_client()


API = {"Authorization": f"Bearer {TOKEN}"}


def test_the_api_sends_the_test_to_the_signed_in_owners_own_address(client, world):
    answer = client.post(PATH, headers=API)
    assert answer.status_code == 202, answer.get_data(as_text=True)
    assert answer.get_json()["sent_to"] == "ada@example.org"
    [(user_id, switch_id, owner)] = world.asked("vault", "test_release")
    assert (user_id, switch_id) == (world.profile["id"], SWITCH_ID)
    assert owner == {"email": "ada@example.org", "email_verified": True}


def test_the_api_needs_a_session(client, world):
    assert client.post(PATH).status_code == 401
    assert world.asked("vault", "test_release") == []


@pytest.mark.parametrize("refusal, status", [
    (Forbidden("confirm your email address first", code="email_not_verified"), 403),
    (Conflict("switch has fired", code="switch_fired"), 409),
])
def test_the_vaults_refusals_are_json_errors_naming_the_problem(client, world, refusal,
                                                                 status):
    world.answer("vault", "test_release", refuse(refusal))
    answer = client.post(PATH, headers=API)
    assert answer.status_code == status
    assert answer.get_json()["error"]["code"] == refusal.code


def test_beyond_the_limit_the_answer_is_429_with_retry_after(client, world):
    world.answer("vault", "test_release", refuse(RateLimited(
        "a test release can be sent 3 times a day", code="test_release_limit",
        details={"retry_after_seconds": 3600})))
    answer = client.post(PATH, headers=API)
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "3600"


def test_the_operation_is_documented_with_its_refusals():
    operation = build_spec("http://127.0.0.1:8000")["paths"]["/api/v1/switches/{switch_id}/test-release"]["post"]
    assert {"202", "403", "404", "409", "429"} <= set(operation["responses"])


def test_the_settings_page_has_the_button_and_pressing_it_confirms(client, world):
    client.set_cookie("jicm_session", TOKEN)
    page = client.get(f"/app/switches/{SWITCH_ID}").get_data(as_text=True)
    assert "Send me a test release" in page and "ada@example.org" in page
    pressed = client.post(f"{PATH.replace('/api/v1', '/app')}",
                          data={"csrf_token": csrf_token(page)})
    assert pressed.status_code == 303
    page = client.get(pressed.headers["Location"]).get_data(as_text=True)
    assert "Test release sent: 3 test mails to ada@example.org" in page
    assert "Your recipients received nothing." in page


def test_the_button_without_its_csrf_token_sends_nothing(client, world):
    client.set_cookie("jicm_session", TOKEN)
    answer = client.post(f"/app/switches/{SWITCH_ID}/test-release", data={})
    assert answer.status_code == 403
    assert world.asked("vault", "test_release") == []


def test_a_refused_test_release_is_said_on_the_settings_page(client, world):
    client.set_cookie("jicm_session", TOKEN)
    world.answer("vault", "test_release", refuse(Conflict(
        "switch holds no message yet: write one first", code="no_messages")))
    page = client.get(f"/app/switches/{SWITCH_ID}").get_data(as_text=True)
    pressed = client.post(f"/app/switches/{SWITCH_ID}/test-release",
                          data={"csrf_token": csrf_token(page)})
    page = client.get(pressed.headers["Location"]).get_data(as_text=True)
    assert "write one first" in page


def test_the_test_page_is_the_recipients_page_with_the_test_banner(client, world):
    answer = client.get(f"/r/test/{TEST_TOKEN}")
    assert answer.status_code == 200
    page = answer.get_data(as_text=True)
    assert "This is a test release" in page
    assert "Grace has received nothing" in page
    assert "4 May 2030 at 10:00 UTC" in page
    assert "The keys are in the blue box." in page
    assert world.asked("vault", "read_test_release")[0][0] == TEST_TOKEN
    assert world.asked("vault", "read_released") == []
    assert answer.headers["Cache-Control"] == "no-store"


def test_an_expired_test_link_is_a_404_page_that_says_test_links_last_24_hours(client, world):
    world.answer("vault", "read_test_release", refuse(NotFound(
        "this test link does not open any message", code="unknown_test_link")))
    answer = client.get(f"/r/test/{TEST_TOKEN}")
    assert answer.status_code == 404 and answer.mimetype == "text/html"
    assert "Test links work for 24 hours" in answer.get_data(as_text=True)
    assert client.get("/r/test/short").status_code == 404


def test_the_real_page_never_asks_the_test_question(client, world):
    world.answer("vault", "read_released", letter)
    page = client.get(f"/r/{TEST_TOKEN}").get_data(as_text=True)
    assert "This is a test release" not in page
    assert world.asked("vault", "read_test_release") == []


def test_a_test_links_token_never_reaches_the_access_log():
    line = f"GET /r/test/{TEST_TOKEN}/letter.txt HTTP/1.1"
    assert redact_url(line) == "GET /r/test/[redacted]/letter.txt HTTP/1.1"
    assert redact_url(f"GET /r/test{TEST_TOKEN} HTTP/1.1") == "GET /r/[redacted] HTTP/1.1"


def test_another_users_switch_has_no_button_and_pressing_it_is_a_404(client, world):
    client.set_cookie("jicm_session", TOKEN)
    page = client.get("/app").get_data(as_text=True)
    world.answer("scheduler", "get_switch", refuse(NotFound("there is no such switch")))
    answer = client.post(f"/app/switches/{SWITCH_ID}/test-release",
                         data={"csrf_token": csrf_token(page)})
    assert answer.status_code == 404
    assert world.asked("vault", "test_release") == []
