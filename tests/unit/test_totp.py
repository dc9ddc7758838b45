"""Two-factor sign-in: set-up, the second step of a log-in, recovery codes, turning it off.

The rules run on a real (embedded SQLite) repository, real argon2id and real sealing, with
a frozen clock that pyotp reads through `for_time`: the codes are the ones an
authenticator app would show at that moment.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest

from services.accounts import privacy
from services.accounts.accounts import LOGIN_FAILURES_PER_ACCOUNT, Accounts
from services.accounts.passwords import password_hasher
from services.accounts.schemas import (
    ClientContext,
    LogIn,
    PasswordReset,
    PasswordResetRequest,
    SecondStep,
    SignUp,
    TotpConfirm,
    TotpDisable,
)
from services.accounts.storage import INDEXES, AccountsRepository
from services.accounts.tokens import LinkSettings
from services.accounts.totp import (
    CHALLENGE_TTL,
    WRONG_CODES_PER_ACCOUNT,
    WRONG_CODES_PER_CHALLENGE,
    TotpKeys,
    normalized_recovery_code,
)
from shared.clock import FrozenClock
from shared.config import PasswordHashStrength
from shared.errors import AuthenticationFailed, Conflict, Forbidden, RateLimited, ServiceError
from shared.events import parse_event
from shared.storage.provider import open_store

NOW = datetime(2030, 6, 15, 12, 0, 10, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase of mine"
CLIENT = ClientContext(ip="203.0.113.77", user_agent="pytest")
LINKS = LinkSettings(key=b"k" * 32, public_url="https://jic.example",
                     verify_ttl=timedelta(hours=48), reset_ttl=timedelta(hours=1))
KEYS = TotpKeys(seal=b"s" * 32, hash=b"h" * 32)


@pytest.fixture
def repo(tmp_path):
    database = open_store("accounts", INDEXES, data_dir=tmp_path)
    yield AccountsRepository(database)
    database.close()


@pytest.fixture
def clock():
    return FrozenClock(NOW)


@pytest.fixture
def accounts(repo, clock):
    def make() -> Accounts:
        return Accounts(repo, password_hasher(PasswordHashStrength.MIN), clock.now(),
                        policy_version="2024-04-29", session_ttl=3600, links=LINKS,
                        totp_keys=KEYS)

    return make


@pytest.fixture
def ada(accounts):
    account = accounts().sign_up(SignUp(email="ada@example.org", password=PASSWORD,
                                        date_of_birth=date(1990, 1, 1),
                                        accept_policy_version="2024-04-29"), CLIENT)
    return account.id


def code_at(secret: str, moment: datetime) -> str:
    return pyotp.TOTP(secret).at(moment)


def turn_on(accounts, user_id: str, clock) -> tuple[str, list[str]]:
    """Set two-factor sign-in up as a person would; (secret, recovery codes)."""
    setup = accounts().start_totp(user_id)
    confirmed = accounts().confirm_totp(user_id, TotpConfirm(code=code_at(setup.secret,
                                                                           clock.now())))
    return setup.secret, confirmed.recovery_codes


def challenge(accounts, password: str = PASSWORD) -> str:
    answer = accounts().log_in(LogIn(email="ada@example.org", password=password), CLIENT)
    assert answer.token is None and answer.second_step == "totp"
    return answer.challenge


def second_step(accounts, challenge_token: str, **proof: str):
    return accounts().log_in_second_step(SecondStep(challenge=challenge_token, **proof), CLIENT)


# Set-up -----------------------------------------------------------------------------------


def test_starting_the_set_up_shows_the_secret_three_ways_and_turns_nothing_on(accounts, ada):
    setup = accounts().start_totp(ada)
    uri = urlsplit(setup.otpauth_uri)
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    assert parse_qs(uri.query)["secret"] == [setup.secret]
    assert parse_qs(uri.query)["issuer"] == ["Just in Case"]
    assert "ada%40example.org" in uri.path or "ada@example.org" in uri.path
    assert setup.qr_svg.startswith("<svg") and "<path" in setup.qr_svg
    # A standalone document: without its namespace an <img> would show nothing.
    assert 'xmlns="http://www.w3.org/2000/svg"' in setup.qr_svg
    assert accounts().totp_status(ada).enabled is False
    answer = accounts().log_in(LogIn(email="ada@example.org", password=PASSWORD), CLIENT)
    assert answer.token is not None


def test_the_secret_is_never_stored_readable(accounts, ada, repo, clock):
    secret, codes = turn_on(accounts, ada, clock)
    stored = repo.users.get(ada)
    assert secret not in repr(stored)
    assert secret.encode() not in bytes(stored["totp_secret"])
    assert KEYS.open_secret(ada, stored["totp_secret"]) == secret
    for code in codes:
        assert code not in repr(repo.recovery_codes.find({}))


def test_a_sealed_secret_copied_to_another_account_does_not_open(accounts, ada, repo, clock):
    turn_on(accounts, ada, clock)
    sealed = repo.users.get(ada)["totp_secret"]
    with pytest.raises(Exception, match="does not open"):
        KEYS.open_secret("someone-else", sealed)


def test_a_wrong_first_code_turns_nothing_on(accounts, ada, clock):
    setup = accounts().start_totp(ada)
    wrong = code_at(setup.secret, clock.now() + timedelta(minutes=10))
    with pytest.raises(ServiceError) as refused:
        accounts().confirm_totp(ada, TotpConfirm(code=wrong))
    assert refused.value.status == 400
    assert refused.value.code == "wrong_code"
    assert refused.value.details == {"field": "code"}
    assert accounts().totp_status(ada).enabled is False


def test_confirming_with_a_first_code_turns_it_on_with_ten_recovery_codes(accounts, ada, clock):
    _, codes = turn_on(accounts, ada, clock)
    assert len(codes) == 10 and len(set(codes)) == 10
    status = accounts().totp_status(ada)
    assert status.enabled is True
    assert status.enabled_at == clock.now()
    assert status.recovery_codes_left == 10


def test_confirming_without_a_set_up_under_way_is_refused(accounts, ada):
    with pytest.raises(Conflict) as refused:
        accounts().confirm_totp(ada, TotpConfirm(code="123456"))
    assert refused.value.code == "totp_not_started"


def test_it_cannot_be_set_up_twice_without_turning_it_off(accounts, ada, clock):
    turn_on(accounts, ada, clock)
    with pytest.raises(Conflict):
        accounts().start_totp(ada)


# The second step of a log-in ---------------------------------------------------------------


def test_a_password_alone_no_longer_opens_a_session(accounts, ada, clock, repo):
    turn_on(accounts, ada, clock)
    answer = accounts().log_in(LogIn(email="ada@example.org", password=PASSWORD), CLIENT)
    assert answer.token is None
    assert answer.expires_at == clock.now() + CHALLENGE_TTL
    assert repo.sessions.find({}) == []
    # The challenge is stored under a keyed hash only.
    assert answer.challenge not in repr(repo.second_steps.find({}))


def test_the_right_code_opens_a_session(accounts, ada, clock):
    secret, _ = turn_on(accounts, ada, clock)
    clock.advance(60)
    session = second_step(accounts, challenge(accounts), code=code_at(secret, clock.now()))
    assert accounts().authenticate(session.token).id == ada


def test_a_code_from_the_step_before_still_works(accounts, ada, clock):
    secret, _ = turn_on(accounts, ada, clock)
    clock.advance(90)
    session = second_step(accounts, challenge(accounts),
                          code=code_at(secret, clock.now() - timedelta(seconds=30)))
    assert session.token


def test_a_wrong_code_is_refused_without_saying_more(accounts, ada, clock):
    secret, _ = turn_on(accounts, ada, clock)
    clock.advance(60)
    with pytest.raises(AuthenticationFailed) as refused:
        second_step(accounts, challenge(accounts),
                    code=code_at(secret, clock.now() + timedelta(minutes=5)))
    assert refused.value.code == "wrong_code"
    assert refused.value.message == "the code is not right, or was already used"


def test_a_code_is_accepted_only_once(accounts, ada, clock):
    secret, _ = turn_on(accounts, ada, clock)
    clock.advance(60)
    code = code_at(secret, clock.now())
    second_step(accounts, challenge(accounts), code=code)
    clock.advance(5)  # still inside the code's window
    with pytest.raises(AuthenticationFailed) as refused:
        second_step(accounts, challenge(accounts), code=code)
    assert refused.value.code == "wrong_code"


def test_the_code_that_confirmed_the_set_up_cannot_log_in(accounts, ada, clock):
    setup = accounts().start_totp(ada)
    code = code_at(setup.secret, clock.now())
    accounts().confirm_totp(ada, TotpConfirm(code=code))
    with pytest.raises(AuthenticationFailed):
        second_step(accounts, challenge(accounts), code=code)


def test_a_challenge_opens_one_session_only(accounts, ada, clock):
    secret, _ = turn_on(accounts, ada, clock)
    clock.advance(60)
    token = challenge(accounts)
    second_step(accounts, token, code=code_at(secret, clock.now()))
    clock.advance(30)
    with pytest.raises(AuthenticationFailed) as refused:
        second_step(accounts, token, code=code_at(secret, clock.now()))
    assert refused.value.code == "challenge_invalid"


def test_a_challenge_expires(accounts, ada, clock):
    secret, _ = turn_on(accounts, ada, clock)
    token = challenge(accounts)
    clock.advance(CHALLENGE_TTL.total_seconds() + 1)
    with pytest.raises(AuthenticationFailed) as refused:
        second_step(accounts, token, code=code_at(secret, clock.now()))
    assert refused.value.code == "challenge_invalid"


def test_a_made_up_challenge_is_refused(accounts, ada, clock):
    turn_on(accounts, ada, clock)
    with pytest.raises(AuthenticationFailed) as refused:
        second_step(accounts, "not-a-challenge", code="123456")
    assert refused.value.code == "challenge_invalid"


def test_a_wrong_password_still_fails_as_before(accounts, ada, clock):
    turn_on(accounts, ada, clock)
    with pytest.raises(AuthenticationFailed) as refused:
        accounts().log_in(LogIn(email="ada@example.org", password="not the password!"),
                          CLIENT)
    assert refused.value.code == "invalid_credentials"


def test_guesses_are_limited_per_challenge(accounts, ada, clock):
    secret, _ = turn_on(accounts, ada, clock)
    token = challenge(accounts)
    wrong = code_at(secret, clock.now() + timedelta(minutes=5))
    for _ in range(WRONG_CODES_PER_CHALLENGE.count):
        with pytest.raises(AuthenticationFailed):
            second_step(accounts, token, code=wrong)
    with pytest.raises(RateLimited):
        second_step(accounts, token, code=code_at(secret, clock.now()))


def test_guesses_are_limited_per_account_across_challenges(accounts, ada, clock):
    secret, _ = turn_on(accounts, ada, clock)
    wrong = code_at(secret, clock.now() + timedelta(minutes=5))
    for _ in range(WRONG_CODES_PER_ACCOUNT.count):
        with pytest.raises(AuthenticationFailed):
            second_step(accounts, challenge(accounts), code=wrong)
    with pytest.raises(RateLimited):
        second_step(accounts, challenge(accounts), code=code_at(secret, clock.now()))


# Recovery codes -----------------------------------------------------------------------------


def test_a_recovery_code_logs_in_once(accounts, ada, clock):
    _, codes = turn_on(accounts, ada, clock)
    session = second_step(accounts, challenge(accounts), recovery_code=codes[3])
    assert accounts().authenticate(session.token).id == ada
    assert accounts().totp_status(ada).recovery_codes_left == 9
    with pytest.raises(AuthenticationFailed) as refused:
        second_step(accounts, challenge(accounts), recovery_code=codes[3])
    assert refused.value.code == "wrong_code"


def test_a_recovery_code_may_be_typed_in_capitals_without_dashes(accounts, ada, clock):
    _, codes = turn_on(accounts, ada, clock)
    typed = codes[0].replace("-", " ").upper()
    assert normalized_recovery_code(typed) == codes[0]
    assert second_step(accounts, challenge(accounts), recovery_code=typed).token


def test_recovery_codes_are_stored_hashed(accounts, ada, clock, repo):
    _, codes = turn_on(accounts, ada, clock)
    stored = repo.recovery_codes.find({"user_id": ada})
    assert len(stored) == 10
    assert not {code for code in codes} & {doc["_id"] for doc in stored}


def test_another_accounts_recovery_code_does_not_work(accounts, ada, clock):
    _, codes = turn_on(accounts, ada, clock)
    grace = accounts().sign_up(SignUp(email="grace@example.org", password=PASSWORD,
                                      date_of_birth=date(1990, 1, 1),
                                      accept_policy_version="2024-04-29"), CLIENT)
    turn_on(accounts, grace.id, clock)
    answer = accounts().log_in(LogIn(email="grace@example.org", password=PASSWORD), CLIENT)
    with pytest.raises(AuthenticationFailed):
        second_step(accounts, answer.challenge, recovery_code=codes[0])


# A password reset, turning it off -----------------------------------------------------------


def test_a_password_reset_by_mail_keeps_two_factor_sign_in_on(accounts, ada, clock, repo):
    turn_on(accounts, ada, clock)
    accounts().links.request_password_reset(PasswordResetRequest(email="ada@example.org"),
                                            CLIENT)
    events = [parse_event(e) for e in repo.users.get(ada)["outbox"]]
    link = next(e.data.context["link"] for e in events
                if e.type == "MailRequested" and e.data.kind == "password_reset")
    token = parse_qs(urlsplit(link).query)["token"][0]
    accounts().links.reset_password(PasswordReset(token=token, password=NEW_PASSWORD))
    assert accounts().totp_status(ada).enabled is True
    answer = accounts().log_in(LogIn(email="ada@example.org", password=NEW_PASSWORD), CLIENT)
    assert answer.token is None and answer.second_step == "totp"


def test_turning_it_off_needs_the_password(accounts, ada, clock):
    secret, _ = turn_on(accounts, ada, clock)
    clock.advance(60)
    with pytest.raises(Forbidden) as refused:
        accounts().disable_totp(ada, TotpDisable(password="not the password!",
                                                 code=code_at(secret, clock.now())))
    assert refused.value.details == {"field": "password"}
    assert accounts().totp_status(ada).enabled is True


def test_turning_it_off_needs_a_good_code(accounts, ada, clock):
    secret, _ = turn_on(accounts, ada, clock)
    clock.advance(60)
    with pytest.raises(ServiceError) as refused:
        accounts().disable_totp(ada, TotpDisable(
            password=PASSWORD, code=code_at(secret, clock.now() + timedelta(minutes=5))))
    assert refused.value.code == "wrong_code"
    assert accounts().totp_status(ada).enabled is True


def test_turned_off_the_password_alone_logs_in_again(accounts, ada, clock, repo):
    secret, _ = turn_on(accounts, ada, clock)
    clock.advance(60)
    status = accounts().disable_totp(ada, TotpDisable(password=PASSWORD,
                                                      code=code_at(secret, clock.now())))
    assert status.enabled is False
    assert repo.recovery_codes.find({"user_id": ada}) == []
    assert "totp_secret" not in repo.users.get(ada)
    answer = accounts().log_in(LogIn(email="ada@example.org", password=PASSWORD), CLIENT)
    assert answer.token is not None


def test_a_recovery_code_can_turn_it_off(accounts, ada, clock):
    _, codes = turn_on(accounts, ada, clock)
    status = accounts().disable_totp(ada, TotpDisable(password=PASSWORD,
                                                      recovery_code=codes[0]))
    assert status.enabled is False


# Export and erasure -------------------------------------------------------------------------


def test_the_export_says_whether_it_is_on_and_since_when_never_the_secret(accounts, ada,
                                                                          clock, repo):
    secret, codes = turn_on(accounts, ada, clock)
    exported = privacy.export_user(repo, ada)
    assert exported["account"]["two_factor_enabled"] is True
    assert exported["account"]["two_factor_enabled_at"] == clock.now()
    assert secret not in repr(exported)
    assert not any(code in repr(exported) for code in codes)


def test_the_erasure_removes_the_secret_codes_and_waiting_log_ins(accounts, ada, clock, repo):
    turn_on(accounts, ada, clock)
    challenge(accounts)
    summary = privacy.erase_user(repo, ada, "ada@example.org")
    assert summary["recovery_codes"] == 10
    assert summary["second_steps"] == 1
    assert repo.users.get(ada) is None
    assert repo.recovery_codes.find({}) == [] and repo.second_steps.find({}) == []


def test_the_set_up_under_way_can_be_shown_again_until_confirmed(accounts, ada, clock):
    assert accounts().totp_set_up(ada) is None
    setup = accounts().start_totp(ada)
    assert accounts().totp_set_up(ada) == setup
    accounts().confirm_totp(ada, TotpConfirm(code=code_at(setup.secret, clock.now())))
    assert accounts().totp_set_up(ada) is None


def test_wrong_passwords_to_turn_it_off_count_against_the_log_in_limit(accounts, ada, clock):
    turn_on(accounts, ada, clock)
    for _ in range(LOGIN_FAILURES_PER_ACCOUNT.count):
        with pytest.raises(Forbidden):
            accounts().disable_totp(ada, TotpDisable(password="not the password!",
                                                     code="123456"))
    with pytest.raises(RateLimited):
        accounts().log_in(LogIn(email="ada@example.org", password=PASSWORD), CLIENT)


def test_a_confirmation_racing_a_new_start_keeps_no_codes_and_turns_nothing_on(accounts, ada,
                                                                              repo, clock):
    accounts().start_totp(ada)
    seen = repo.user(ada)
    accounts().start_totp(ada)  # meanwhile, from another tab: a new secret is pending
    assert repo.enable_totp(seen, 1, ["a-code-id"], clock.now()) is False
    assert repo.recovery_codes.find({}) == []
    assert accounts().totp_status(ada).enabled is False
