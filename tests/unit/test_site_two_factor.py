"""The site's two-factor pages, with the services played by a fake (tests/unit/site_fakes.py):
the code page after the password, the recovery code instead, the set-up page with its QR
code and secret, the recovery codes shown once, turning it off; CSRF on each form and
every refusal beside its field."""

from __future__ import annotations

import base64
import re
from datetime import timedelta

import pytest

from shared.errors import AuthenticationFailed, Forbidden, ServiceError
from tests.unit.site_fakes import NOW, TOKEN, FakeServices, csrf_token, iso, refuse, site_app

CHALLENGE = "c" * 43
SVG = '<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0h1"/></svg>'
SETUP = {"secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
         "otpauth_uri": "otpauth://totp/Just%20in%20Case:ada%40example.org?secret=JBSW",
         "qr_svg": SVG}
SESSION = {"token": TOKEN, "expires_at": iso(NOW + timedelta(days=14))}


@pytest.fixture
def world():
    services = FakeServices()
    services.answer("accounts", "log_in", lambda body, client: {
        "token": None, "expires_at": iso(NOW + timedelta(minutes=5)), "second_step": "totp",
        "challenge": CHALLENGE})
    services.answer("accounts", "log_in_second_step", lambda body, client: SESSION)
    services.answer("accounts", "authenticate", services._authenticate)
    return services


@pytest.fixture
def client(tmp_path, world):
    return site_app(tmp_path, world).test_client()


@pytest.fixture
def signed_in(client):
    client.set_cookie("jicm_session", TOKEN)
    return client


def page_token(page: str) -> str:
    return csrf_token(page)


def password_step(client):
    token = csrf_token(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"csrf_token": token, "email": "ada@example.org",
                                       "password": "correct horse battery staple"})


def field_error(page: str, name: str) -> str:
    return re.search(rf'<small id="{name}-error" class="field-error">([^<]+)</small>', page)[1]


# Log-in --------------------------------------------------------------------------------------


def test_after_the_password_it_asks_for_the_code_and_sets_no_cookie_yet(client):
    answer = password_step(client)
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200
    assert "Your sign-in code" in page
    assert f'name="challenge" value="{CHALLENGE}"' in page
    assert "Use a recovery code" in page
    assert "jicm_session" not in answer.headers.get("Set-Cookie", "")


def test_the_right_code_signs_in(client, world):
    page = password_step(client).get_data(as_text=True)
    answer = client.post("/login/code", data={"csrf_token": page_token(page),
                                              "challenge": CHALLENGE, "code": "123456"})
    assert answer.status_code == 303
    assert "jicm_session=" in answer.headers["Set-Cookie"]
    [(body, _)] = world.asked("accounts", "log_in_second_step")
    assert body == {"challenge": CHALLENGE, "code": "123456", "recovery_code": None}


def test_a_wrong_code_is_said_beside_the_field_and_the_page_stays(client, world):
    world.answer("accounts", "log_in_second_step", refuse(AuthenticationFailed(
        "the code is not right, or was already used", code="wrong_code",
        details={"field": "code"})))
    page = password_step(client).get_data(as_text=True)
    answer = client.post("/login/code", data={"csrf_token": page_token(page),
                                              "challenge": CHALLENGE, "code": "654321"})
    text = answer.get_data(as_text=True)
    assert answer.status_code == 401
    assert field_error(text, "code") == "The code is not right, or was already used."
    assert f'value="{CHALLENGE}"' in text
    assert 'aria-invalid="true"' in text


def test_a_code_that_is_not_six_digits_is_refused_before_asking(client, world):
    page = password_step(client).get_data(as_text=True)
    answer = client.post("/login/code", data={"csrf_token": page_token(page),
                                              "challenge": CHALLENGE, "code": "12ab"})
    assert answer.status_code == 422
    assert field_error(answer.get_data(as_text=True), "code").startswith("Please type the 6")
    assert world.asked("accounts", "log_in_second_step") == []


def test_an_expired_sign_in_goes_back_to_the_password(client, world):
    world.answer("accounts", "log_in_second_step", refuse(AuthenticationFailed(
        "this sign-in has expired; please log in again with your password",
        code="challenge_invalid")))
    page = password_step(client).get_data(as_text=True)
    answer = client.post("/login/code", data={"csrf_token": page_token(page),
                                              "challenge": CHALLENGE, "code": "123456"})
    text = answer.get_data(as_text=True)
    assert "<h1>Log in</h1>" in text
    assert "This sign-in has expired" in text


def test_a_recovery_code_can_be_used_instead(client, world):
    page = password_step(client).get_data(as_text=True)
    switched = client.post("/login/code/recovery", data={"csrf_token": page_token(page),
                                                         "challenge": CHALLENGE})
    text = switched.get_data(as_text=True)
    assert 'name="recovery_code"' in text and 'name="code"' not in text
    answer = client.post("/login/code", data={"csrf_token": page_token(text),
                                              "challenge": CHALLENGE, "use": "recovery",
                                              "recovery_code": "abcd-efgh-jkmn"})
    assert answer.status_code == 303
    [(body, _)] = world.asked("accounts", "log_in_second_step")
    assert body["recovery_code"] == "abcd-efgh-jkmn" and body["code"] is None


@pytest.mark.parametrize("path", ["/login/code", "/login/code/recovery",
                                  "/app/account/two-factor/start",
                                  "/app/account/two-factor/confirm",
                                  "/app/account/two-factor/disable"])
def test_every_two_factor_form_needs_its_csrf_token(signed_in, world, path):
    answer = signed_in.post(path, data={"challenge": CHALLENGE, "code": "123456"})
    assert answer.status_code == 403
    assert not [call for call in world.calls if call[1] != "authenticate"]


# The account page ------------------------------------------------------------------------------


def test_setting_up_shows_the_qr_code_as_an_image_and_the_secret_as_text(signed_in, world):
    world.answer("accounts", "start_totp", lambda user_id: SETUP)
    world.answer("accounts", "totp_set_up", lambda user_id: SETUP)
    account = signed_in.get("/app/account").get_data(as_text=True)
    assert "Set up two-factor sign-in" in account
    started = signed_in.post("/app/account/two-factor/start",
                             data={"csrf_token": page_token(account)})
    assert started.status_code == 303
    page = signed_in.get(started.headers["Location"]).get_data(as_text=True)
    image = re.search(r'<img src="data:image/svg\+xml;base64,([^"]+)" alt="([^"]+)"', page)
    assert base64.b64decode(image[1]).decode() == SVG
    assert "QR code" in image[2]
    assert f'<code id="totp-secret" class="secret">{SETUP["secret"]}</code>' in page


def test_a_wrong_first_code_shows_the_same_set_up_again_with_the_error(signed_in, world):
    world.answer("accounts", "totp_set_up", lambda user_id: SETUP)
    world.answer("accounts", "confirm_totp", refuse(ServiceError(
        "the code is not right, or was already used", code="wrong_code",
        details={"field": "code"})))
    page = signed_in.get("/app/account/two-factor").get_data(as_text=True)
    answer = signed_in.post("/app/account/two-factor/confirm",
                            data={"csrf_token": page_token(page), "code": "000000"})
    text = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert field_error(text, "code") == "The code is not right, or was already used."
    assert SETUP["secret"] in text


def test_the_recovery_codes_are_shown_once_confirmed(signed_in, world):
    codes = [f"aaaa-bbbb-cc{n:02d}" for n in range(10)]
    world.answer("accounts", "totp_set_up", lambda user_id: SETUP)
    world.answer("accounts", "confirm_totp", lambda user_id, body: {
        "enabled_at": iso(NOW), "recovery_codes": codes})
    page = signed_in.get("/app/account/two-factor").get_data(as_text=True)
    answer = signed_in.post("/app/account/two-factor/confirm",
                            data={"csrf_token": page_token(page), "code": "123456"})
    text = answer.get_data(as_text=True)
    assert answer.status_code == 200
    assert all(f"<code>{code}</code>" in text for code in codes)
    assert "shown this once" in text
    assert "no-store" in answer.headers["Cache-Control"]


def test_without_a_set_up_under_way_the_set_up_page_goes_back_to_the_account(signed_in, world):
    world.answer("accounts", "totp_set_up", lambda user_id: None)
    answer = signed_in.get("/app/account/two-factor")
    assert answer.status_code == 303
    assert answer.headers["Location"].endswith("/app/account#two-factor")


def enabled(world) -> None:
    world.answer("accounts", "totp_status", lambda user_id: {
        "enabled": True, "enabled_at": iso(NOW), "recovery_codes_left": 7})


def test_turning_it_off_asks_the_password_and_a_code(signed_in, world):
    enabled(world)
    world.answer("accounts", "disable_totp", lambda user_id, body: {
        "enabled": False, "enabled_at": None, "recovery_codes_left": 0})
    page = signed_in.get("/app/account").get_data(as_text=True)
    assert "Recovery codes left: 7" in page
    answer = signed_in.post("/app/account/two-factor/disable", data={
        "csrf_token": page_token(page), "off_password": "correct horse battery staple",
        "off_code": "123456"})
    assert answer.status_code == 303
    [(_, body)] = world.asked("accounts", "disable_totp")
    assert body == {"password": "correct horse battery staple", "code": "123456",
                    "recovery_code": None}


def test_a_recovery_code_in_the_off_form_is_sent_as_one(signed_in, world):
    enabled(world)
    world.answer("accounts", "disable_totp", lambda user_id, body: {
        "enabled": False, "enabled_at": None, "recovery_codes_left": 0})
    page = signed_in.get("/app/account").get_data(as_text=True)
    signed_in.post("/app/account/two-factor/disable", data={
        "csrf_token": page_token(page), "off_password": "pw", "off_code": "abcd-efgh-jkmn"})
    [(_, body)] = world.asked("accounts", "disable_totp")
    assert body["recovery_code"] == "abcd-efgh-jkmn" and body["code"] is None


def test_a_wrong_password_to_turn_it_off_is_said_beside_the_password(signed_in, world):
    enabled(world)
    world.answer("accounts", "disable_totp", refuse(Forbidden(
        "your password is not the one you typed", code="wrong_password",
        details={"field": "password"})))
    page = signed_in.get("/app/account").get_data(as_text=True)
    answer = signed_in.post("/app/account/two-factor/disable", data={
        "csrf_token": page_token(page), "off_password": "wrong", "off_code": "123456"})
    text = answer.get_data(as_text=True)
    assert answer.status_code == 403
    assert field_error(text, "off_password") == "Your password is not the one you typed."


def test_turning_it_off_without_a_code_is_said_beside_the_code(signed_in, world):
    enabled(world)
    page = signed_in.get("/app/account").get_data(as_text=True)
    answer = signed_in.post("/app/account/two-factor/disable", data={
        "csrf_token": page_token(page), "off_password": "pw", "off_code": ""})
    assert answer.status_code == 422
    assert field_error(answer.get_data(as_text=True), "off_code").startswith("Please type")
    assert world.asked("accounts", "disable_totp") == []
