"""The gateway's side of trusted contacts, over stand-in services: the owner's API needs a
session, the contact's pages change nothing on GET, act only from their own form, show
the release's moment in words, and never a message, a recipient or a check-in button."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.openapi import build_spec
from gateway.pages import LINK_PAGE_CSP
from services.scheduler.trusted_contacts import REQUEST_TOKEN_LENGTH, ROLE_NOTICE
from shared.errors import Conflict, Gone
from tests.unit.site_fakes import NOW, SWITCH_ID, TOKEN, FakeServices, iso, refuse, site_app

INVITATION = "i" * 43
REQUEST = "r" * REQUEST_TOKEN_LENGTH
OUR_FORM = {"confirm": "yes"}


@pytest.fixture
def world():
    return FakeServices()


@pytest.fixture
def client(tmp_path, world):
    return site_app(tmp_path, world).test_client()


def asked(**changes) -> dict:
    return {"status": "asked", "owner_email": "ada@example.org",
            "grace_ends_at": iso(NOW + timedelta(days=2, hours=5)), "holds_left": 3,
            "can_hold": True, "can_confirm": False, "hold_seconds": 7 * 86_400, **changes}


def invitation(status: str = "invited") -> dict:
    return {"status": status, "owner_email": "ada@example.org", "contact_name": "Sam",
            "notice": ROLE_NOTICE, "notice_version": "trusted-contact/1"}


@pytest.mark.parametrize("method, path", [
    ("GET", f"/api/v1/switches/{SWITCH_ID}/trusted-contacts"),
    ("POST", f"/api/v1/switches/{SWITCH_ID}/trusted-contacts"),
    ("DELETE", f"/api/v1/switches/{SWITCH_ID}/trusted-contacts/c1"),
])
def test_the_owners_routes_need_a_session(client, method, path):
    response = client.open(path, method=method, json={"name": "Sam", "email": "s@example.org"})
    assert response.status_code == 401


def test_inviting_someone_passes_name_and_address_for_the_signed_in_owner(client, world):
    world.answer("scheduler", "add_trusted_contact", lambda user_id, switch_id, body: {
        "id": "c1", **body, "status": "invited", "invited_at": iso(NOW), "decided_at": None})
    response = client.post(f"/api/v1/switches/{SWITCH_ID}/trusted-contacts",
                           json={"name": "Sam", "email": "sam@example.org"},
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 201
    assert response.get_json()["status"] == "invited"
    [(_user, switch_id, body)] = world.asked("scheduler", "add_trusted_contact")
    assert (switch_id, body) == (SWITCH_ID, {"name": "Sam", "email": "sam@example.org"})


def test_an_invitation_without_a_name_is_refused_naming_the_field(client):
    response = client.post(f"/api/v1/switches/{SWITCH_ID}/trusted-contacts",
                           json={"email": "sam@example.org"},
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 422
    assert "name" in str(response.get_json()["error"])


def test_the_invitation_page_shows_the_role_and_changes_nothing(client, world):
    world.answer("scheduler", "inspect_invitation", lambda token, client: invitation())
    response = client.get(f"/i/{INVITATION}")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "ada@example.org" in page and ROLE_NOTICE in page
    assert 'value="accepted"' in page and 'value="declined"' in page
    assert response.headers["Content-Security-Policy"] == LINK_PAGE_CSP
    assert world.asked("scheduler", "decide_invitation") == []


def test_accepting_from_the_page_records_the_decision(client, world):
    world.answer("scheduler", "decide_invitation",
                 lambda token, decision, client: invitation(decision))
    response = client.post(f"/i/{INVITATION}", data={**OUR_FORM, "decision": "accepted"})
    assert response.status_code == 200
    assert "You are now a trusted contact" in response.get_data(as_text=True)
    [(token, decision, _client)] = world.asked("scheduler", "decide_invitation")
    assert (token, decision) == (INVITATION, "accepted")


@pytest.mark.parametrize("path, form, headers", [
    (f"/i/{INVITATION}", {"decision": "accepted"}, {}),
    (f"/i/{INVITATION}", {**OUR_FORM, "decision": "maybe"}, {}),
    (f"/i/{INVITATION}", {**OUR_FORM, "decision": "accepted"}, {"Sec-Fetch-Site": "cross-site"}),
    (f"/t/{REQUEST}", {"action": "hold"}, {}),
    (f"/t/{REQUEST}", {**OUR_FORM, "action": "check_in"}, {}),
    (f"/t/{REQUEST}", {**OUR_FORM, "action": "hold"}, {"Origin": "https://evil.example"}),
])
def test_a_post_that_did_not_come_from_our_form_is_refused_before_anything_is_asked(
        client, world, path, form, headers):
    response = client.post(path, data=form, headers=headers)
    assert response.status_code == 403
    assert world.calls == []


@pytest.mark.parametrize("path", ["/i/short", f"/t/{'r' * 10}", f"/t/{INVITATION}"])
def test_a_link_that_cannot_be_a_token_is_a_404_page_without_asking_anyone(client, world, path):
    for method in ("GET", "POST"):
        response = client.open(path, method=method, data=OUR_FORM)
        assert response.status_code == 404 and response.mimetype == "text/html"
    assert world.calls == []


def test_the_request_page_says_when_the_release_happens_and_offers_only_a_hold(client, world):
    world.answer("scheduler", "inspect_contact_request", lambda token, client: asked())
    page = client.get(f"/t/{REQUEST}").get_data(as_text=True)
    assert "ada@example.org missed a check-in" in page
    assert "in 2 days" in page and "7 days later" in page
    assert "They are all right: hold the release" in page
    assert "I confirm they cannot check in" not in page
    assert "check me in" not in page.lower() and "recipient" not in page.lower()


def test_the_confirm_button_appears_only_when_the_switch_waits_for_it(client, world):
    world.answer("scheduler", "inspect_contact_request",
                 lambda token, client: asked(can_confirm=True))
    page = client.get(f"/t/{REQUEST}").get_data(as_text=True)
    assert "I confirm they cannot check in" in page


def test_holding_from_the_page_says_until_when(client, world):
    world.answer("scheduler", "hold_release", lambda token, client: asked(
        status="held", holds_left=2, grace_ends_at=iso(NOW + timedelta(days=9))))
    response = client.post(f"/t/{REQUEST}", data={**OUR_FORM, "action": "hold"})
    assert response.status_code == 200
    assert "The release is held" in response.get_data(as_text=True)


@pytest.mark.parametrize("refusal, status, words", [
    (Conflict("too late", code="switch_fired"), 409, "too late to hold"),
    (Gone("used", code="link_used"), 410, "already used"),
    (Gone("checked in", code="no_longer_needed"), 410, "Nothing to do any more"),
    (Conflict("used up", code="holds_used_up"), 409, "cannot be held again"),
])
def test_a_refused_hold_is_a_page_that_says_why(client, world, refusal, status, words):
    world.answer("scheduler", "hold_release", refuse(refusal))
    response = client.post(f"/t/{REQUEST}", data={**OUR_FORM, "action": "hold"})
    assert response.status_code == status
    assert words in response.get_data(as_text=True)


def test_the_api_document_lists_the_trusted_contact_operations():
    paths = build_spec("https://jic.example")["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/switches/{switch_id}/trusted-contacts"])
    assert "delete" in paths["/api/v1/switches/{switch_id}/trusted-contacts/{contact_id}"]
    assert {"get", "post"} <= set(paths["/t/{token}"]) and {"get", "post"} <= set(
        paths["/i/{token}"])
