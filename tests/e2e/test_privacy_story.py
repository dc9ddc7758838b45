"""Privacy end to end, against `make run`'s processes: every service under nameko, the
gateway under gunicorn, RabbitMQ between them, the Stripe stand-in, mail read from the dev
SMTP sink, and each service's embedded store read the way an operator would with sqlite3.

Consent with Global Privacy Control, the unsubscribe link's receipt, an export complete
across services and blind to anyone else, the erasure saga (a replay of it, a service down
during it, a child's account erased by an operator), and the data map checked against
every field every service stored along the way."""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
import requests

from deploy.local.supervisor import DEFAULT_SERVICES
from services.privacy.notices import notice
from shared.events import new_event
from tests import data_map
from tests.e2e.conftest import System, free_port, start_system, system_environment
from tests.e2e.people import PASSWORD, Sender, mail_to, text_of
from tests.helpers import wait_for
from tests.service.vault_helpers import publish

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SERVICES = tuple(DEFAULT_SERVICES.split(","))
ERASED_RECEIVED = "We received your request to erase your Just in Case data"
ERASED_DONE = "Your Just in Case data has been erased"
EXPORT_READY = "Your Just in Case data export is ready"
INVITATION_LINK = re.compile(r"https?://\S+?/i/[A-Za-z0-9_-]+")


@pytest.fixture(scope="module")
def system(tmp_path_factory, vhost) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("privacy-system")
    environ = system_environment(
        tmp, vhost, DEFAULT_SERVICES,
        JICM_STRIPE_STANDIN_PORT=str(free_port()),
        # Behind a "proxy" (this test), so each user comes from an address of its own.
        JICM_TRUSTED_PROXIES="1",
        JICM_DELIVERY_TICK="0.2",
        JICM_SCHEDULER_TICK="0.5",
        # Seconds-long switches, so one can fire within the test.
        JICM_MIN_INTERVAL="2",
        # A service that does not answer an export is asked again after seconds, not minutes.
        JICM_EXPORT_TIMEOUT="5",
    )
    system = start_system(tmp, environ)
    yield system
    system.supervisor.stop_all()


# A user of the running system ---------------------------------------------------------------


class User(Sender):
    """A signed-up, logged-in user, coming from an address of their own."""

    def __init__(self, system: System) -> None:
        super().__init__(system, user_agent="privacy-e2e/1.0")
        self.contact_email = ""

    def write(self, secret: str, recipient: str) -> str:
        answer = self.call("POST", "/api/v1/messages", json={
            "subject": f"For {recipient}", "body": secret,
            "recipients": [{"name": "Grace Hopper", "email": recipient}]})
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    def pay(self) -> None:
        checkout = self.call("POST", "/api/v1/billing/checkout", json={"plan": "premium_monthly"})
        assert checkout.status_code == 201, checkout.text
        paid = requests.post(checkout.json()["url"] + "/pay", allow_redirects=False, timeout=10)
        assert paid.status_code == 303
        wait_for(lambda: self.call("GET", "/api/v1/billing").json()["plan"] == "premium_monthly",
                 timeout=30, what="the payment to raise the plan")

    def consent(self, headers: dict | None = None, **choices) -> requests.Response:
        return self.call("PUT", "/api/v1/privacy/consent", json=choices, headers=headers)

    def trusted_contact(self, email: str) -> None:
        """Name a trusted contact, who accepts on the invitation page."""
        added = self.call("POST", f"/api/v1/switches/{self.switch()['id']}/trusted-contacts",
                          json={"name": "Sam Contact", "email": email})
        assert added.status_code == 201, added.text

        def invitation():
            for mail in mail_to(self.system, email):
                found = INVITATION_LINK.search(text_of(mail))
                if found:
                    return found
            return None
        link = wait_for(invitation, timeout=30, interval=0.1, what="the invitation")[0]
        accepted = requests.post(link, data={"confirm": "yes", "decision": "accepted"},
                                 headers=self.client, timeout=10)
        assert accepted.status_code == 200, accepted.text


def busy_user(system: System) -> tuple[User, str]:
    """A user with something in every service: verified, a message, a test release, a
    check-in, a paid plan, consent given. Returns the user and their message's secret."""
    user = User(system)
    user.verify()
    secret = f"the code of the safe is {random.randrange(10**8):08d}"
    user.write(secret, f"grace-{uuid.uuid4().hex[:8]}@example.org")
    tested = user.call("POST", f"/api/v1/switches/{user.switch()['id']}/test-release")
    assert tested.status_code == 202, tested.text
    assert user.call("POST", "/api/v1/checkins", json={}).status_code == 200
    user.pay()
    assert user.consent(marketing={"email": True, "postal": True}).status_code == 200
    user.contact_email = f"sam-{uuid.uuid4().hex[:8]}@example.org"
    user.trusted_contact(user.contact_email)
    return user, secret


def query(system: System, service: str, sql: str, params: tuple = ()) -> list:
    return system.query(service, sql, params)


def field_of(system: System, service: str, table: str, doc_id: str, path: str):
    rows = query(system, service, f"select json_extract(doc, '$.{path}') from {table} "  # noqa: S608
                 "where id = ?", (doc_id,))
    return rows[0][0] if rows else None


def marketing_mail(system: System, user: User, headline: str) -> None:
    """Ask delivery for a marketing mail to `user`, as a newsletter job would."""
    publish(system.environ["AMQP_URI"], new_event(
        "MailRequested",
        {"kind": "product_news", "reference": headline, "to": user.email, "user_id": user.id,
         "context": {"headline": headline, "body": "Something new in Just in Case."}},
        producer="newsletter", now=datetime.now(UTC)))


def delivery_state(system: System, reference: str) -> str | None:
    rows = query(system, "delivery", "select json_extract(doc, '$.state') from deliveries "
                 "where json_extract(doc, '$.reference') = ?", (reference,))
    return rows[0][0] if rows else None


def privacy_cli(system: System, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jicm", "privacy", *args],
                          env=system.environ, cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False)


def request_status(system: System, request_id: str) -> str | None:
    return field_of(system, "privacy", "requests", request_id, "status")


# Consent ---------------------------------------------------------------------------------------


def test_consent_is_off_until_given_and_a_gpc_signal_turns_marketing_off_for_good(system):
    user = User(system)
    start = wait_for(lambda: (c := user.call("GET", "/api/v1/privacy/consent").json())
                     ["policy_version"] and c, timeout=20, what="the sign-up's policy receipt")
    assert start["marketing"] == {"email": False, "postal": False, "phone": False, "sms": False}
    assert start["cookies"] == {"analytics": False, "marketing": False}
    assert start["policy_version"] == "2024-04-29" and start["signal"] is None

    given = user.consent(marketing={"email": True}, cookies={"analytics": True})
    assert given.status_code == 200, given.text
    assert given.json()["marketing"]["email"] is True
    wait_for(lambda: field_of(system, "delivery", "consents", user.id, "marketing_email") == 1,
             timeout=20, what="delivery to learn the consent")
    marketing_mail(system, user, "News with consent")
    user.mail("News with consent")

    refused = user.consent(headers={"Sec-GPC": "1"}, marketing={"sms": True})
    assert refused.status_code == 200, refused.text
    body = refused.json()
    assert body["signal"] == "gpc" and body["kept_off"] == ["marketing.sms"]
    assert not any(body["marketing"].values()) and not any(body["cookies"].values())
    later = user.call("GET", "/api/v1/privacy/consent").json()
    assert later["marketing"]["email"] is False and later["signal"] is None

    wait_for(lambda: field_of(system, "delivery", "consents", user.id, "marketing_email") == 0,
             timeout=20, what="delivery to learn the opt-out")
    marketing_mail(system, user, "News after the signal")
    wait_for(lambda: delivery_state(system, "News after the signal") == "suppressed", timeout=20,
             what="delivery to hold the marketing mail back")
    assert not [m for m in system.mail() if m["Subject"] == "News after the signal"]

    receipts = json.loads(query(system, "privacy", "select json_extract(doc, '$.receipts') "
                                "from consents where id = ?", (user.id,))[0][0])
    assert [r["method"] for r in receipts] == ["signup", "api", "gpc"]
    shown = notice("2024-04-29")
    assert {r["notice_sha256"] for r in receipts} == {shown.sha256}
    assert shown.sha256 == hashlib.sha256(
        (REPO / "services/privacy/notices/2024-04-29.txt").read_bytes()).hexdigest()
    network = user.client["X-Forwarded-For"].rsplit(".", 1)[0] + ".0/24"
    assert receipts[1]["ip_truncated"] == network
    assert receipts[1]["user_agent"] == "privacy-e2e/1.0"
    assert receipts[2]["changes"] == [{"purpose": "cookies.analytics", "choice": False},
                                      {"purpose": "marketing.email", "choice": False}]


def test_do_not_track_is_honoured_too_even_on_a_read(system):
    user = User(system)
    user.consent(marketing={"phone": True})
    seen = user.call("GET", "/api/v1/privacy/consent", headers={"DNT": "1"}).json()
    assert seen["signal"] == "dnt" and seen["marketing"]["phone"] is False
    assert user.call("GET", "/api/v1/privacy/consent").json()["marketing"]["phone"] is False


def test_the_unsubscribe_link_stops_marketing_and_leaves_a_consent_receipt(system):
    user = User(system)
    user.consent(marketing={"email": True})
    wait_for(lambda: field_of(system, "delivery", "consents", user.id, "marketing_email") == 1,
             timeout=20, what="delivery to learn the consent")
    marketing_mail(system, user, "News to unsubscribe from")
    mail = user.mail("News to unsubscribe from")
    link = re.search(r"<(http[^>]+/u/[^>]+)>", mail["List-Unsubscribe"])[1]
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    clicked = requests.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=10)
    assert clicked.status_code == 200

    choices = wait_for(lambda: (c := user.call("GET", "/api/v1/privacy/consent").json())
                       ["updated_at"] and not c["marketing"]["email"] and c, timeout=20,
                       what="privacy to record the unsubscribe")
    assert choices["marketing"]["email"] is False
    receipts = json.loads(query(system, "privacy", "select json_extract(doc, '$.receipts') "
                                "from consents where id = ?", (user.id,))[0][0])
    assert receipts[-1]["method"] == "unsubscribe_link"
    assert receipts[-1]["changes"] == [{"purpose": "marketing.email", "choice": False}]


# Export ----------------------------------------------------------------------------------------


def test_an_export_holds_the_users_data_from_every_service_and_nothing_of_anyone_elses(system):
    ada, ada_secret = busy_user(system)
    bob, bob_secret = busy_user(system)

    asked = ada.call("POST", "/api/v1/privacy/requests", json={"type": "export"})
    assert asked.status_code == 202, asked.text
    request = asked.json()
    due = datetime.fromisoformat(request["due_at"])
    assert timedelta(days=29, hours=23) < due - datetime.now(UTC) <= timedelta(days=30)
    again = ada.call("POST", "/api/v1/privacy/requests", json={"type": "export"})
    assert again.json()["id"] == request["id"], "an open export is not duplicated"

    ready = ada.mail(EXPORT_READY)
    assert system.url("/app/privacy") in ready.get_body(("plain",)).get_content()
    view = ada.call("GET", f"/api/v1/privacy/requests/{request['id']}").json()
    assert view["status"] == "complete"
    link = view["download"]["url"]
    assert set(view["services"]) == set(SERVICES)
    assert all(part["status"] == "done" for part in view["services"].values())

    answer = requests.get(link, headers=ada.headers, timeout=30)
    assert answer.status_code == 200
    assert "attachment" in answer.headers["Content-Disposition"]
    export = answer.json()
    parts = export["services"]
    assert export["format"] == "jicm-export/1" and export["user_id"] == ada.id
    assert set(parts) == set(SERVICES)
    assert parts["accounts"]["account"]["email"] == ada.email
    assert "password_hash" not in json.dumps(parts["accounts"])
    [message] = parts["vault"]["messages"]
    assert message["content"]["body"] == ada_secret
    assert message["content"]["recipients"][0]["email"].startswith("grace-")
    assert parts["scheduler"]["switches"][0]["id"] == ada.switch()["id"]
    [tested] = parts["vault"]["test_releases"]
    assert (tested["switch_id"], tested["mails"]) == (ada.switch()["id"], 1)
    assert tested["created_at"] and tested["expires_at"]
    assert parts["scheduler"]["check_ins"], "the check-in history"
    [contact] = parts["scheduler"]["trusted_contacts"]
    assert contact["status"] == "accepted" and contact["consent"]["choice"] == "accepted"
    assert {m["kind"] for m in parts["delivery"]["mail"]} >= {"verification"}
    assert parts["billing"]["customer"]["stripe_customer_id"].startswith("cus_")
    assert parts["billing"]["invoices"]
    assert [r["method"] for r in parts["privacy"]["consent_receipts"]][:2] == ["signup", "api"]

    text = json.dumps(export)
    for theirs in (bob.id, bob.email, bob_secret):
        assert theirs not in text
    assert bob.call("GET", f"/api/v1/privacy/requests/{request['id']}").status_code == 404
    assert requests.get(link, headers=bob.headers, timeout=10).status_code == 404
    listed = ada.call("GET", "/api/v1/privacy/requests").json()["requests"]
    assert [r["id"] for r in listed] == [request["id"]]
    # The export rests sealed: privacy's file never holds the message in clear.
    stored = b"".join(p.read_bytes() for p in system.data_dir.glob("privacy.sqlite3*"))
    assert ada_secret.encode() not in stored


@pytest.mark.fault
def test_an_export_waits_for_a_service_that_is_down_and_never_completes_with_a_hole(system):
    user, _ = busy_user(system)
    system.supervisor.stop("billing")
    try:
        asked = user.call("POST", "/api/v1/privacy/requests", json={"type": "export"})
        assert asked.status_code == 202, asked.text
        path = f"/api/v1/privacy/requests/{asked.json()['id']}"
        view = wait_for(lambda: (v := user.call("GET", path).json())["services"]["billing"]
                        ["status"] == "waiting" and v, timeout=40,
                        what="the export to wait for billing")
        assert view["status"] == "in_progress" and "no answer" in view["services"]["billing"][
            "detail"]
        assert view["services"]["vault"]["status"] == "done"
        assert user.call("GET", path + "/download").status_code == 409
    finally:
        system.supervisor.start("billing")
        system.supervisor.wait_ready("billing")
    user.mail(EXPORT_READY, timeout=90)
    export = user.call("GET", path + "/download").json()
    assert export["services"]["billing"]["customer"]["email"] == user.email


# Erasure ---------------------------------------------------------------------------------------


def every_document(system: System) -> Iterator[tuple[str, str, str, str]]:
    """(service, collection, id, JSON text) of every document of every service's store."""
    for service in SERVICES:
        tables = [row[0] for row in query(system, service,
                                          "select name from sqlite_master where type = 'table'")]
        for table in tables:
            for doc_id, doc in query(system, service, f'select id, doc from "{table}"'):  # noqa: S608
                yield service, table, doc_id, doc


def traces_of(system: System, *needles: str) -> list[str]:
    found = []
    lowered = [needle.casefold() for needle in needles]
    for service, table, doc_id, doc in every_document(system):
        text = f"{doc_id} {doc}".casefold()
        found += [f"{service}.{table} {doc_id}" for needle in lowered if needle in text]
    return found


def erase(system: System, user: User) -> str:
    """Close the account over HTTP and wait until the erasure completes; its request id."""
    wrong = user.call("DELETE", "/api/v1/me", json={"password": "not my password at all"})
    assert wrong.status_code == 403, wrong.text
    asked = user.call("DELETE", "/api/v1/me", json={"password": PASSWORD})
    assert asked.status_code == 202, asked.text
    request_id = asked.json()["id"]
    assert asked.json()["status"] in ("pending", "in_progress")
    wait_for(lambda: request_status(system, request_id) == "complete", timeout=60,
             what="every service to answer the erasure")
    return request_id


def test_closing_an_account_erases_the_user_from_every_service(system):
    user, secret = busy_user(system)
    request_id = erase(system, user)

    received = user.mail(ERASED_RECEIVED)
    assert "at the latest" in received.get_body(("plain",)).get_content()
    user.mail(ERASED_DONE)
    assert user.log_in().status_code == 401
    assert user.call("GET", "/api/v1/me").status_code == 401
    assert query(system, "vault", "select count(*) from data_keys where id = ?",
                 (user.id,)) == [(0,)]
    wait_for(lambda: not traces_of(system, user.id, user.email), timeout=30,
             what=f"no trace of the user: {traces_of(system, user.id, user.email)}")
    assert not traces_of(system, secret)
    # The trusted contact's name and address went with the owner who entered them.
    assert not traces_of(system, user.contact_email)

    # What is kept is pseudonymised: the ledger, the invoices, the address as a hash.
    ledger = json.loads(query(system, "privacy", "select doc from ledger where id = ?",
                              (request_id,))[0][0])
    assert ledger["status"] == "complete" and ledger["requested_by"] == "user"
    assert set(ledger["services"]) == set(SERVICES)
    assert query(system, "billing", "select count(*) from invoices where "
                 "json_extract(doc, '$.holder') like 'erased-%'")[0][0] >= 1
    address = hashlib.sha256(user.email.casefold().encode()).hexdigest()
    assert query(system, "delivery", "select json_extract(doc, '$.source') from suppressions "
                 "where id = ?", (address,)) == [("erasure",)]


def test_an_erasure_request_delivered_again_erases_nothing_twice_and_is_answered_again(system):
    user = User(system)
    user.verify()
    request_id = erase(system, user)
    user.mail(ERASED_DONE)
    before = {service: query(system, service, "select count(*) from erasures")[0][0]
              for service in SERVICES}
    again = new_event("ErasureRequested", {"request_id": request_id, "user_id": user.id,
                                           "reason": "user", "email": user.email},
                      producer="privacy", now=datetime.now(UTC))
    publish(system.environ["AMQP_URI"], again)
    publish(system.environ["AMQP_URI"], again)  # the very same event twice: once is enough

    def answered_twice() -> bool:
        return all(field_of(system, service, "erasures", request_id, "answers") == 2
                   for service in SERVICES)

    wait_for(answered_twice, timeout=30, what="every service to answer the replay once")
    assert {service: query(system, service, "select count(*) from erasures")[0][0]
            for service in SERVICES} == before
    assert request_status(system, request_id) == "complete"
    assert len([m for m in system.mail() if m["To"] == user.email
                and m["Subject"] == ERASED_DONE]) == 1
    wait_for(lambda: not traces_of(system, user.id, user.email), timeout=30,
             what="no trace of the user after the replay")


@pytest.mark.fault
def test_a_service_down_during_an_erasure_finishes_its_part_when_it_is_back(system):
    user, _ = busy_user(system)
    system.supervisor.stop("vault")
    try:
        asked = user.call("DELETE", "/api/v1/me", json={"password": PASSWORD})
        assert asked.status_code == 202, asked.text
        request_id = asked.json()["id"]

        def waiting_for_the_vault() -> str | None:
            listed = privacy_cli(system, "requests")
            block = listed.stdout.split(request_id, 1)[-1][:600]
            return (request_id in listed.stdout and "in_progress" in block
                    and "vault:pending" in block and "accounts:done" in block and block)

        wait_for(waiting_for_the_vault, timeout=40, interval=0.5,
                 what="the request in progress, waiting for the vault")
        assert request_status(system, request_id) == "in_progress"
    finally:
        system.supervisor.start("vault")
        system.supervisor.wait_ready("vault")
    wait_for(lambda: request_status(system, request_id) == "complete", timeout=60,
             what="the vault to answer once back")
    assert query(system, "vault", "select count(*) from messages where "
                 "json_extract(doc, '$.user_id') = ?", (user.id,)) == [(0,)]
    assert request_id not in privacy_cli(system, "requests").stdout
    assert privacy_cli(system, "requests", "--overdue").returncode == 0


def test_an_operator_erases_the_account_of_a_child(system):
    child = User(system)
    marked = privacy_cli(system, "mark-child", child.email)
    assert marked.returncode == 0, marked.stderr
    request_id = re.search(r"erasure (\S+) started", marked.stdout)[1]
    assert child.call("GET", "/api/v1/me").status_code == 401, "the account closed at once"
    wait_for(lambda: request_status(system, request_id) == "complete", timeout=60,
             what="the child's erasure")
    ledger = json.loads(query(system, "privacy", "select doc from ledger where id = ?",
                              (request_id,))[0][0])
    assert (ledger["reason"], ledger["requested_by"]) == ("child", "operator")
    wait_for(lambda: not traces_of(system, child.id, child.email), timeout=30,
             what="no trace of the child")
    assert not [m for m in system.mail() if m["To"] == child.email
                and m["Subject"].startswith(("We received", "Your Just in Case data"))]
    unknown = privacy_cli(system, "mark-child", "nobody-at-all@example.org")
    assert unknown.returncode == 1 and "no account" in unknown.stderr


# The data map ----------------------------------------------------------------------------------


def test_the_data_map_lists_every_field_every_service_stored(system):
    # On top of the stories above: a password reset link, two-factor sign-in (on, with a
    # log-in waiting for its code; and another user's set-up not confirmed), and a switch
    # that fires.
    user = User(system)
    user.verify()
    requests.post(system.url("/api/v1/password-resets"), json={"email": user.email},
                  headers=user.client, timeout=10)
    setup = user.call("POST", "/api/v1/me/totp").json()
    confirmed = user.call("POST", "/api/v1/me/totp/confirm",
                          json={"code": pyotp.TOTP(setup["secret"]).now()})
    assert confirmed.status_code == 200, confirmed.text
    waiting = requests.post(system.url("/api/v1/sessions"), headers=user.client, timeout=10,
                            json={"email": user.email, "password": PASSWORD})
    assert waiting.json()["second_step"] == "totp", waiting.text
    assert User(system).call("POST", "/api/v1/me/totp").status_code == 201
    user.write("a farewell", "friend@example.org")
    user.trusted_contact("watcher@example.org")
    switch = user.switch()
    changed = user.call("PUT", f"/api/v1/switches/{switch['id']}", json={
        "interval_seconds": 2, "grace_seconds": 2, "reminders_seconds": [1]})
    assert changed.status_code == 200, changed.text
    wait_for(lambda: user.switch()["state"] in ("fired", "released"), timeout=60,
             what="the switch to fire")
    wait_for(lambda: query(system, "vault", "select count(*) from messages where "
                           "json_extract(doc, '$.dispatched_at') is not null")[0][0] > 0,
             timeout=30, what="the vault to hand the release over")

    missing = {}
    for service, table, _, doc in every_document(system):
        decoded = json.loads(doc)
        paths = {path for path in data_map.paths_of(decoded) if path}
        paths = {_untagged(path) for path in paths} | {"_id"}
        gaps = data_map.unlisted(service, table, paths)
        if gaps:
            missing.setdefault(f"{service}.{table}", set()).update(gaps)
    assert not missing, f"fields stored but missing from docs/data-map.yaml: {missing}"


def _untagged(path: str) -> str:
    """The SQLite store tags datetimes and bytes (`{"$date": ...}`): the field is the parent."""
    for tag in (".$date", ".$binary"):
        if path.endswith(tag):
            return path[: -len(tag)]
    return path
