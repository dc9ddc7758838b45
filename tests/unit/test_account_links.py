"""Email verification and password reset in the accounts domain: links that work once,
expire, are stored only as keyed hashes, and never reveal whether an address has an account.

The domain runs on the real embedded store with a frozen clock; mails are the
`MailRequested` events the user documents carry in their outbox.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from services.accounts.accounts import Accounts
from services.accounts.passwords import password_hasher
from services.accounts.privacy import close_account
from services.accounts.schemas import (
    ClientContext,
    LogIn,
    PasswordReset,
    PasswordResetRequest,
    SignUp,
    VerifyEmail,
)
from services.accounts.storage import INDEXES, AccountsRepository
from services.accounts.tokens import LinkSettings
from shared.clock import FrozenClock
from shared.config import PasswordHashStrength
from shared.errors import (
    AuthenticationFailed,
    Conflict,
    Gone,
    InvalidInput,
    RateLimited,
    ServiceError,
)
from shared.events import parse_event
from shared.storage.provider import open_store

NOW = datetime(2030, 6, 15, 12, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a quiet harbour at dawn 42"
CLIENT = ClientContext(ip="203.0.113.77", user_agent="pytest")
LINKS = LinkSettings(key=b"k" * 32, public_url="https://jic.example",
                     verify_ttl=timedelta(hours=48), reset_ttl=timedelta(hours=1))


@pytest.fixture
def repo(tmp_path):
    db = open_store("accounts", INDEXES, data_dir=tmp_path)
    yield AccountsRepository(db)
    db.close()


@pytest.fixture
def clock():
    return FrozenClock(NOW)


@pytest.fixture
def accounts(repo, clock):
    def make() -> Accounts:
        return Accounts(repo, password_hasher(PasswordHashStrength.MIN), clock.now(),
                        policy_version="2024-04-29", session_ttl=3600, links=LINKS)

    return make


def sign_up(accounts, email="ada@example.org", client=CLIENT):
    return accounts().sign_up(SignUp(email=email, password=PASSWORD,
                                     date_of_birth=date(1990, 1, 1),
                                     accept_policy_version="2024-04-29"), client)


def mails(repo, user_id: str) -> list:
    """The mail requests waiting in the user's outbox, oldest first."""
    events = [parse_event(e) for e in repo.users.get(user_id).get("outbox", [])]
    return [e.data for e in events if e.type == "MailRequested"]


def token_of(mail) -> str:
    link = next(v for k, v in mail.context.items() if k.endswith("link"))
    return parse_qs(urlsplit(link).query)["token"][0]


def outbox_types(repo, user_id: str) -> list[str]:
    return [e["type"] for e in repo.users.get(user_id).get("outbox", [])]


def verify(accounts, token: str):
    return accounts().links.verify_email(VerifyEmail(token=token))


def reset(accounts, token: str, password: str = NEW_PASSWORD):
    return accounts().links.reset_password(PasswordReset(token=token, password=password))


def ask_reset(accounts, email="ada@example.org", client=CLIENT):
    return accounts().links.request_password_reset(PasswordResetRequest(email=email), client)


# Verification ---------------------------------------------------------------------------------


def test_sign_up_requests_the_verification_mail_in_the_same_write(accounts, repo):
    account = sign_up(accounts)
    assert outbox_types(repo, account.id) == ["UserRegistered", "MailRequested"]
    [mail] = mails(repo, account.id)
    assert mail.kind == "verification"
    assert mail.to == "ada@example.org"
    assert mail.user_id == account.id
    assert mail.context["link"].startswith("https://jic.example/verify?token=")
    assert mail.context["expires_at"] == "Monday 17 June 2030 at 12:00 UTC"


def test_link_tokens_are_stored_only_as_keyed_hashes(accounts, repo):
    account = sign_up(accounts)
    token = token_of(mails(repo, account.id)[0])
    stored = repo.tokens.find({})
    assert len(stored) == 1
    assert token not in str(stored)


def test_the_mailed_link_verifies_the_address_once_and_announces_it(accounts, repo):
    account = sign_up(accounts)
    token = token_of(mails(repo, account.id)[0])
    verified = verify(accounts, token)
    assert verified.email_verified is True
    assert repo.user(account.id)["email_verified"] is True
    [event] = [parse_event(e) for e in repo.users.get(account.id)["outbox"]
               if e["type"] == "EmailVerified"]
    assert event.data.user_id == account.id and event.data.email == "ada@example.org"
    with pytest.raises(Gone) as used:
        verify(accounts, token)
    assert used.value.code == "token_used"
    assert outbox_types(repo, account.id).count("EmailVerified") == 1


def test_an_account_closed_while_its_link_is_used_is_not_verified_and_arms_nothing(
        accounts, repo, clock, monkeypatch):
    account = sign_up(accounts)
    token = token_of(mails(repo, account.id)[0])
    read_user = repo.user

    def closed_just_after_reading(user_id):
        user = read_user(user_id)
        close_account(repo, account.id, clock.now())  # the erasure begins meanwhile
        return user

    monkeypatch.setattr(repo, "user", closed_just_after_reading)
    verify(accounts, token)
    monkeypatch.undo()
    assert repo.user(account.id)["email_verified"] is False
    assert "EmailVerified" not in outbox_types(repo, account.id)


def test_an_expired_link_is_refused_and_verifies_nothing(accounts, repo, clock):
    account = sign_up(accounts)
    token = token_of(mails(repo, account.id)[0])
    clock.advance(hours=48)
    with pytest.raises(Gone) as expired:
        verify(accounts, token)
    assert expired.value.code == "token_expired"
    assert repo.user(account.id)["email_verified"] is False


@pytest.mark.parametrize("token", ["garbage", "A" * 43, "A" * 44, "../../etc/passwd" * 3])
def test_a_token_that_is_not_ours_is_invalid(accounts, token):
    sign_up(accounts)
    with pytest.raises(ServiceError) as invalid:
        verify(accounts, token)
    assert invalid.value.code == "token_invalid"
    assert invalid.value.status == 400


def test_a_reset_link_does_not_verify_and_a_verification_link_does_not_reset(accounts, repo):
    account = sign_up(accounts)
    ask_reset(accounts)
    verification, reset_mail = mails(repo, account.id)
    with pytest.raises(ServiceError, match="not valid"):
        verify(accounts, token_of(reset_mail))
    with pytest.raises(ServiceError, match="not valid"):
        reset(accounts, token_of(verification))


def test_a_link_spent_by_a_request_that_died_before_its_effect_still_finishes_the_job(
    accounts, repo, clock
):
    account = sign_up(accounts)
    token = token_of(mails(repo, account.id)[0])
    # The first request marked the token used, then its process died.
    [document] = repo.tokens.find({})
    repo.use_token(document["_id"], "verify", clock.now())
    assert verify(accounts, token).email_verified is True
    assert repo.user(account.id)["email_verified"] is True


def test_a_new_verification_link_can_be_asked_for_a_few_times_an_hour(accounts, repo, clock):
    account = sign_up(accounts)
    for _ in range(3):
        accounts().links.resend_verification(account.id)
    with pytest.raises(RateLimited):
        accounts().links.resend_verification(account.id)
    *_, newest = mails(repo, account.id)
    verify(accounts, token_of(newest))
    with pytest.raises(Gone, match="already been used"):
        verify(accounts, token_of(mails(repo, account.id)[0]))  # older links end with it
    with pytest.raises(Conflict) as done:
        accounts().links.resend_verification(account.id)
    assert done.value.code == "already_verified"


# A sign-up with a taken address -------------------------------------------------------------


def test_a_sign_up_with_a_taken_address_mails_its_owner_instead(accounts, repo):
    owner = sign_up(accounts)
    sign_up(accounts, email="ADA@example.org", client=ClientContext(ip="198.51.100.1"))
    _, told = mails(repo, owner.id)
    assert told.kind == "account_exists"
    assert told.to == "ada@example.org"
    reset(accounts, token_of(told))
    assert accounts().log_in(LogIn(email="ada@example.org", password=NEW_PASSWORD), CLIENT)


def test_the_owner_of_a_taken_address_is_not_flooded(accounts, repo):
    owner = sign_up(accounts)
    for n in range(6):
        sign_up(accounts, client=ClientContext(ip=f"198.51.100.{n}"))
    assert len(mails(repo, owner.id)) == 1 + 3
    assert repo.users.count({}) == 1


# Password reset ------------------------------------------------------------------------------


def test_a_reset_answers_alike_for_known_and_unknown_addresses(accounts, repo):
    account = sign_up(accounts)
    known = ask_reset(accounts)
    unknown = ask_reset(accounts, email="nobody@example.org")
    assert known == unknown
    assert [m.kind for m in mails(repo, account.id)] == ["verification", "password_reset"]
    assert repo.tokens.count({"purpose": "reset"}) == 1


def test_reset_requests_are_limited_per_address_known_or_not(accounts):
    sign_up(accounts)
    for email in ("ada@example.org", "nobody@example.org"):
        for n in range(3):
            ask_reset(accounts, email=email, client=ClientContext(ip=f"10.0.0.{n}"))
        with pytest.raises(RateLimited):
            ask_reset(accounts, email=email, client=ClientContext(ip="10.0.1.1"))


def test_reset_requests_are_limited_per_client(accounts):
    for n in range(10):
        ask_reset(accounts, email=f"someone{n}@example.org")
    with pytest.raises(RateLimited):
        ask_reset(accounts, email="one-more@example.org")


def test_a_reset_sets_the_new_password_once_and_ends_every_older_session(accounts, repo, clock):
    account = sign_up(accounts)
    session = accounts().log_in(LogIn(email="ada@example.org", password=PASSWORD), CLIENT)
    ask_reset(accounts)
    token = token_of(mails(repo, account.id)[-1])
    clock.advance(seconds=1)
    reset(accounts, token)
    with pytest.raises(AuthenticationFailed):
        accounts().authenticate(session.token)
    with pytest.raises(AuthenticationFailed):
        accounts().log_in(LogIn(email="ada@example.org", password=PASSWORD), CLIENT)
    assert accounts().log_in(LogIn(email="ada@example.org", password=NEW_PASSWORD), CLIENT)
    with pytest.raises(Gone) as used:
        reset(accounts, token, password="yet another passphrase 77")
    assert used.value.code == "token_used"


def test_a_refused_password_does_not_spend_the_link(accounts, repo):
    account = sign_up(accounts)
    ask_reset(accounts)
    token = token_of(mails(repo, account.id)[-1])
    with pytest.raises(InvalidInput) as weak:
        reset(accounts, token, password="password1234")
    assert weak.value.code == "weak_password"
    assert reset(accounts, token).status == "password_changed"


def test_a_reset_link_expires_after_an_hour(accounts, repo, clock):
    account = sign_up(accounts)
    ask_reset(accounts)
    token = token_of(mails(repo, account.id)[-1])
    clock.advance(hours=1)
    with pytest.raises(Gone) as expired:
        reset(accounts, token)
    assert expired.value.code == "token_expired"


def test_a_reset_ends_every_other_reset_link(accounts, repo):
    account = sign_up(accounts)
    ask_reset(accounts)
    ask_reset(accounts)
    first, second = (token_of(m) for m in mails(repo, account.id)[1:])
    reset(accounts, second)
    with pytest.raises(Gone, match="already been used"):
        reset(accounts, first)


def test_a_reset_proves_the_address_like_a_verification(accounts, repo):
    account = sign_up(accounts)
    ask_reset(accounts)
    reset(accounts, token_of(mails(repo, account.id)[-1]))
    assert repo.user(account.id)["email_verified"] is True
    assert outbox_types(repo, account.id).count("EmailVerified") == 1


# Gateways forget what they cached ---------------------------------------------------------------


def announced_reasons(repo, user_id: str) -> list[str]:
    events = [parse_event(e) for e in repo.users.get(user_id).get("outbox", [])]
    return [e.data.reason for e in events if e.type == "AccountChanged"]


def test_a_password_reset_is_announced_to_every_gateway_with_the_address_proved(accounts, repo):
    account = sign_up(accounts)
    ask_reset(accounts)
    reset(accounts, token_of(mails(repo, account.id)[-1]))
    # Every session ends; and the reset proved the address, which a cached profile shows.
    assert announced_reasons(repo, account.id) == ["password_reset", "email_verified"]


def test_a_verified_address_is_announced_to_every_gateway(accounts, repo):
    account = sign_up(accounts)
    verify(accounts, token_of(mails(repo, account.id)[0]))
    assert announced_reasons(repo, account.id) == ["email_verified"]
