"""The gateway's switch, check-in link, metrics and readiness behaviour that needs no
service: refusals before any RPC, HTML pages with their own CSP, and what is reported
when the scheduler cannot be reached (the RPC pool points where nothing listens)."""

from __future__ import annotations

import pytest

from gateway.app import create_app
from gateway.liveness import loop_status
from gateway.openapi import build_spec
from gateway.pages import LINK_PAGE_CSP as PAGE_CSP
from services.scheduler.tokens import TOKEN_LENGTH
from shared.config import load_settings
from shared.rpc.client import RpcClientPool

WELL_FORMED = "A" * TOKEN_LENGTH


@pytest.fixture
def client(tmp_path):
    settings = load_settings({"JICM_ENV": "test", "JICM_DATA_DIR": str(tmp_path / "data"),
                              "JICM_SERVICES": "accounts,scheduler"})
    unreachable = RpcClientPool("amqp://guest:guest@127.0.0.1:1/", size=1, timeout=1,
                                connect_timeout=0.5)
    return create_app(settings, rpc=unreachable).test_client()


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/v1/switches"), ("POST", "/api/v1/switches"),
    ("GET", "/api/v1/switches/abc"), ("PUT", "/api/v1/switches/abc"),
    ("POST", "/api/v1/checkins"),
])
def test_switch_routes_need_a_session(client, method, path):
    response = client.open(path, method=method, json={})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("token", ["short", "A" * (TOKEN_LENGTH + 1),
                                   "A" * (TOKEN_LENGTH - 1) + "!"])
def test_a_link_that_cannot_be_a_token_is_a_404_page_without_asking_anyone(client, token):
    for method in ("GET", "POST"):
        response = client.open(f"/c/{token}", method=method, data={"confirm": "yes"})
        assert response.status_code == 404
        assert response.mimetype == "text/html"
        assert "not valid" in response.get_data(as_text=True)


def test_link_pages_carry_their_own_policy_and_are_not_indexed(client):
    response = client.get(f"/c/{'x' * 5}")
    assert response.headers["Content-Security-Policy"] == PAGE_CSP
    assert "script-src" not in PAGE_CSP and "default-src 'none'" in PAGE_CSP
    assert "form-action 'self'" in PAGE_CSP
    assert response.headers["X-Robots-Tag"] == "noindex, nofollow"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    assert '<link rel="stylesheet" href="/static/site.css">' in page
    assert "<script" not in page and "<style" not in page


@pytest.mark.parametrize("form, headers", [
    ({}, {}),
    ({"confirm": "no"}, {}),
    ({"confirm": "yes"}, {"Sec-Fetch-Site": "cross-site"}),
    ({"confirm": "yes"}, {"Origin": "https://evil.example"}),
])
def test_a_post_that_did_not_come_from_our_form_is_refused_before_any_check_in(
    client, form, headers
):
    response = client.post(f"/c/{WELL_FORMED}", data=form, headers=headers)
    assert response.status_code == 403
    assert "use the button" in response.get_data(as_text=True)


def test_when_the_scheduler_is_unreachable_the_link_page_says_so_in_html(client):
    response = client.get(f"/c/{WELL_FORMED}")
    assert response.status_code == 503
    assert response.mimetype == "text/html"
    assert "Traceback" not in response.get_data(as_text=True)


def test_metrics_say_the_gateway_is_up_and_the_scheduler_is_not(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert "jicm_gateway_up 1.0" in text
    assert "jicm_scheduler_up 0.0" in text
    assert "jicm_scheduler_lag_seconds" not in text


def test_readiness_names_a_scheduler_loop_that_cannot_be_reached(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["scheduler_loop"] == "unreachable"


@pytest.mark.parametrize("figures, status", [
    (None, "unreachable"),
    ({"heartbeat_age_seconds": None}, "no heartbeat yet"),
    ({"heartbeat_age_seconds": 31.0}, "stale: last heartbeat 31 s ago"),
    ({"heartbeat_age_seconds": 29.0}, "ok"),
])
def test_the_loop_counts_as_alive_only_with_a_recent_heartbeat(figures, status):
    assert loop_status(figures, stale_after=30) == status


def test_the_link_pages_are_documented_as_html_with_html_errors():
    document = build_spec("https://justincase.example")
    for method in ("get", "post"):
        responses = document["paths"]["/c/{token}"][method]["responses"]
        assert list(responses["200"]["content"]) == ["text/html"]
        for code in ("404", "409", "410"):
            assert "text/html" in responses[code]["content"]
    assert "security" not in document["paths"]["/c/{token}"]["get"]
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == [
        "text/plain"]
