"""The pages behind links in mail, as far as the gateway decides alone: a GET shows a form
and asks no service (mail scanners open links), HTML carries its own CSP (the site's
stylesheets, no script), and forms that cannot be right are answered before any RPC.
The RPC pool points where nothing listens: a test that reached a service would see a 503
page."""

from __future__ import annotations

import pytest

from gateway.app import create_app
from shared.config import load_settings
from shared.rpc.client import RpcClientPool

TOKEN = "pZInsnUXTokAzofGN9KpMp-QpK13YBl4An7sZ3wuCsA"


@pytest.fixture
def client(tmp_path):
    settings = load_settings({"JICM_ENV": "test", "JICM_DATA_DIR": str(tmp_path / "data")})
    unreachable = RpcClientPool("amqp://guest:guest@127.0.0.1:1/", size=1, timeout=1,
                                connect_timeout=0.5)
    return create_app(settings, rpc=unreachable).test_client()


def assert_link_page_policy(response) -> None:
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp
    assert "style-src 'self'" in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp


@pytest.mark.parametrize("path, action", [("/verify", "/verify"), ("/reset", "/reset")])
def test_opening_a_link_shows_a_form_and_asks_no_service(client, path, action):
    response = client.get(f"{path}?token={TOKEN}")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert f'<form method="post" action="{action}">' in page
    assert f'name="token" value="{TOKEN}"' in page
    assert_link_page_policy(response)


def test_a_link_page_has_the_sites_look_and_no_script_or_navigation(client):
    page = client.get(f"/verify?token={TOKEN}").get_data(as_text=True)
    assert '<link rel="stylesheet" href="/static/site.css">' in page
    assert "<script" not in page and "<style" not in page
    assert 'aria-label="Main"' in page and "Log in" not in page


@pytest.mark.parametrize(
    "path", ["/verify", "/reset", "/verify?token=", "/reset?token=" + "x" * 300]
)
def test_a_link_without_a_usable_token_is_a_400_page(client, path):
    response = client.get(path)
    assert response.status_code == 400
    assert "link is incomplete" in response.get_data(as_text=True)


def test_a_token_in_a_page_cannot_inject_markup(client):
    response = client.get('/verify?token="><script>alert(1)</script>')
    page = response.get_data(as_text=True)
    assert "<script>" not in page
    assert "&#34;&gt;&lt;script&gt;" in page or "&quot;&gt;&lt;script&gt;" in page


def test_two_different_new_passwords_are_sent_back_before_any_service_is_asked(client):
    response = client.post("/reset", data={"token": TOKEN, "password": "one long passphrase",
                                           "confirm": "another long passphrase"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "not the same" in page
    assert f'value="{TOKEN}"' in page


def test_an_absurdly_long_password_is_sent_back_before_any_service_is_asked(client):
    response = client.post("/reset", data={"token": TOKEN, "password": "x" * 5000,
                                           "confirm": "x" * 5000})
    assert response.status_code == 422
    assert "12 to 256 characters" in response.get_data(as_text=True)


def test_a_service_outage_becomes_a_page_not_a_stack_trace(client):
    response = client.post("/verify", data={"token": TOKEN})
    assert response.status_code == 503
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "Traceback" not in page and "amqp" not in page.lower()


@pytest.mark.parametrize(
    "path, body",
    [("/api/v1/accounts/verify", {}), ("/api/v1/accounts/verify", {"token": 5}),
     ("/api/v1/password-resets", {"email": "a@b.c", "admin": True}),
     ("/api/v1/password-resets/confirm", {"token": TOKEN})],
)
def test_bad_json_bodies_are_422_naming_the_field(client, path, body):
    response = client.post(path, json=body)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "validation_failed"


def test_resending_the_verification_needs_a_session(client):
    response = client.post("/api/v1/accounts/verify/resend")
    assert response.status_code == 401


def test_the_openapi_document_says_pages_answer_html_and_their_refusals_too():
    from gateway.openapi import build_spec

    paths = build_spec("https://jic.example")["paths"]
    verify = paths["/verify"]["post"]["responses"]
    assert set(verify["200"]["content"]) == {"text/html"}
    assert set(verify["410"]["content"]) == {"application/json", "text/html"}
    api = paths["/api/v1/accounts/verify"]["post"]["responses"]
    assert api["410"] == {"$ref": "#/components/responses/410"}
