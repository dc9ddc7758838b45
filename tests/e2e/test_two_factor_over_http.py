"""Two-factor sign-in over real HTTP, against real processes (gunicorn serving the gateway,
the accounts service under nameko, RabbitMQ between them): set up with a first code, then a
log-in with a wrong code fails, a recovery code works once, and the app's code works. Every
answer is checked against the API's own OpenAPI document (the fuzzing in
test_openapi_conformance.py only meets accounts without two-factor sign-in)."""

from __future__ import annotations

import time
import uuid

import jsonschema
import pyotp
import pytest
import requests

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"


class Documented:
    """Answers checked against the running API's OpenAPI document."""

    def __init__(self, system) -> None:
        self.document = requests.get(system.url("/api/v1/openapi.json"), timeout=10).json()

    def check(self, method: str, path: str, answer: requests.Response) -> requests.Response:
        responses = self.document["paths"][path][method.lower()]["responses"]
        assert str(answer.status_code) in responses, f"{method} {path}: {answer.status_code}"
        documented = responses[str(answer.status_code)]
        if "$ref" in documented:  # a shared error answer
            documented = self.document["components"]["responses"][
                documented["$ref"].rsplit("/", 1)[1]]
        if "content" in documented:
            schema = documented["content"]["application/json"]["schema"]
            # The whole document is the root, so its `#/components/...` references resolve.
            jsonschema.Draft202012Validator({**self.document, **schema}).validate(answer.json())
        return answer


@pytest.fixture
def documented(accounts_system) -> Documented:
    return Documented(accounts_system)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed_up_and_in(system) -> tuple[str, str]:
    email = f"user-{uuid.uuid4().hex[:12]}@example.org"
    requests.post(system.url("/api/v1/accounts"), timeout=10, json={
        "email": email, "password": PASSWORD, "date_of_birth": "1990-01-01",
        "accept_policy_version": "2024-04-29"}).raise_for_status()
    answer = requests.post(system.url("/api/v1/sessions"), timeout=10,
                           json={"email": email, "password": PASSWORD})
    return email, answer.json()["token"]


def log_in(system, email: str, documented: Documented | None = None) -> dict:
    answer = requests.post(system.url("/api/v1/sessions"), timeout=10,
                           json={"email": email, "password": PASSWORD})
    if documented:
        documented.check("POST", "/api/v1/sessions", answer)
    assert answer.status_code == 201
    return answer.json()


def second_step(system, documented: Documented, challenge: str,
                **proof: str) -> requests.Response:
    answer = requests.post(system.url("/api/v1/sessions/totp"), timeout=10,
                           json={"challenge": challenge, **proof})
    return documented.check("POST", "/api/v1/sessions/totp", answer)


def test_a_totp_log_in_with_a_wrong_code_fails_and_a_recovery_code_works_once(accounts_system,
                                                                              documented):
    system = accounts_system
    email, token = signed_up_and_in(system)

    started = documented.check("POST", "/api/v1/me/totp", requests.post(
        system.url("/api/v1/me/totp"), headers=bearer(token), timeout=10))
    assert started.status_code == 201
    setup = started.json()
    assert setup["qr_svg"].startswith("<svg")
    totp = pyotp.TOTP(setup["secret"])
    status = documented.check("GET", "/api/v1/me/totp", requests.get(
        system.url("/api/v1/me/totp"), headers=bearer(token), timeout=10))
    assert status.json()["enabled"] is False

    wrong_first = documented.check("POST", "/api/v1/me/totp/confirm", requests.post(
        system.url("/api/v1/me/totp/confirm"), headers=bearer(token),
        json={"code": totp.at(time.time() + 600)}, timeout=10))
    assert wrong_first.status_code == 400
    confirmed = documented.check("POST", "/api/v1/me/totp/confirm", requests.post(
        system.url("/api/v1/me/totp/confirm"), headers=bearer(token),
        json={"code": totp.now()}, timeout=10))
    assert confirmed.status_code == 200
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 10

    # At rest: neither the secret nor a recovery code is readable in the database.
    [(doc,)] = system.query("accounts", "SELECT doc FROM users WHERE json_extract(doc, "
                                        "'$.email_key') = ?", (email,))
    assert setup["secret"] not in doc
    stored_codes = system.query("accounts", "SELECT doc FROM recovery_codes")
    assert not any(code in row[0] for row in stored_codes for code in codes)

    answer = log_in(system, email, documented)
    assert answer["token"] is None and answer["second_step"] == "totp"
    wrong = second_step(system, documented, answer["challenge"],
                        code=totp.at(time.time() + 600))
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "wrong_code"

    recovered = second_step(system, documented, answer["challenge"], recovery_code=codes[0])
    assert recovered.status_code == 201
    me = requests.get(system.url("/api/v1/me"), headers=bearer(recovered.json()["token"]),
                      timeout=10)
    assert me.status_code == 200 and me.json()["email"] == email

    again = second_step(system, documented, log_in(system, email)["challenge"],
                        recovery_code=codes[0])
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "wrong_code"

    # The confirming code is spent: the app's next one logs in.
    with_app = second_step(system, documented, log_in(system, email)["challenge"],
                           code=totp.at(time.time() + 30))
    assert with_app.status_code == 201


def test_turning_two_factor_off_needs_the_password_and_a_code(accounts_system, documented):
    system = accounts_system
    email, token = signed_up_and_in(system)
    setup = requests.post(system.url("/api/v1/me/totp"), headers=bearer(token),
                          timeout=10).json()
    totp = pyotp.TOTP(setup["secret"])
    requests.post(system.url("/api/v1/me/totp/confirm"), headers=bearer(token),
                  json={"code": totp.now()}, timeout=10).raise_for_status()

    wrong_password = documented.check("POST", "/api/v1/me/totp/disable", requests.post(
        system.url("/api/v1/me/totp/disable"), headers=bearer(token),
        json={"password": "not my password at all", "code": totp.at(time.time() + 30)},
        timeout=10))
    assert wrong_password.status_code == 403
    missing_code = requests.post(system.url("/api/v1/me/totp/disable"), headers=bearer(token),
                                 json={"password": PASSWORD}, timeout=10)
    assert missing_code.status_code == 422

    off = documented.check("POST", "/api/v1/me/totp/disable", requests.post(
        system.url("/api/v1/me/totp/disable"), headers=bearer(token),
        json={"password": PASSWORD, "code": totp.at(time.time() + 30)}, timeout=10))
    assert off.status_code == 200 and off.json()["enabled"] is False
    assert log_in(system, email)["token"] is not None
