"""Verification and password reset end to end, as `make run` runs them: gunicorn serving the
gateway, accounts and delivery under nameko, RabbitMQ between them, and the mail read from
the dev SMTP sink's files. Links are followed the way a person would: open the page, then
press its button (or a client calls the JSON API with the token)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import requests

from shared.events import new_event
from shared.rpc.client import RpcClientPool
from tests.e2e.conftest import System, start_system, system_environment
from tests.helpers import publish as publish_event
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a quiet harbour at dawn 42"


@pytest.fixture(scope="module")
def mail_system(tmp_path_factory, vhost) -> Iterator[System]:
    """Accounts, delivery, the gateway and the SMTP sink: `make run`'s parts."""
    tmp = tmp_path_factory.mktemp("mail-system")
    system = start_system(tmp, system_environment(tmp, vhost, "accounts,delivery",
                                                  JICM_DELIVERY_TICK="0.2"))
    yield system
    system.supervisor.stop_all()


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.org"


def sign_up(system: System, email: str) -> requests.Response:
    return requests.post(system.url("/api/v1/accounts"), timeout=10, json={
        "email": email, "password": PASSWORD, "date_of_birth": "1990-01-01",
        "accept_policy_version": "2024-04-29"})


def log_in(system: System, email: str, password: str = PASSWORD) -> requests.Response:
    return requests.post(system.url("/api/v1/sessions"), timeout=10,
                         json={"email": email, "password": password})


def me(system: System, token: str) -> requests.Response:
    return requests.get(system.url("/api/v1/me"), timeout=10,
                        headers={"Authorization": f"Bearer {token}"})


def mail_to(system: System, address: str, count: int = 1, timeout: float = 30.0) -> list:
    """The mail that reached `address` (the sink is shared by the module), oldest first."""
    def arrived():
        found = [m for m in system.mail() if m["To"] == address]
        return found if len(found) >= count else None

    return wait_for(arrived, timeout=timeout, interval=0.1, what=f"{count} mail(s) to {address}")


def link_in(mail, path: str) -> str:
    text = mail.get_body(("plain",)).get_content()
    return re.search(rf"(http://\S+{path}\?token=[A-Za-z0-9_-]+)", text)[1]


def token_of(link: str) -> str:
    return urlsplit(link).query.removeprefix("token=")


def test_signing_up_mails_a_link_that_verifies_the_account_once(mail_system):
    email = new_email()
    assert sign_up(mail_system, email).status_code == 201
    [mail] = mail_to(mail_system, email)
    assert mail["From"] == "Just in Case <no-reply@justincase.example>"
    assert mail["Auto-Submitted"] == "auto-generated"
    link = link_in(mail, "/verify")
    assert link.startswith(mail_system.url("/verify?token="))
    session = log_in(mail_system, email).json()["token"]

    page = requests.get(link, timeout=10)  # what a mail scanner does too
    assert page.status_code == 200
    assert "text/html" in page.headers["Content-Type"]
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert me(mail_system, session).json()["email_verified"] is False, "a GET verifies nothing"

    confirmed = requests.post(mail_system.url("/verify"), data={"token": token_of(link)},
                              timeout=10)
    assert confirmed.status_code == 200
    assert "is confirmed" in confirmed.text
    assert me(mail_system, session).json()["email_verified"] is True

    again = requests.post(mail_system.url("/api/v1/accounts/verify"),
                          json={"token": token_of(link)}, timeout=10)
    assert again.status_code == 410
    assert again.json()["error"]["code"] == "token_used"


def test_a_password_reset_works_end_to_end_and_signs_out_older_sessions(mail_system):
    email = new_email()
    sign_up(mail_system, email)
    old_session = log_in(mail_system, email).json()["token"]
    asked = requests.post(mail_system.url("/api/v1/password-resets"), json={"email": email},
                          timeout=10)
    assert asked.status_code == 202
    _, reset_mail = mail_to(mail_system, email, count=2)
    assert reset_mail["Subject"] == "Reset your Just in Case password"
    link = link_in(reset_mail, "/reset")
    form = requests.get(link, timeout=10)
    assert form.status_code == 200 and 'type="password"' in form.text

    done = requests.post(mail_system.url("/api/v1/password-resets/confirm"), timeout=10,
                         json={"token": token_of(link), "password": NEW_PASSWORD})
    assert done.status_code == 200
    assert done.json()["status"] == "password_changed"
    assert me(mail_system, old_session).status_code == 401
    assert log_in(mail_system, email).status_code == 401
    assert log_in(mail_system, email, NEW_PASSWORD).status_code == 201

    reused = requests.post(mail_system.url("/api/v1/password-resets/confirm"), timeout=10,
                           json={"token": token_of(link), "password": "yet another one 77 x"})
    assert reused.status_code == 410
    assert reused.json()["error"]["code"] == "token_used"


def test_the_reset_form_page_sets_the_password_too(mail_system):
    email = new_email()
    sign_up(mail_system, email)
    requests.post(mail_system.url("/api/v1/password-resets"), json={"email": email}, timeout=10)
    link = link_in(mail_to(mail_system, email, count=2)[1], "/reset")
    weak = requests.post(mail_system.url("/reset"), timeout=10,
                         data={"token": token_of(link), "password": "password1234",
                               "confirm": "password1234"})
    assert weak.status_code == 422
    assert "most common passwords" in weak.text
    done = requests.post(mail_system.url("/reset"), timeout=10,
                         data={"token": token_of(link), "password": NEW_PASSWORD,
                               "confirm": NEW_PASSWORD})
    assert done.status_code == 200
    assert log_in(mail_system, email, NEW_PASSWORD).status_code == 201


def test_a_reset_for_an_unknown_address_answers_alike_and_mails_nothing(mail_system):
    known, unknown = new_email(), new_email()
    sign_up(mail_system, known)
    answers = [requests.post(mail_system.url("/api/v1/password-resets"), json={"email": e},
                             timeout=10) for e in (unknown, known)]
    assert answers[0].status_code == answers[1].status_code == 202
    assert answers[0].json() == answers[1].json()
    mail_to(mail_system, known, count=2)  # the known address's reset mail arrived...
    rows = mail_system.query(
        "delivery", "SELECT count(*) FROM deliveries WHERE json_extract(doc, '$.recipient') = ?",
        (unknown,))
    assert rows[0][0] == 0  # ...and nothing was ever queued for the unknown one


def test_an_expired_link_is_refused_with_a_json_error(mail_system):
    email = new_email()
    sign_up(mail_system, email)
    token = token_of(link_in(mail_to(mail_system, email)[0], "/verify"))
    mail_system.execute(
        "accounts",
        "UPDATE tokens SET doc = json_set(doc, '$.expires_at', "
        "json('{\"$date\": \"2000-01-01T00:00:00.000Z\"}'))",
    )
    expired = requests.post(mail_system.url("/api/v1/accounts/verify"), json={"token": token},
                            timeout=10)
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "token_expired"
    page = requests.post(mail_system.url("/verify"), data={"token": token}, timeout=10)
    assert page.status_code == 410
    assert "expired" in page.text


@pytest.mark.parametrize("token", ["garbage", "A" * 43, "Ünïcødé-🙂"])
def test_a_token_that_is_not_ours_is_a_400_json_error(mail_system, token):
    refused = requests.post(mail_system.url("/api/v1/accounts/verify"), json={"token": token},
                            timeout=10)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "token_invalid"
    assert "Traceback" not in refused.text


def test_a_new_verification_link_can_be_asked_for_a_few_times(mail_system):
    email = new_email()
    sign_up(mail_system, email)
    headers = {"Authorization": f"Bearer {log_in(mail_system, email).json()['token']}"}
    resend = mail_system.url("/api/v1/accounts/verify/resend")
    answers = [requests.post(resend, headers=headers, timeout=10) for _ in range(4)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert int(answers[-1].headers["Retry-After"]) > 0
    *_, newest = mail_to(mail_system, email, count=4)
    assert requests.post(mail_system.url("/verify"), data={"token": token_of(
        link_in(newest, "/verify"))}, timeout=10).status_code == 200
    done = requests.post(resend, headers=headers, timeout=10)
    assert done.status_code == 409
    assert done.json()["error"]["code"] == "already_verified"


def test_signing_up_again_with_a_taken_address_mails_its_owner(mail_system):
    email = new_email()
    sign_up(mail_system, email)
    again = sign_up(mail_system, email.upper())
    assert again.status_code == 201
    _, told = mail_to(mail_system, email, count=2)
    assert told["Subject"] == "You already have a Just in Case account"
    assert "/reset?token=" in told.get_body(("plain",)).get_content()


def test_a_unicode_address_gets_its_mail(mail_system):
    email = f"zoë-{uuid.uuid4().hex[:8]}@example.org"
    assert sign_up(mail_system, email).status_code == 201
    [mail] = mail_to(mail_system, email)
    assert "/verify?token=" in mail.get_body(("plain",)).get_content()


def test_readiness_expects_delivery(mail_system):
    ready = requests.get(mail_system.url("/readyz"), timeout=10)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"broker": "ok", "accounts": "ok", "delivery": "ok"}



def publish(system: System, envelope: dict) -> None:
    publish_event(system.environ["AMQP_URI"], envelope)


def state_of(system: System, record_id: str) -> str | None:
    rows = system.query("delivery", "SELECT json_extract(doc, '$.state') FROM deliveries "
                                    "WHERE id = ?", (record_id,))
    return rows[0][0] if rows else None


def test_marketing_mail_goes_with_consent_and_stops_at_one_click(mail_system):
    email, user_id = new_email(), f"user-{uuid.uuid4().hex[:8]}"
    publish(mail_system, new_event(
        "ConsentChanged", {"user_id": user_id, "marketing": {"email": True}, "cookies": {},
                           "source": "web"}, producer="privacy", now=datetime.now(UTC)))
    wait_for(lambda: mail_system.query("delivery", "SELECT count(*) FROM consents WHERE id = ?",
                                       (user_id,))[0][0] == 1, what="the consent to be known")
    news = {"headline": "Pausing is here", "body": "Going on holiday? Pause your switch."}
    rpc = RpcClientPool(mail_system.environ["AMQP_URI"], size=1, timeout=10)
    try:
        rpc.call("delivery", "send", "product_news", "news-1", email, news, user_id=user_id)
        [mail] = mail_to(mail_system, email)
        link = mail["List-Unsubscribe"].strip("<>")
        assert link.startswith(mail_system.url("/u/"))
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

        page = requests.get(link, timeout=10)
        assert page.status_code == 200 and "<button" in page.text
        clicked = requests.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=10)
        assert clicked.status_code == 200 and "unsubscribed" in clicked.text

        later = rpc.call("delivery", "send", "product_news", "news-2", email, news,
                         user_id=user_id)
        wait_for(lambda: state_of(mail_system, later["id"]) == "suppressed",
                 what="the next news to be held back")
    finally:
        rpc.close()
    assert len(mail_to(mail_system, email)) == 1
    forged = requests.get(mail_system.url("/u/" + "A" * 60 + "." + "B" * 43), timeout=10)
    assert forged.status_code == 404
    assert "not valid" in forged.text
