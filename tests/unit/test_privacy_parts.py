"""Each service's part in privacy, on its real embedded store: the export (everything of
the person, nothing of anyone else), the erasure (everything of the person, idempotent),
and the answer every service gives the saga (once erased, answered every time)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.accounts import privacy as accounts_privacy
from services.accounts.accounts import Accounts
from services.accounts.passwords import password_hasher
from services.accounts.schemas import ClientContext, LogIn, SignUp
from services.accounts.storage import INDEXES as ACCOUNTS_INDEXES
from services.accounts.storage import AccountsRepository
from services.accounts.tokens import LinkSettings
from services.billing import privacy as billing_privacy
from services.scheduler import privacy as scheduler_privacy
from services.vault import privacy as vault_privacy
from services.vault.erasure import erase_user as erase_from_vault
from shared.clock import FrozenClock
from shared.config import PasswordHashStrength
from shared.errors import AuthenticationFailed
from shared.events import parse_event
from shared.events.schemas import CheckedIn, ErasureRequested
from shared.privacy import answer_erasure, forget_throttle, subject_of, was_erased
from shared.storage.provider import ERASURES, open_store
from shared.throttle import THROTTLE_INDEXES, Limit, Throttle
from tests.stripe_helpers import BillingWorld
from tests.unit.scheduler_world import World
from tests.unit.vault_fixtures import Vault

NOW = datetime(2030, 6, 15, 12, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
CLIENT = ClientContext(ip="203.0.113.77", user_agent="pytest")


# The answer every service gives ------------------------------------------------------------


@pytest.fixture
def erasures(tmp_path):
    db = open_store("anyservice", {"throttle": THROTTLE_INDEXES}, data_dir=tmp_path)
    yield db
    db.close()


SUBJECT_KEY = b"k" * 32
ADA_SUBJECT = subject_of(SUBJECT_KEY, "user-1")


def request(request_id="req-1", user_id="user-1", reason="user") -> ErasureRequested:
    return ErasureRequested(request_id=request_id, user_id=user_id, reason=reason,
                            email="ada@example.org")


def test_a_service_erases_once_per_request_and_answers_every_time(erasures):
    runs = []

    def erase():
        runs.append(1)
        return {"documents": 3}

    collection = erasures.collection(ERASURES)
    kept = timedelta(days=30)
    first = answer_erasure(collection, request(), service="vault", erase=erase,
                           subject=ADA_SUBJECT, now=NOW, keep_for=kept)
    again = answer_erasure(collection, request(), service="vault", erase=erase,
                           subject=ADA_SUBJECT, now=NOW, keep_for=kept)
    assert first == again == {"documents": 3} and len(runs) == 1
    record = collection.get("req-1")
    answers = [parse_event(e) for e in record["outbox"]]
    assert [(a.type, a.data.service, a.data.summary) for a in answers] == [
        ("ErasureCompleted", "vault", {"documents": 3})] * 2
    assert record["answers"] == 2 and record["expires_at"] == NOW + kept
    assert "user-1" not in str({k: v for k, v in record.items() if k != "outbox"})
    assert collection.purge_expired(NOW + kept + timedelta(seconds=1)) == 1


def test_a_failed_erasure_records_nothing_and_is_tried_again(erasures):
    collection = erasures.collection(ERASURES)

    def broken():
        raise ConnectionError("Stripe is down")

    with pytest.raises(ConnectionError):
        answer_erasure(collection, request(), service="billing", erase=broken,
                       subject=ADA_SUBJECT, now=NOW, keep_for=timedelta(days=30))
    assert collection.get("req-1") is None
    assert not was_erased(collection, ADA_SUBJECT)


def test_the_record_finds_an_erased_user_by_pseudonym_and_nobody_else(erasures):
    collection = erasures.collection(ERASURES)
    answer_erasure(collection, request(), service="scheduler", erase=lambda: {},
                   subject=ADA_SUBJECT, now=NOW, keep_for=timedelta(days=30))
    assert was_erased(collection, subject_of(SUBJECT_KEY, "user-1"))
    assert not was_erased(collection, subject_of(SUBJECT_KEY, "user-2"))
    assert not was_erased(collection, subject_of(b"another key" * 3, "user-1"))


def test_forgetting_a_key_removes_its_counters_in_every_window_and_no_other(erasures):
    throttle = Throttle(erasures.collection("throttle"))
    limit = Limit("checkin-user", count=5, window_seconds=60)
    for minutes in range(3):
        throttle.hit(limit, "user-1", NOW + timedelta(minutes=minutes))
    throttle.hit(limit, "user-10", NOW)
    throttle.hit(Limit("other", 5, 60), "user-1", NOW)
    assert forget_throttle(throttle.collection, ["checkin-user"], "user-1") == 3
    assert {doc["_id"].rsplit(":", 1)[0] for doc in throttle.collection.find({})} == {
        "checkin-user:user-10", "other:user-1"}


# Accounts ------------------------------------------------------------------------------------


@pytest.fixture
def accounts(tmp_path):
    db = open_store("accounts", ACCOUNTS_INDEXES, data_dir=tmp_path)
    repo = AccountsRepository(db)
    clock = FrozenClock(NOW)
    hasher = password_hasher(PasswordHashStrength.MIN)
    links = LinkSettings(key=b"k" * 32, public_url="https://jic.example",
                         verify_ttl=timedelta(hours=48), reset_ttl=timedelta(hours=1))

    def domain() -> Accounts:
        return Accounts(repo, hasher, clock.now(), policy_version="2024-04-29",
                        session_ttl=3600, links=links)

    yield repo, clock, hasher, domain
    db.close()


def sign_up(domain, email="ada@example.org") -> str:
    return domain().sign_up(SignUp(email=email, password=PASSWORD,
                                   date_of_birth=date(1990, 1, 1),
                                   accept_policy_version="2024-04-29"), CLIENT).id


def test_accounts_checks_the_password_again_like_a_log_in(accounts):
    repo, clock, hasher, domain = accounts
    user = sign_up(domain)
    assert accounts_privacy.verify_password(repo, hasher, user, PASSWORD, clock.now()) == {
        "verified": True, "retry_after_seconds": None}
    assert not accounts_privacy.verify_password(repo, hasher, "nobody", PASSWORD,
                                                clock.now())["verified"]
    for _ in range(10):
        accounts_privacy.verify_password(repo, hasher, user, "wrong password!", clock.now())
    limited = accounts_privacy.verify_password(repo, hasher, user, PASSWORD, clock.now())
    assert limited["verified"] is False and limited["retry_after_seconds"] > 0


def test_closing_an_account_ends_its_sessions_and_its_log_ins_at_once(accounts):
    repo, clock, _, domain = accounts
    user = sign_up(domain)
    session = domain().log_in(LogIn(email="ada@example.org", password=PASSWORD), CLIENT)
    assert accounts_privacy.close_account(repo, user, clock.now())
    with pytest.raises(AuthenticationFailed):
        domain().authenticate(session.token)
    with pytest.raises(AuthenticationFailed):
        domain().log_in(LogIn(email="ada@example.org", password=PASSWORD), CLIENT)
    assert not accounts_privacy.close_account(repo, user, clock.now())


def test_accounts_exports_the_account_sessions_and_links_but_no_secret(accounts):
    repo, _, _, domain = accounts
    user = sign_up(domain)
    sign_up(domain, "bob@example.org")
    domain().log_in(LogIn(email="ada@example.org", password=PASSWORD), CLIENT)
    part = accounts_privacy.export_user(repo, user)
    assert part["account"]["email"] == "ada@example.org" and part["account"]["id"] == user
    assert part["sessions"][0]["ip_truncated"] == "203.0.113.0/24"
    assert [link["purpose"] for link in part["links"]] == ["verify"]
    text = str(part)
    assert "$argon2" not in text and "bob@example.org" not in text
    stored = repo.users.get(user)
    assert stored["password_hash"] not in text


def test_accounts_erases_the_user_their_sessions_links_and_counters(accounts):
    repo, clock, hasher, domain = accounts
    user = sign_up(domain)
    bob = sign_up(domain, "bob@example.org")
    domain().log_in(LogIn(email="ada@example.org", password=PASSWORD), CLIENT)
    accounts_privacy.verify_password(repo, hasher, user, "wrong password!", clock.now())
    summary = accounts_privacy.erase_user(repo, user, "ada@example.org")
    assert summary == {"sessions": 1, "links": 1, "recovery_codes": 0, "second_steps": 0,
                       "throttle_counters": 1, "users": 1}
    everything = str([repo.users.find({}), repo.sessions.find({}), repo.tokens.find({}),
                      repo.throttle.collection.find({})])
    assert user not in everything and "ada@example.org" not in everything
    assert repo.user(bob) is not None
    assert accounts_privacy.erase_user(repo, user, "ada@example.org") == {
        "sessions": 0, "links": 0, "recovery_codes": 0, "second_steps": 0,
        "throttle_counters": 0, "users": 0}


def test_operators_find_an_account_by_address_or_id(accounts):
    repo, _, _, domain = accounts
    user = sign_up(domain)
    expected = {"user_id": user, "email": "ada@example.org"}
    assert accounts_privacy.find_user(repo, "Ada@Example.org") == expected
    assert accounts_privacy.find_user(repo, user) == expected
    assert accounts_privacy.find_user(repo, "nobody@example.org") is None
    assert accounts_privacy.find_user(repo, "not an address") is None


# The vault ----------------------------------------------------------------------------------


def test_the_vault_exports_the_authors_messages_opened_and_nobody_elses(tmp_path):
    vault = Vault(tmp_path)
    vault.write("ada", body="The code of the safe is 4921.")
    vault.write("bob", body="Bob's own secret")
    part = vault_privacy.export_user(vault.repo, vault.keys, "ada")
    [message] = part["messages"]
    assert message["content"]["body"] == "The code of the safe is 4921."
    assert message["content"]["recipients"][0]["email"] == "grace@example.org"
    assert message["content"]["sender_email"] == "ada@example.org"
    assert part["data_key"]["kek_id"] == "1" and "wrapped" not in part["data_key"]
    assert "Bob's own secret" not in str(part)
    vault.close()


def test_the_vault_erases_the_key_first_and_the_export_then_finds_nothing(tmp_path):
    vault = Vault(tmp_path)
    vault.write("ada")
    summary = erase_from_vault(vault.repo, vault.keys, "ada")
    assert summary["data_keys"] == 1 and summary["messages"] == 1
    assert vault_privacy.export_user(vault.repo, vault.keys, "ada") == {
        "messages": [], "data_key": None}
    vault.close()


def test_a_message_whose_key_is_gone_is_exported_as_unreadable_not_left_out(tmp_path):
    vault = Vault(tmp_path)
    vault.write("ada")
    vault.keys.shred("ada")  # an erasure half done
    [message] = vault_privacy.export_user(vault.repo, vault.keys, "ada")["messages"]
    assert message["content"] is None and "erased" in message["note"]
    vault.close()


# The scheduler -----------------------------------------------------------------------------


@pytest.fixture
def scheduler(tmp_path):
    world = World(tmp_path)
    yield world
    world.close()


def checked_in(world: World, user_id: str, switch_id: str, event_id: str) -> None:
    event = CheckedIn(user_id=user_id, switch_id=switch_id, cycle=2,
                      deadline=world.now + timedelta(days=30), method="api")
    scheduler_privacy.record_check_in(world.repo, event_id, event, world.now,
                                      timedelta(days=365))


def test_the_scheduler_keeps_a_check_in_history_once_per_event(scheduler):
    user, switch = scheduler.verified_user()
    checked_in(scheduler, user, switch, "event-1")
    checked_in(scheduler, user, switch, "event-1")
    part = scheduler_privacy.export_user(scheduler.repo, user)
    assert [(c["switch_id"], c["method"]) for c in part["check_ins"]] == [(switch, "api")]
    assert part["switches"][0]["id"] == switch and part["switches"][0]["state"] == "armed"
    assert scheduler.repo.checkins.purge_expired(scheduler.now + timedelta(days=366)) == 1


def test_the_scheduler_erases_every_switch_of_the_owner_whatever_its_state(scheduler):
    user, switch = scheduler.verified_user()
    other, _ = scheduler.verified_user()
    checked_in(scheduler, user, switch, "event-1")
    scheduler.check_in(user)
    summary = scheduler_privacy.erase_user(scheduler.repo, user, "user")
    assert summary["switches"] == 1 and summary["check_ins"] == 1
    assert summary["throttle_counters"] == 1
    assert scheduler.repo.switches_of(user) == [] and scheduler.repo.switches_of(other)
    assert scheduler_privacy.erase_user(scheduler.repo, user, "user")["switches"] == 0


def test_retention_never_erases_a_switch_that_was_ever_armed(scheduler):
    user, _ = scheduler.verified_user()
    with pytest.raises(scheduler_privacy.ArmedSwitchKept):
        scheduler_privacy.erase_user(scheduler.repo, user, "retention")
    assert scheduler.repo.switches_of(user)[0]["state"] == "armed"
    unverified = scheduler.registered_user()
    assert scheduler_privacy.erase_user(scheduler.repo, unverified, "retention")["switches"] == 1


# Billing ------------------------------------------------------------------------------------


@pytest.fixture
def billing(tmp_path):
    world = BillingWorld(tmp_path)
    yield world
    world.close()


def test_billing_exports_the_customer_and_invoices_without_the_checkout_page(billing):
    billing.subscribe("ada", "ada@example.org")
    billing.subscribe("bob", "bob@example.org")
    part = billing_privacy.export_user(billing.repo, "ada")
    assert part["customer"]["email"] == "ada@example.org"
    assert part["customer"]["plan"] == "premium_monthly"
    assert part["customer"]["stripe_customer_id"].startswith("cus_")
    assert part["invoices"] and all(invoice["currency"] for invoice in part["invoices"])
    assert "url" not in str(part["customer"].get("checkout"))
    assert "bob@example.org" not in str(part)
    assert billing_privacy.export_user(billing.repo, "stranger") == {"customer": None,
                                                                     "invoices": []}


def test_billing_erases_and_keeps_invoices_under_a_pseudonym_until_the_tax_window_ends(billing):
    billing.subscribe("ada", "ada@example.org")
    billing.billing().open_portal("ada")
    summary = billing_privacy.erase_user(billing.repo, billing.payments, "ada",
                                         billing.clock.now())
    assert summary["customers_deleted"] == 1
    assert summary["throttle_counters"] == 2, "the checkout's and the portal's"
    kept = billing.repo.invoices.find({})
    assert kept and all("user_id" not in invoice for invoice in kept)
    window = timedelta(days=3650)
    assert billing_privacy.purge_old_invoices(billing.repo, billing.clock.now() + window,
                                              window) == 0
    later = billing.clock.now() + window + timedelta(days=1)
    assert billing_privacy.purge_old_invoices(billing.repo, later, window) == len(kept)
