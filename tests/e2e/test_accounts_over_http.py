"""The sign-up / log-in / me / log-out slice over real HTTP, against real processes:
gunicorn serving the gateway, the accounts service under nameko, RabbitMQ between them."""

from __future__ import annotations

import uuid

import pytest
import requests

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.org"


def sign_up(system, email, password=PASSWORD, born="1990-01-01", **extra):
    body = {"email": email, "password": password, "date_of_birth": born,
            "accept_policy_version": "2024-04-29", **extra}
    return requests.post(system.url("/api/v1/accounts"), json=body, timeout=10)


def log_in(system, email, password=PASSWORD):
    return requests.post(system.url("/api/v1/sessions"),
                         json={"email": email, "password": password}, timeout=10)


def me(system, token):
    return requests.get(system.url("/api/v1/me"),
                        headers={"Authorization": f"Bearer {token}"}, timeout=10)


def user_count(system, email_key: str) -> int:
    rows = system.query(
        "accounts", "SELECT count(*) FROM users WHERE json_extract(doc, '$.email_key') = ?",
        (email_key,),
    )
    return rows[0][0]


def test_sign_up_log_in_read_me_and_log_out(accounts_system):
    email = new_email()
    created = sign_up(accounts_system, email)
    assert created.status_code == 201
    account = created.json()
    assert account == {"id": account["id"], "email": email, "email_verified": False}

    session = log_in(accounts_system, email)
    assert session.status_code == 201
    token = session.json()["token"]
    assert session.json()["expires_at"].endswith("Z")

    profile = me(accounts_system, token)
    assert profile.status_code == 200
    assert profile.json()["id"] == account["id"]
    assert profile.json()["email"] == email

    logged_out = requests.delete(accounts_system.url("/api/v1/sessions/current"),
                                 headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert logged_out.status_code == 204
    assert me(accounts_system, token).status_code == 401


def test_the_same_address_in_another_case_answers_alike_and_creates_nothing(accounts_system):
    email = new_email()
    first = sign_up(accounts_system, email)
    again = sign_up(accounts_system, email.upper(), password="a different long passphrase 7")
    assert first.status_code == again.status_code == 201
    assert set(first.json()) == set(again.json())
    assert user_count(accounts_system, email.casefold()) == 1
    assert log_in(accounts_system, email).status_code == 201
    assert log_in(accounts_system, email, "a different long passphrase 7").status_code == 401


def test_an_applicant_under_16_is_refused_and_nothing_is_stored(accounts_system):
    email = new_email()
    refused = sign_up(accounts_system, email, born="2015-05-05")
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "age_requirement"
    assert user_count(accounts_system, email.casefold()) == 0
    stored = accounts_system.query("accounts", "SELECT doc FROM users")
    assert email not in str(stored)


@pytest.mark.parametrize("password", ["short", "password1234", "aaaaaaaaaaaaaaaa"])
def test_a_weak_password_is_refused_with_a_json_error(accounts_system, password):
    refused = sign_up(accounts_system, new_email(), password=password)
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "weak_password"


def test_a_wrong_password_and_an_unknown_address_look_the_same(accounts_system):
    email = new_email()
    sign_up(accounts_system, email)
    wrong = log_in(accounts_system, email, "not the right password")
    unknown = log_in(accounts_system, new_email())
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_a_forged_token_is_refused(accounts_system):
    forged = me(accounts_system, "A" * 43)
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "invalid_token"


def test_an_expired_token_is_refused(accounts_system):
    email = new_email()
    sign_up(accounts_system, email)
    token = log_in(accounts_system, email).json()["token"]
    # Let the session run out, as if two weeks had passed. (Not used first: a gateway worker
    # that cached it holds its real expiry, two weeks away, and the database is edited
    # behind its back; that no entry outlives its session is tests/unit/test_session_cache.py.)
    accounts_system.execute(
        "accounts",
        "UPDATE sessions SET doc = json_set(doc, '$.expires_at', "
        "json('{\"$date\": \"2000-01-01T00:00:00.000Z\"}'))",
    )
    expired = me(accounts_system, token)
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "invalid_token"


@pytest.mark.parametrize(
    "body, content_type, status",
    [
        (b'{"email": "a@b.c", ', "application/json", 400),
        (b"email=a@b.c", "application/x-www-form-urlencoded", 415),
        (b'{"email": 1, "password": 2}', "application/json", 422),
        (b'{"email": "\\u00e9\\u00e8@\\u00e9x.org", "password": "\\ud83d\\ude00"}',
         "application/json", 401),
        (b'{"email": "a@b.c", "password": "x", "admin": true}', "application/json", 422),
    ],
)
def test_bad_log_in_bodies_get_clear_json_errors(accounts_system, body, content_type, status):
    response = requests.post(accounts_system.url("/api/v1/sessions"), data=body,
                             headers={"Content-Type": content_type}, timeout=10)
    assert response.status_code == status
    assert "error" in response.json()
    assert "Traceback" not in response.text


def test_a_huge_body_is_refused_before_it_is_read(accounts_system):
    response = requests.post(accounts_system.url("/api/v1/accounts"),
                             data=b"{" + b" " * 2_000_000 + b"}",
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 413


def test_readiness_reports_the_broker_and_accounts(accounts_system):
    ready = requests.get(accounts_system.url("/readyz"), timeout=10)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"broker": "ok", "accounts": "ok"}


def test_readiness_fails_and_names_accounts_when_it_is_down(accounts_system):
    accounts_system.supervisor.stop("accounts")
    try:
        ready = requests.get(accounts_system.url("/readyz"), timeout=15)
        assert ready.status_code == 503
        assert ready.json()["checks"]["accounts"] != "ok"
        refused = sign_up(accounts_system, new_email())
        assert refused.status_code in (503, 504)
    finally:
        accounts_system.supervisor.start("accounts")
        accounts_system.supervisor.wait_ready("gateway")
    # Requests queued while it was down expired instead of running late: nothing stored.
