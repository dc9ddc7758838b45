"""Accounts: every end of a session, and every change to a profile a gateway may have
cached, is announced to every gateway worker (`AccountChanged`, a broadcast) in the same
write, from the user's outbox. And `resolve_session` says until when a session lasts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.accounts import privacy as accounts_privacy
from services.accounts.schemas import ProfileChanges
from services.accounts.sessions import session_id
from shared.errors import AuthenticationFailed
from shared.events import parse_event
from tests.unit import test_accounts as base
from tests.unit.test_accounts import log_in, sign_up
from tests.unit.test_own_account import PHONE, change

db, repo, clock, accounts = base.db, base.repo, base.clock, base.accounts


def announced(repo, user_id: str) -> list:
    """The AccountChanged events waiting in the user's outbox, oldest first."""
    events = [parse_event(e) for e in repo.users.get(user_id).get("outbox", [])]
    return [e.data for e in events if e.type == "AccountChanged"]


def test_a_resolved_session_carries_the_profile_and_the_sessions_end(accounts):
    account = sign_up(accounts)
    session = log_in(accounts)
    resolved = accounts().resolve_session(session.token)
    assert resolved.profile.id == account.id and resolved.profile.email == "ada@example.org"
    assert resolved.expires_at == session.expires_at


def test_a_session_that_ended_resolves_to_nothing(accounts):
    sign_up(accounts)
    session = log_in(accounts)
    accounts().log_out(session.token)
    with pytest.raises(AuthenticationFailed):
        accounts().resolve_session(session.token)


def test_a_log_out_announces_that_one_session_by_its_id_never_its_token(accounts, repo):
    account = sign_up(accounts)
    laptop, phone = log_in(accounts), log_in(accounts, client=PHONE)
    accounts().log_out(laptop.token)
    (changed,) = announced(repo, account.id)
    assert changed.reason == "log_out"
    assert changed.sessions == [session_id(laptop.token)]
    assert laptop.token not in str(repo.users.get(account.id))
    assert accounts().authenticate(phone.token).id == account.id


def test_logging_out_twice_announces_once(accounts, repo):
    account = sign_up(accounts)
    session = log_in(accounts)
    accounts().log_out(session.token)
    accounts().log_out(session.token)
    assert len(announced(repo, account.id)) == 1


def test_signing_out_everywhere_announces_every_session(accounts, repo):
    account = sign_up(accounts)
    log_in(accounts), log_in(accounts, client=PHONE)
    accounts().end_sessions(account.id)
    (changed,) = announced(repo, account.id)
    assert (changed.reason, changed.sessions) == ("sessions_ended", None)


def test_a_password_change_announces_every_session_in_the_same_write(accounts, repo):
    account = sign_up(accounts)
    session = log_in(accounts)
    change(accounts, session.token)
    (changed,) = announced(repo, account.id)
    assert (changed.reason, changed.sessions) == ("password_changed", None)


def test_a_time_zone_chosen_is_announced_so_no_gateway_shows_the_old_one(accounts, repo):
    account = sign_up(accounts)
    accounts().update_profile(account.id, ProfileChanges(time_zone="Europe/Paris"))
    (changed,) = announced(repo, account.id)
    assert (changed.reason, changed.sessions) == ("profile_changed", None)


def test_closing_an_account_announces_every_session_in_the_same_write(accounts, repo, clock):
    account = sign_up(accounts)
    log_in(accounts)
    assert accounts_privacy.close_account(repo, account.id, clock.now())
    (changed,) = announced(repo, account.id)
    assert (changed.reason, changed.sessions) == ("account_closed", None)
    assert repo.users.get(account.id)["status"] == "closing"


def test_an_expired_unverified_account_is_announced_with_its_expiry(accounts, repo, clock):
    account = sign_up(accounts)
    clock.advance(days=40)
    assert accounts_privacy.expire_unverified(repo, clock.now(), timedelta(days=30)) == 1
    (changed,) = announced(repo, account.id)
    assert (changed.reason, changed.sessions) == ("account_expired", None)
