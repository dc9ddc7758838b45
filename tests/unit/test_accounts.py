"""Accounts: sign-up with the age gate, log-in, sessions and their limits.

The domain logic runs on a real (embedded SQLite) repository and a frozen clock; the
service's entrypoints are exercised with nameko's worker_factory.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import pytest
from nameko.testing.services import worker_factory

from services.accounts.accounts import Accounts, age_on
from services.accounts.passwords import password_hasher
from services.accounts.schemas import ClientContext, LogIn, SignUp
from services.accounts.service import AccountsService
from services.accounts.storage import INDEXES, AccountsRepository
from services.accounts.tokens import LinkSettings
from shared.clock import FrozenClock
from shared.config import PasswordHashStrength, load_settings
from shared.errors import AuthenticationFailed, InvalidInput, RateLimited
from shared.events import parse_event
from shared.storage.provider import open_store

TODAY = datetime(2030, 6, 15, 12, 0, tzinfo=UTC)
POLICY = "2024-04-29"
PASSWORD = "correct horse battery staple"
CLIENT = ClientContext(ip="203.0.113.77", user_agent="pytest")
LINKS = LinkSettings(key=b"k" * 32, public_url="https://jic.example",
                     verify_ttl=timedelta(hours=48), reset_ttl=timedelta(hours=1))


@pytest.fixture
def db(tmp_path):
    database = open_store("accounts", INDEXES, data_dir=tmp_path)
    yield database
    database.close()


@pytest.fixture
def repo(db):
    return AccountsRepository(db)


@pytest.fixture
def clock():
    return FrozenClock(TODAY)


@pytest.fixture
def accounts(repo, clock):
    def make() -> Accounts:
        return Accounts(repo, password_hasher(PasswordHashStrength.MIN), clock.now(),
                        policy_version=POLICY, session_ttl=3600, links=LINKS)

    return make


def sign_up(accounts, email="ada@example.org", password=PASSWORD, born=date(1990, 1, 1),
            policy=POLICY, client=CLIENT):
    request = SignUp(email=email, password=password, date_of_birth=born,
                     accept_policy_version=policy)
    return accounts().sign_up(request, client)


def log_in(accounts, email="ada@example.org", password=PASSWORD, client=CLIENT):
    return accounts().log_in(LogIn(email=email, password=password), client)


# Sign-up --------------------------------------------------------------------------------


def test_it_signs_up_an_adult_and_announces_the_registration(accounts, repo):
    account = sign_up(accounts)
    stored = repo.users.get(account.id)
    assert account.email == "ada@example.org"
    assert account.email_verified is False
    assert stored["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in str(stored)
    registered, _verification_mail = stored["outbox"]
    event = parse_event(registered)
    assert event.type == "UserRegistered"
    assert event.data.user_id == account.id
    assert event.data.policy_version == POLICY
    assert event.data.client.ip_truncated == "203.0.113.0/24"


def test_a_cookie_choice_made_before_signing_up_is_named_by_its_hash_only(accounts, repo):
    token = "v" * 32
    client = ClientContext(ip="203.0.113.9", visitor=token)
    account = sign_up(accounts, client=client)
    event = parse_event(repo.users.get(account.id)["outbox"][0])
    assert event.data.visitor_consent_id == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(repo.users.get(account.id))
    other = sign_up(accounts, email="bob@example.org",
                    client=ClientContext(ip="203.0.113.9", visitor="not a token"))
    assert parse_event(repo.users.get(other.id)["outbox"][0]).data.visitor_consent_id is None


def test_it_keeps_no_date_of_birth(accounts, repo):
    account = sign_up(accounts)
    assert "1990" not in str(repo.users.get(account.id))


@pytest.mark.parametrize("born", [date(2015, 1, 1), date(2014, 6, 16)])
def test_it_refuses_anyone_under_16_and_stores_nothing_about_them(accounts, db, born):
    with pytest.raises(InvalidInput) as refused:
        sign_up(accounts, born=born)
    assert refused.value.code == "age_requirement"
    assert db.collection("users").count({}) == 0
    assert db.collection("throttle").count({}) == 0


def test_a_sixteenth_birthday_is_old_enough(accounts):
    assert sign_up(accounts, born=date(2014, 6, 15)).email_verified is False


@pytest.mark.parametrize("born", [date(2031, 1, 1), date(1890, 1, 1)])
def test_an_impossible_date_of_birth_is_refused(accounts, born):
    with pytest.raises(InvalidInput) as refused:
        sign_up(accounts, born=born)
    assert refused.value.code == "invalid_date_of_birth"


def test_age_counts_whole_years():
    assert age_on(date(2000, 2, 29), date(2016, 2, 28)) == 15
    assert age_on(date(2000, 2, 29), date(2016, 3, 1)) == 16


def test_a_taken_address_in_another_case_answers_like_a_new_one_and_stores_nothing(
    accounts, repo
):
    first = sign_up(accounts, email="Ada@Example.org")
    second = sign_up(accounts, email="ADA@example.ORG", password="another long passphrase 42")
    assert second.model_dump().keys() == first.model_dump().keys()
    assert second.id != first.id
    assert repo.users.count({}) == 1
    assert log_in(accounts, email="ada@example.org").token
    with pytest.raises(AuthenticationFailed):
        log_in(accounts, password="another long passphrase 42")


@pytest.mark.parametrize(
    "password, why",
    [
        ("short pw", "at least 12"),
        ("x" * 257, "at most 256"),
        ("password1234", "most common passwords"),
        ("qwertyuiop123", "most common passwords"),
        ("aaaaaaaaaaaaaa", "easy to guess"),
        ("password12345678", "easy to guess"),
        ("ada@example.org", "easy to guess"),
    ],
)
def test_a_weak_password_is_refused_with_the_reason(accounts, repo, password, why):
    with pytest.raises(InvalidInput, match=why) as refused:
        sign_up(accounts, password=password)
    assert refused.value.code == "weak_password"
    assert repo.users.count({}) == 0


def test_a_long_passphrase_of_64_characters_is_welcome(accounts):
    assert sign_up(accounts, password="a quiet harbour at dawn, " * 2 + "gulls & nets 1234567")


def test_the_policy_version_must_be_the_current_one(accounts):
    with pytest.raises(InvalidInput) as refused:
        sign_up(accounts, policy="2019-01-01")
    assert refused.value.code == "policy_version_mismatch"
    assert refused.value.details["current"] == POLICY


@pytest.mark.parametrize("email", ["not-an-address", "a@b", "ada@@example.org", "ada@exa mple.org"])
def test_an_invalid_address_is_refused(accounts, email):
    with pytest.raises(InvalidInput) as refused:
        sign_up(accounts, email=email)
    assert refused.value.code == "invalid_email"


def test_sign_ups_are_rate_limited_per_client(accounts):
    for n in range(20):
        sign_up(accounts, email=f"user{n}@example.org")
    with pytest.raises(RateLimited):
        sign_up(accounts, email="one-too-many@example.org")


# Log-in and sessions ------------------------------------------------------------------------


def test_log_in_opens_a_session_stored_only_as_a_hash(accounts, repo):
    sign_up(accounts)
    session = log_in(accounts)
    stored = repo.sessions.get(hashlib.sha256(session.token.encode()).hexdigest())
    assert stored is not None
    assert session.token not in str(stored)
    assert session.expires_at == TODAY + timedelta(hours=1)


def test_an_unknown_address_and_a_wrong_password_fail_alike(accounts):
    sign_up(accounts)
    with pytest.raises(AuthenticationFailed) as wrong_password:
        log_in(accounts, password="not the password at all")
    with pytest.raises(AuthenticationFailed) as unknown:
        log_in(accounts, email="nobody@example.org")
    assert wrong_password.value.to_dict() == unknown.value.to_dict()


def test_log_in_ignores_the_case_of_the_address(accounts):
    sign_up(accounts, email="ada@example.org")
    assert log_in(accounts, email="  ADA@EXAMPLE.ORG ").token


def test_repeated_failures_lock_the_account_for_a_while_even_with_the_right_password(
    accounts, clock
):
    sign_up(accounts)
    for n in range(10):
        with pytest.raises(AuthenticationFailed):
            log_in(accounts, password="wrong", client=ClientContext(ip=f"198.51.100.{n}"))
    with pytest.raises(RateLimited) as limited:
        log_in(accounts, client=ClientContext(ip="192.0.2.1"))
    assert limited.value.details["retry_after_seconds"] > 0
    clock.advance(minutes=15)
    assert log_in(accounts).token


def test_an_unknown_address_is_limited_exactly_like_a_known_one(accounts):
    for n in range(10):
        with pytest.raises(AuthenticationFailed):
            log_in(accounts, email="ghost@example.org", client=ClientContext(ip=f"10.0.0.{n}"))
    with pytest.raises(RateLimited):
        log_in(accounts, email="ghost@example.org", client=ClientContext(ip="10.0.1.1"))


def test_one_client_trying_many_accounts_is_limited(accounts):
    for n in range(30):
        with pytest.raises(AuthenticationFailed):
            log_in(accounts, email=f"target{n}@example.org")
    with pytest.raises(RateLimited):
        log_in(accounts, email="target99@example.org")


def test_a_session_token_authenticates_until_it_expires(accounts, clock):
    account = sign_up(accounts)
    token = log_in(accounts).token
    assert accounts().authenticate(token).id == account.id
    clock.advance(seconds=3600)
    with pytest.raises(AuthenticationFailed):
        accounts().authenticate(token)


@pytest.mark.parametrize("token", ["", "forged-token-value-that-is-long-enough", "A" * 43])
def test_a_forged_token_is_refused(accounts, token):
    sign_up(accounts)
    log_in(accounts)
    with pytest.raises(AuthenticationFailed):
        accounts().authenticate(token)


def test_log_out_ends_the_session_and_only_that_one(accounts):
    sign_up(accounts)
    leaving, staying = log_in(accounts).token, log_in(accounts).token
    accounts().log_out(leaving)
    with pytest.raises(AuthenticationFailed):
        accounts().authenticate(leaving)
    assert accounts().authenticate(staying)


def test_sessions_opened_before_a_password_change_end_with_it(accounts, repo, clock):
    account = sign_up(accounts)
    token = log_in(accounts).token
    clock.advance(seconds=1)
    repo.users.update_one({"_id": account.id}, {"$set": {"password_changed_at": clock.now()}})
    with pytest.raises(AuthenticationFailed):
        accounts().authenticate(token)


# The nameko entrypoints ------------------------------------------------------------------------


def test_the_service_entrypoints_speak_json(repo, clock, tmp_path):
    settings = load_settings({"JICM_ENV": "test", "JICM_PASSWORD_HASH": "min",
                              "JICM_DATA_DIR": str(tmp_path / "data")})
    service = worker_factory(AccountsService, store=repo, clock=clock, settings=settings)
    client = {"ip": "203.0.113.9", "user_agent": "pytest"}
    account = service.sign_up(
        {"email": "grace@example.org", "password": PASSWORD, "date_of_birth": "1980-12-09",
         "accept_policy_version": settings.policy_version},
        client,
    )
    session = service.log_in({"email": "grace@example.org", "password": PASSWORD}, client)
    profile = service.authenticate(session["token"])
    assert profile["id"] == account["id"]
    assert profile["created_at"].endswith("Z") or profile["created_at"].endswith("+00:00")
    service.log_out(session["token"])
    with pytest.raises(AuthenticationFailed):
        service.authenticate(session["token"])
