"""Retention: every scheduled purge of every service, with its window. An account never
verified is handed to the erasure saga after its window; expired tokens, sessions,
processed-event ids, exports, check-in history and old mail go; and none of it ever
touches an armed switch: a user silent for years is exactly whom the switch is for."""

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
from services.delivery import privacy as delivery_privacy
from services.delivery.storage import INDEXES as DELIVERY_INDEXES
from services.delivery.storage import DeliveryRepository
from services.privacy.storage import INDEXES as PRIVACY_INDEXES
from services.scheduler.scheduler import switch_id_for
from shared.clock import FrozenClock
from shared.config import PasswordHashStrength
from shared.errors import AuthenticationFailed
from shared.events import parse_event
from shared.storage.provider import open_store
from tests.stripe_helpers import BillingWorld
from tests.unit.scheduler_world import World
from tests.unit.vault_fixtures import Vault

START = datetime(2030, 1, 1, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
CLIENT = ClientContext(ip="203.0.113.77", user_agent="pytest")
UNVERIFIED_WINDOW = timedelta(days=30)


@pytest.fixture
def accounts(tmp_path):
    db = open_store("accounts", ACCOUNTS_INDEXES, data_dir=tmp_path)
    clock = FrozenClock(START)
    repo = AccountsRepository(db)
    links = LinkSettings(key=b"k" * 32, public_url="https://jic.example",
                         verify_ttl=timedelta(hours=48), reset_ttl=timedelta(hours=1))

    def domain() -> Accounts:
        return Accounts(repo, password_hasher(PasswordHashStrength.MIN), clock.now(),
                        policy_version="2024-04-29", session_ttl=3600, links=links)

    yield db, repo, clock, domain
    db.close()


def sign_up(domain, email: str) -> str:
    return domain().sign_up(SignUp(email=email, password=PASSWORD,
                                   date_of_birth=date(1980, 1, 1),
                                   accept_policy_version="2024-04-29"), CLIENT).id


def test_an_account_never_verified_is_handed_to_the_erasure_saga_after_its_window(accounts):
    _, repo, clock, domain = accounts
    stale = sign_up(domain, "never@example.org")
    verified = sign_up(domain, "ada@example.org")
    repo.users.update_one({"_id": verified}, {"$set": {"email_verified": True}})
    clock.advance(days=29)
    fresh = sign_up(domain, "fresh@example.org")
    assert accounts_privacy.expire_unverified(repo, clock.now(), UNVERIFIED_WINDOW) == 0
    clock.advance(days=2)

    assert accounts_privacy.expire_unverified(repo, clock.now(), UNVERIFIED_WINDOW) == 1
    expired = repo.users.get(stale)
    assert expired["status"] == "expired"
    event = parse_event(expired["outbox"][-1])
    assert event.type == "AccountExpired" and event.data.email == "never@example.org"
    with pytest.raises(AuthenticationFailed):
        domain().log_in(LogIn(email="never@example.org", password=PASSWORD), CLIENT)
    assert repo.users.get(verified)["status"] == "active"
    assert repo.users.get(fresh)["status"] == "active"
    assert accounts_privacy.expire_unverified(repo, clock.now(), UNVERIFIED_WINDOW) == 0


def test_expired_links_and_sessions_are_purged_by_their_own_expiry(accounts):
    _, repo, clock, domain = accounts
    sign_up(domain, "ada@example.org")
    domain().log_in(LogIn(email="ada@example.org", password=PASSWORD), CLIENT)
    clock.advance(days=10)
    assert repo.tokens.purge_expired(clock.now()) == 1  # 48 h link, kept 7 days more
    assert repo.sessions.purge_expired(clock.now()) == 1


def test_an_armed_switch_of_a_user_silent_for_years_survives_every_purge(accounts, tmp_path):
    accounts_db, repo, clock, domain = accounts
    user = sign_up(domain, "silent@example.org")
    repo.users.update_one({"_id": user}, {"$set": {"email_verified": True}})
    scheduler = World(tmp_path / "scheduler")
    scheduler.clock = clock
    scheduler.verified_user(user)
    vault = Vault(tmp_path / "vault")
    vault.clock = clock
    message = vault.write(user)
    delivery_db = open_store("delivery", DELIVERY_INDEXES, data_dir=tmp_path / "delivery")
    privacy_db = open_store("privacy", PRIVACY_INDEXES, data_dir=tmp_path / "privacy")
    billing = BillingWorld(tmp_path / "billing")

    clock.advance(days=5 * 366)  # five years without a word
    now = clock.now()
    window = timedelta(days=1)  # the shortest windows anyone could configure
    accounts_privacy.expire_unverified(repo, now, window)
    delivery_privacy.reduce_old_records(DeliveryRepository(delivery_db), now, window)
    billing_privacy.purge_old_invoices(billing.repo, now, window)
    for db in (accounts_db, scheduler.db, vault.db, delivery_db, privacy_db, billing.db):
        for name in db.read("select name from sqlite_master where type = 'table'"):
            db.collection(name[0]).purge_expired(now)

    assert repo.users.get(user)["status"] == "active"
    switch = scheduler.repo.switch(switch_id_for(user, 0))
    assert switch["state"] == "armed" and switch["user_id"] == user
    assert vault.repo.message(message).state == "sealed"
    assert vault.repo.data_keys.get(user) is not None
    for world in (scheduler, vault, billing):
        world.close()
    delivery_db.close()
    privacy_db.close()
