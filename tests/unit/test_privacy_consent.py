"""Consent: opt-in by default, a receipt for every change, GPC and DNT honoured on reads and
writes, the policy accepted at sign-up and the unsubscribe link recorded once each."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from services.privacy.schemas import ClientContext, ConsentUpdate
from shared.errors import RateLimited
from tests.unit.privacy_fixtures import NOW, PrivacyWorld

USER = "user-1"
WEB = ClientContext(ip="203.0.113.77", user_agent="Firefox/130")
GPC = ClientContext(ip="203.0.113.77", user_agent="Firefox/130", gpc=True)
DNT = ClientContext(ip="2001:db8:1:2::7", user_agent="Safari", dnt=True)


@pytest.fixture
def world(tmp_path):
    world = PrivacyWorld(tmp_path)
    yield world
    world.close()


def update(**groups) -> ConsentUpdate:
    return ConsentUpdate.model_validate(groups)


def receipts(world) -> list[dict]:
    return world.repo.consent(USER)["receipts"]


def test_everything_is_off_until_the_person_says_yes(world):
    view = world.consents().view(USER, WEB)
    assert not any(view.marketing.model_dump().values())
    assert not any(view.cookies.model_dump().values())
    assert view.policy_version is None and view.sale_and_sharing == "opted_out"


def test_a_change_is_stored_with_its_receipt_and_announced(world):
    view = world.consents().change(USER, update(marketing={"email": True, "sms": True}), WEB)
    assert view.marketing.email and view.marketing.sms and not view.marketing.postal
    [receipt] = receipts(world)
    assert receipt["method"] == "api"
    assert receipt["changes"] == [{"purpose": "marketing.email", "choice": True},
                                  {"purpose": "marketing.sms", "choice": True}]
    assert receipt["notice_version"] == "2024-04-29"
    assert receipt["notice_sha256"] == world.notice.sha256
    assert receipt["ip_truncated"] == "203.0.113.0/24", "never the full address"
    assert receipt["user_agent"] == "Firefox/130" and receipt["at"] == NOW
    assert receipt["gpc"] is False and receipt["dnt"] is False
    [event] = world.outbox("consents", USER)
    assert event.type == "ConsentChanged"
    assert event.data.marketing.email is True and event.data.source == "api"


def test_choices_left_out_keep_their_value_and_no_change_leaves_no_receipt(world):
    world.consents().change(USER, update(marketing={"email": True}), WEB)
    world.consents().change(USER, update(cookies={"analytics": True}), WEB)
    same = world.consents().change(USER, update(marketing={"email": True}), WEB)
    assert same.marketing.email and same.cookies.analytics
    assert len(receipts(world)) == 2
    assert len(world.outbox("consents", USER)) == 2


def test_withdrawing_is_one_request_like_giving(world):
    world.consents().change(USER, update(marketing={"email": True, "postal": True}), WEB)
    view = world.consents().change(USER, update(marketing={"email": False, "postal": False}),
                                   WEB)
    assert not view.marketing.email and not view.marketing.postal
    assert [c["choice"] for c in receipts(world)[-1]["changes"]] == [False, False]


def test_gpc_on_a_write_keeps_marketing_and_cookies_off_and_says_so(world):
    world.consents().change(USER, update(marketing={"email": True}, cookies={"marketing": True}),
                            WEB)
    view = world.consents().change(USER, update(marketing={"phone": True}), GPC)
    assert view.signal == "gpc" and view.kept_off == ["marketing.phone"]
    assert not any(view.marketing.model_dump().values())
    assert not any(view.cookies.model_dump().values())
    receipt = receipts(world)[-1]
    assert receipt["method"] == "gpc" and receipt["gpc"] is True and receipt["dnt"] is False
    assert receipt["changes"] == [{"purpose": "cookies.marketing", "choice": False},
                                  {"purpose": "marketing.email", "choice": False}]
    assert world.outbox("consents", USER)[-1].data.gpc is True


def test_gpc_on_a_read_turns_off_what_was_on_once(world):
    world.consents().change(USER, update(marketing={"email": True}), WEB)
    seen = world.consents().view(USER, GPC)
    assert seen.signal == "gpc" and seen.marketing.email is False
    again = world.consents().view(USER, GPC)
    assert again.marketing.email is False
    assert [r["method"] for r in receipts(world)] == ["api", "gpc"], "a second read changes nothing"


def test_do_not_track_is_honoured_like_gpc(world):
    world.consents().change(USER, update(cookies={"analytics": True}), WEB)
    view = world.consents().change(USER, update(cookies={"analytics": True}), DNT)
    assert view.signal == "dnt" and view.cookies.analytics is False
    assert receipts(world)[-1]["method"] == "dnt"
    assert receipts(world)[-1]["ip_truncated"] == "2001:db8:1::/48"


def test_a_signal_with_nothing_to_turn_off_writes_nothing(world):
    view = world.consents().view(USER, GPC)
    assert view.signal == "gpc"
    assert world.repo.consent(USER) is None


def test_the_policy_accepted_at_sign_up_is_recorded_once_per_event(world):
    event_id = str(uuid.uuid4())
    assert world.consents().signed_up(USER, "2024-04-29", "198.51.100.0/24", "curl/8",
                                      event_id, NOW)
    assert not world.consents().signed_up(USER, "2024-04-29", "198.51.100.0/24", "curl/8",
                                          event_id, NOW)
    [receipt] = receipts(world)
    assert receipt["method"] == "signup"
    assert receipt["changes"] == [{"purpose": "policy", "choice": "2024-04-29"}]
    assert receipt["notice_sha256"] == world.notice.sha256
    view = world.consents().view(USER, WEB)
    assert view.policy_version == "2024-04-29" and view.policy_accepted_at == NOW
    assert not any(view.marketing.model_dump().values()), "accepting the policy is no opt-in"


def test_the_unsubscribe_link_turns_marketing_mail_off_with_its_receipt_once(world):
    world.consents().change(USER, update(marketing={"email": True, "sms": True}), WEB)
    event_id = str(uuid.uuid4())
    assert world.consents().unsubscribed(USER, "one_click", event_id, NOW)
    assert not world.consents().unsubscribed(USER, "one_click", event_id, NOW)
    view = world.consents().view(USER, WEB)
    assert view.marketing.email is False and view.marketing.sms is True
    receipt = receipts(world)[-1]
    assert (receipt["method"], receipt["source"]) == ("unsubscribe_link", "one_click")
    assert world.outbox("consents", USER)[-1].data.source == "unsubscribe_link"


def test_consent_changes_are_rate_limited(world):
    for n in range(60):
        world.consents().change(USER, update(marketing={"email": n % 2 == 0}), WEB)
    with pytest.raises(RateLimited):
        world.consents().change(USER, update(marketing={"email": True}), WEB)


@pytest.mark.parametrize("body", [
    {},
    {"marketing": {}},
    {"marketing": {"email": "true"}},
    {"marketing": {"email": 1}},
    {"marketing": {"fax": True}},
    {"cookies": {"essential": False}},
    {"marketing": None},
    {"gpc": True},
])
def test_a_malformed_change_is_refused(body):
    with pytest.raises(ValidationError):
        ConsentUpdate.model_validate(body)
