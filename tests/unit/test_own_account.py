"""Accounts: what a signed-in owner does to their own account. The list of open sessions,
signing out everywhere, changing the password (the current one asked, every session
ended, a fresh one for the device that asked) and the time zone the site shows times in.
"""

from __future__ import annotations

import pytest
from nameko.testing.services import worker_factory
from pydantic import ValidationError

from services.accounts.accounts import LOGIN_FAILURES_PER_ACCOUNT
from services.accounts.schemas import ClientContext, PasswordChange, ProfileChanges
from services.accounts.service import AccountsService
from shared.config import load_settings
from shared.errors import AuthenticationFailed, Forbidden, InvalidInput, RateLimited
from tests.unit import test_accounts as base
from tests.unit.test_accounts import CLIENT, PASSWORD, log_in, sign_up

# The accounts tests' fixtures: a real embedded store, a frozen clock.
db, repo, clock, accounts = base.db, base.repo, base.clock, base.accounts

NEW_PASSWORD = "a completely different passphrase"
PHONE = ClientContext(ip="198.51.100.4", user_agent="phone")


def change(accounts, token, current=PASSWORD, new=NEW_PASSWORD, client=CLIENT):
    return accounts().change_password(
        token, PasswordChange(current_password=current, new_password=new), client)


def test_the_session_list_marks_the_current_one_and_shows_no_token(accounts):
    sign_up(accounts)
    laptop = log_in(accounts)
    phone = log_in(accounts, client=PHONE)
    sessions = accounts().list_sessions(phone.token).sessions
    assert [s.user_agent for s in sessions] == ["pytest", "phone"]
    assert [s.current for s in sessions] == [False, True]
    assert sessions[1].ip_truncated == "198.51.100.0/24"
    assert laptop.token not in str(sessions) and phone.token not in str(sessions)


def test_expired_sessions_are_not_listed(accounts, clock):
    sign_up(accounts)
    old = log_in(accounts)
    clock.advance(minutes=50)
    fresh = log_in(accounts)
    clock.advance(minutes=20)  # the first one (1 h TTL) has expired
    assert len(accounts().list_sessions(fresh.token).sessions) == 1
    with pytest.raises(AuthenticationFailed):
        accounts().list_sessions(old.token)


def test_signing_out_everywhere_ends_every_session(accounts):
    account = sign_up(accounts)
    first, second = log_in(accounts), log_in(accounts, client=PHONE)
    assert accounts().end_sessions(account.id).ended == 2
    for session in (first, second):
        with pytest.raises(AuthenticationFailed):
            accounts().authenticate(session.token)


def test_changing_the_password_ends_the_other_sessions_and_opens_a_new_one(accounts, clock):
    sign_up(accounts)
    here, elsewhere = log_in(accounts), log_in(accounts, client=PHONE)
    clock.advance(5)
    renewed = change(accounts, here.token)
    for old in (here, elsewhere):
        with pytest.raises(AuthenticationFailed):
            accounts().authenticate(old.token)
    assert accounts().authenticate(renewed.token).email == "ada@example.org"
    assert log_in(accounts, password=NEW_PASSWORD).token
    with pytest.raises(AuthenticationFailed):
        log_in(accounts, password=PASSWORD)


def test_a_wrong_current_password_changes_nothing_and_counts_as_a_failed_log_in(accounts, repo):
    sign_up(accounts)
    session = log_in(accounts)
    with pytest.raises(Forbidden) as refused:
        change(accounts, session.token, current="not my password at all")
    assert refused.value.code == "wrong_password"
    assert refused.value.details == {"field": "current_password"}
    assert accounts().authenticate(session.token)
    assert log_in(accounts).token
    for _ in range(LOGIN_FAILURES_PER_ACCOUNT.count - 1):
        with pytest.raises(Forbidden):
            change(accounts, session.token, current="another wrong guess")
    with pytest.raises(RateLimited):
        change(accounts, session.token)


def test_a_weak_new_password_is_refused_naming_the_new_password_field(accounts):
    sign_up(accounts)
    session = log_in(accounts)
    with pytest.raises(InvalidInput) as refused:
        change(accounts, session.token, new="password1234")
    assert refused.value.details == {"field": "new_password"}
    assert accounts().authenticate(session.token)


def test_the_time_zone_is_stored_on_the_profile(accounts):
    account = sign_up(accounts)
    session = log_in(accounts)
    assert accounts().authenticate(session.token).time_zone is None
    accounts().update_profile(account.id, ProfileChanges(time_zone="Europe/Paris"))
    assert accounts().authenticate(session.token).time_zone == "Europe/Paris"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "CET", "../../etc/passwd", "europe/paris"])
def test_only_iana_place_names_are_time_zones(zone):
    with pytest.raises(ValidationError):
        ProfileChanges(time_zone=zone)


def test_the_new_entrypoints_speak_json(repo, clock, tmp_path):
    settings = load_settings({"JICM_ENV": "test", "JICM_PASSWORD_HASH": "min",
                              "JICM_DATA_DIR": str(tmp_path / "data")})
    service = worker_factory(AccountsService, store=repo, clock=clock, settings=settings)
    client = {"ip": "203.0.113.9", "user_agent": "pytest"}
    account = service.sign_up(
        {"email": "grace@example.org", "password": PASSWORD, "date_of_birth": "1980-12-09",
         "accept_policy_version": settings.policy_version}, client)
    session = service.log_in({"email": "grace@example.org", "password": PASSWORD}, client)
    assert service.list_sessions(session["token"])["sessions"][0]["current"] is True
    profile = service.update_profile(account["id"], {"time_zone": "America/New_York"})
    assert profile["time_zone"] == "America/New_York"
    renewed = service.change_password(
        session["token"], {"current_password": PASSWORD, "new_password": NEW_PASSWORD}, client)
    assert service.authenticate(renewed["token"])["id"] == account["id"]
    assert service.end_sessions(account["id"]) == {"ended": 1}
