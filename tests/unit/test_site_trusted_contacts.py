"""The trusted contacts' section of the switch settings page, over stand-in services: the
contacts with their status in words, inviting and removing with CSRF, the refusal beside
the field, and the hold and confirmation settings in days and hours."""

from __future__ import annotations

import pytest

from shared.errors import Conflict, PaymentRequired
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

PAGE = f"/app/switches/{SWITCH_ID}"


@pytest.fixture
def world():
    return FakeServices()


@pytest.fixture
def signed_in(tmp_path, world):
    client = site_app(tmp_path, world).test_client()
    client.set_cookie("jicm_session", TOKEN)
    return client


def contact(status: str, name: str = "Sam Rivera") -> dict:
    return {"id": f"c-{status}", "name": name, "email": f"{status}@example.org",
            "status": status, "invited_at": iso(NOW), "decided_at": None}


def token(client) -> str:
    return csrf_token(client.get(PAGE).get_data(as_text=True))


def test_the_settings_page_lists_the_contacts_with_their_status_in_words(signed_in, world):
    world.contacts = [contact("invited", "Ines"), contact("accepted", "Sam"),
                      contact("declined", "Noah")]
    page = signed_in.get(PAGE).get_data(as_text=True)
    assert "Trusted contacts" in page
    assert "invited, has not answered yet" in page and "accepted" in page and "declined" in page
    assert "never see your messages" in page
    assert "moves 7 days later each time" in page
    assert 'name="hold_days" type="number" min="0" inputmode="numeric" value="7"' in page


def test_inviting_someone_asks_the_scheduler_and_says_what_happens(signed_in, world):
    world.answer("scheduler", "add_trusted_contact",
                 lambda user_id, switch_id, body: contact("invited", body["name"]))
    answer = signed_in.post(f"{PAGE}/trusted-contacts", data={
        "csrf_token": token(signed_in), "name": "Sam Rivera", "email": "sam@example.org"})
    assert answer.status_code == 303
    [(_user, switch_id, body)] = world.asked("scheduler", "add_trusted_contact")
    assert (switch_id, body) == (SWITCH_ID, {"name": "Sam Rivera", "email": "sam@example.org"})
    assert "We mailed Sam Rivera an invitation" in signed_in.get(PAGE).get_data(as_text=True)


def test_an_invitation_without_csrf_is_refused(signed_in, world):
    answer = signed_in.post(f"{PAGE}/trusted-contacts",
                            data={"name": "Sam", "email": "sam@example.org"})
    assert answer.status_code in (400, 403)
    assert world.asked("scheduler", "add_trusted_contact") == []


def test_a_missing_address_is_said_beside_the_field(signed_in, world):
    answer = signed_in.post(f"{PAGE}/trusted-contacts",
                            data={"csrf_token": token(signed_in), "name": "Sam", "email": ""})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 422
    assert 'id="contact_email-error"' in page and 'value="Sam"' in page
    assert world.asked("scheduler", "add_trusted_contact") == []


@pytest.mark.parametrize("refusal, words", [
    (PaymentRequired("this switch already has 3 trusted contacts, the most your plan allows"),
     "the most your plan allows"),
    (Conflict("this person is already a trusted contact of this switch",
              code="trusted_contact_exists", details={"field": "email"}),
     "already a trusted contact"),
])
def test_the_schedulers_refusal_is_shown_on_the_page(signed_in, world, refusal, words):
    world.answer("scheduler", "add_trusted_contact", refuse(refusal))
    answer = signed_in.post(f"{PAGE}/trusted-contacts", data={
        "csrf_token": token(signed_in), "name": "Sam", "email": "sam@example.org"})
    assert answer.status_code == refusal.status
    assert words in answer.get_data(as_text=True)


def test_removing_a_contact_asks_the_scheduler(signed_in, world):
    world.contacts = [contact("accepted")]
    world.answer("scheduler", "remove_trusted_contact", lambda *args: None)
    answer = signed_in.post(f"{PAGE}/trusted-contacts/c-accepted/remove",
                            data={"csrf_token": token(signed_in)})
    assert answer.status_code == 303
    assert world.asked("scheduler", "remove_trusted_contact")[0][1:] == (SWITCH_ID,
                                                                         "c-accepted")


def test_the_hold_and_confirmation_settings_are_saved_in_seconds(signed_in, world):
    world.answer("scheduler", "update_switch", lambda user_id, switch_id, changes: {
        **world.switches[0], **changes})
    answer = signed_in.post(f"{PAGE}/trusted-contacts/settings", data={
        "csrf_token": token(signed_in), "hold_days": "3", "hold_hours": "12",
        "confirmation": "required", "confirmation_wait_days": "10",
        "confirmation_wait_hours": "0"})
    assert answer.status_code == 303
    [(_user, _switch, changes)] = world.asked("scheduler", "update_switch")
    assert changes == {"hold_seconds": 3 * 86_400 + 12 * 3600, "confirmation": "required",
                       "confirmation_wait_seconds": 10 * 86_400}
