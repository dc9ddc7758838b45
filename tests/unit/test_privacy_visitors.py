"""A visitor's cookie choice (recorded whole the first time, changes after, kept off by a
privacy signal, filed under a hash of the token), how it joins the account at sign-up,
the receipts a person can list, choices made on the site, and the progress token that
follows an erasure after the account closed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.privacy.schemas import ClientContext, ConsentUpdate, NewPrivacyRequest
from services.privacy.visitors import VisitorConsents
from shared.errors import InvalidInput, NotFound, RateLimited
from shared.events.schemas import UserRegistered
from shared.visitors import COOKIE_CHOICE_DAYS, visitor_consent_id
from tests.unit.privacy_fixtures import NOW, PASSWORD, PrivacyWorld

TOKEN = "v" * 32
OTHER = "w" * 32
USER = "user-1"
WEB = ClientContext(ip="203.0.113.77", user_agent="Firefox/130", via="web")
GPC = ClientContext(ip="203.0.113.77", user_agent="Firefox/130", gpc=True, via="web")


@pytest.fixture
def world(tmp_path):
    world = PrivacyWorld(tmp_path)
    yield world
    world.close()


def visitors(world) -> VisitorConsents:
    return VisitorConsents(world.consents())


def stored(world, token: str = TOKEN) -> dict:
    return world.repo.visitor_consent(visitor_consent_id(token))


# A visitor's choice --------------------------------------------------------------------------


def test_a_visitors_first_answer_is_recorded_whole_even_when_it_is_no(world):
    view = visitors(world).choose(TOKEN, {"analytics": False, "marketing": False}, WEB)
    assert view.cookies.analytics is False and view.cookies.marketing is False
    assert view.expires_at == NOW + timedelta(days=COOKIE_CHOICE_DAYS)
    doc = stored(world)
    [receipt] = doc["receipts"]
    assert receipt["method"] == "web"
    assert receipt["changes"] == [{"purpose": "cookies.analytics", "choice": False},
                                  {"purpose": "cookies.marketing", "choice": False}]
    assert receipt["notice_sha256"] == world.notice.sha256
    assert receipt["ip_truncated"] == "203.0.113.0/24"


def test_the_token_itself_is_never_stored(world):
    visitors(world).choose(TOKEN, {"analytics": True, "marketing": False}, WEB)
    rows = world.db.collection("visitor_consents").find({})
    assert [row["_id"] for row in rows] == [visitor_consent_id(TOKEN)]
    assert TOKEN not in repr(rows)


def test_a_later_answer_records_only_what_changed_and_moves_the_expiry(world):
    visitors(world).choose(TOKEN, {"analytics": True, "marketing": False}, WEB)
    world.clock.advance(days=10)
    visitors(world).choose(TOKEN, {"analytics": False, "marketing": False}, WEB)
    doc = stored(world)
    assert [r["changes"] for r in doc["receipts"]][1] == [
        {"purpose": "cookies.analytics", "choice": False}]
    assert doc["expires_at"] == NOW + timedelta(days=10 + COOKIE_CHOICE_DAYS)
    visitors(world).choose(TOKEN, {"analytics": False, "marketing": False}, WEB)
    assert len(stored(world)["receipts"]) == 2, "the same answer again proves nothing new"


def test_a_privacy_signal_keeps_every_category_off_and_says_what_it_refused(world):
    view = visitors(world).choose(TOKEN, {"analytics": True, "marketing": True}, GPC)
    assert view.signal == "gpc"
    assert view.kept_off == ["cookies.analytics", "cookies.marketing"]
    assert not view.cookies.analytics and not view.cookies.marketing
    [receipt] = stored(world)["receipts"]
    assert receipt["method"] == "gpc" and receipt["gpc"] is True


def test_a_malformed_token_is_refused_naming_it(world):
    with pytest.raises(InvalidInput) as refused:
        visitors(world).choose("short", {"analytics": True, "marketing": True}, WEB)
    assert refused.value.code == "invalid_visitor_token"


def test_a_client_that_answers_without_end_is_stopped(world):
    for n in range(60):
        visitors(world).choose(f"{n:02d}" + "x" * 30, {"analytics": True, "marketing": False},
                               WEB)
    with pytest.raises(RateLimited):
        visitors(world).choose(TOKEN, {"analytics": True, "marketing": False}, WEB)


# Signing up ------------------------------------------------------------------------------------


def test_the_choice_joins_the_account_at_sign_up_with_its_receipts(world):
    visitors(world).choose(TOKEN, {"analytics": True, "marketing": False}, WEB)
    world.consents().signed_up(USER, "2024-04-29", None, None, "event-1", NOW)
    assert visitors(world).adopt(USER, visitor_consent_id(TOKEN)) is True
    consent = world.repo.consent(USER)
    assert consent["cookies"] == {"analytics": True, "marketing": False}
    assert [r["method"] for r in consent["receipts"]] == ["signup", "web"]
    assert stored(world) is None, "the visitor's record is gone once it joined the account"
    [event] = [e for e in world.outbox("consents", USER) if e.type == "ConsentChanged"]
    assert event.data.cookies.analytics is True and event.data.source == "web"


def test_adopting_twice_adds_nothing(world):
    visitors(world).choose(TOKEN, {"analytics": True, "marketing": False}, WEB)
    assert visitors(world).adopt(USER, visitor_consent_id(TOKEN)) is True
    assert visitors(world).adopt(USER, visitor_consent_id(TOKEN)) is False
    assert len(world.repo.consent(USER)["receipts"]) == 1


def test_an_expired_or_unknown_choice_joins_nothing(world):
    visitors(world).choose(TOKEN, {"analytics": True, "marketing": False}, WEB)
    world.clock.advance(days=COOKIE_CHOICE_DAYS, seconds=1)
    assert visitors(world).adopt(USER, visitor_consent_id(TOKEN)) is False
    assert visitors(world).adopt(USER, visitor_consent_id(OTHER)) is False
    assert world.repo.consent(USER) is None


def test_user_registered_names_the_visitors_choice_only_as_a_hash():
    event = UserRegistered(user_id=USER, email="ada@example.org", policy_version="2024-04-29",
                           visitor_consent_id=visitor_consent_id(TOKEN))
    assert TOKEN not in event.model_dump_json()
    with pytest.raises(ValueError):
        UserRegistered(user_id=USER, email="ada@example.org", policy_version="2024-04-29",
                       visitor_consent_id=TOKEN)


# Receipts and the web site -----------------------------------------------------------------------


def test_a_choice_made_on_the_site_is_a_receipt_of_method_web(world):
    world.consents().change(USER, ConsentUpdate.model_validate({"marketing": {"email": True}}),
                            WEB)
    [receipt] = world.repo.consent(USER)["receipts"]
    assert receipt["method"] == "web"


def test_receipts_are_listed_oldest_first_exactly_as_recorded(world):
    update = ConsentUpdate.model_validate
    world.consents().change(USER, update({"marketing": {"email": True}}), WEB)
    world.clock.advance(minutes=1)
    world.consents().change(USER, update({"marketing": {"email": False}}), WEB)
    listed = world.consents().receipts(USER).receipts
    assert [r.changes[0].choice for r in listed] == [True, False]
    assert listed[0].at < listed[1].at and listed[0].ip_truncated == "203.0.113.0/24"
    assert world.consents().receipts("nobody").receipts == []


# Following an erasure after the account closed -------------------------------------------


def erase(world, user: str = USER):
    world.accounts.passwords[user] = PASSWORD
    request = NewPrivacyRequest(type="erasure", password=PASSWORD)
    return world.requests().create(user, "ada@example.org", request, WEB)


def test_an_erasure_hands_out_its_progress_token_once_and_keeps_only_its_hash(world):
    created = erase(world)
    assert created.progress_token and len(created.progress_token) >= 40
    doc = world.repo.request(created.id)
    assert created.progress_token not in repr(doc)
    again = erase(world)
    assert again.id == created.id and again.progress_token is None


def test_the_progress_token_shows_the_erasure_to_the_end_and_nothing_else(world):
    created = erase(world)
    progress = world.requests().progress(created.id, created.progress_token, WEB)
    assert progress.status == "pending" and "vault" in progress.services
    for wrong in ("x" * 43, ""):
        with pytest.raises(NotFound):
            world.requests().progress(created.id, wrong, WEB)
    export = world.requests().create("user-2", "bob@example.org",
                                     NewPrivacyRequest(type="export"), WEB)
    with pytest.raises(NotFound):
        world.requests().progress(export.id, created.progress_token, WEB)
    assert export.progress_token is None


def test_an_erasure_nobody_asked_for_has_no_progress_token(world):
    doc = world.requests().start_erasure(USER, "ada@example.org", reason="retention",
                                         requested_by="retention")
    assert doc.progress_token_hash is None
    assert "progress_token_hash" not in world.repo.requests.get(doc.id)
