"""The gateway's HTTP behaviour that needs no service: errors, limits, headers, OpenAPI.

Every refusal here happens before any RPC, so the app's RPC pool points at a port
where nothing listens; a test that reached it would fail with a 503.
"""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from gateway.app import create_app
from gateway.openapi import build_spec
from gateway.site import SITE_NAMES
from shared.config import load_settings
from shared.rpc.client import RpcClientPool

SIGN_UP = {
    "email": "ada@example.org",
    "password": "correct horse battery staple",
    "date_of_birth": "1990-01-01",
    "accept_policy_version": "2024-04-29",
}


@pytest.fixture
def app(tmp_path):
    settings = load_settings({"JICM_ENV": "test", "JICM_DATA_DIR": str(tmp_path / "data"),
                              "JICM_MAX_BODY_BYTES": "4096"})
    unreachable = RpcClientPool("amqp://guest:guest@127.0.0.1:1/", size=1, timeout=1,
                                connect_timeout=0.5)
    return create_app(settings, rpc=unreachable)


@pytest.fixture
def client(app):
    return app.test_client()


def error_of(response) -> dict:
    assert response.is_json, response.data
    return response.get_json()["error"]


def test_malformed_json_is_a_400_naming_the_problem(client):
    response = client.post("/api/v1/accounts", data=b'{"email": ', content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_json"
    assert "not valid JSON" in error_of(response)["message"]


def test_a_body_that_is_not_json_is_a_415(client):
    response = client.post("/api/v1/accounts", data="email=a", content_type="text/plain")
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"


def test_a_huge_body_is_a_413(client):
    response = client.post("/api/v1/accounts", json={**SIGN_UP, "password": "x" * 10_000})
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


@pytest.mark.parametrize(
    "body, field",
    [
        ({k: v for k, v in SIGN_UP.items() if k != "email"}, "email"),
        ({**SIGN_UP, "email": 42}, "email"),
        ({**SIGN_UP, "date_of_birth": "01/02/1990"}, "date_of_birth"),
        ({**SIGN_UP, "date_of_birth": "1990-02-30"}, "date_of_birth"),
        ({**SIGN_UP, "is_admin": True}, "is_admin"),
        ({**SIGN_UP, "password": ["a", "list"]}, "password"),
        ({**SIGN_UP, "email": None}, "email"),
    ],
)
def test_invalid_fields_are_a_422_naming_the_field(client, body, field):
    response = client.post("/api/v1/accounts", json=body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "validation_failed"
    assert error["message"].startswith(field)
    assert any(problem["field"] == field for problem in error["details"]["errors"])


@pytest.mark.parametrize("body", [b"[]", b'"a string"', b"42", b"null"])
def test_a_body_that_is_not_an_object_is_a_422(client, body):
    response = client.post("/api/v1/accounts", data=body, content_type="application/json")
    assert response.status_code == 422
    assert "JSON object" in error_of(response)["message"]


def test_nan_is_not_json(client):
    response = client.post("/api/v1/accounts", data=b'{"email": NaN}',
                           content_type="application/json")
    assert response.status_code == 400


def test_an_unknown_path_is_a_json_404(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_a_wrong_method_is_a_json_405_that_says_what_is_allowed(client):
    response = client.put("/api/v1/accounts", json={})
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    "header", [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer short", "Bearer has spaces in it x"]
)
def test_me_without_a_usable_token_is_a_401_before_any_service_is_asked(client, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_service_that_cannot_be_reached_is_a_503_without_internals(client):
    response = client.post("/api/v1/accounts", json=SIGN_UP)
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "service_unavailable"
    assert "Traceback" not in response.get_data(as_text=True)
    assert "amqp" not in response.get_data(as_text=True).lower()


def test_every_answer_carries_security_headers_and_a_request_id(client):
    response = client.get("/healthz", headers={"X-Request-ID": "trace-me-12345"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "trace-me-12345"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_a_request_id_that_could_forge_log_lines_is_replaced(client):
    forged = 'x" level="CRITICAL'
    response = client.get("/healthz", headers={"X-Request-ID": forged})
    assert response.headers["X-Request-ID"] != forged


def test_unicode_survives_validation_errors(client):
    response = client.post("/api/v1/accounts", json={**SIGN_UP, "date_of_birth": "日本語"})
    assert response.status_code == 422


def test_the_openapi_document_is_valid_and_covers_every_route(app, client):
    document = client.get("/api/v1/openapi.json").get_json()
    validate(document)
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "delete", "patch")
    }
    routed = set()
    for rule in app.url_map.iter_rules():
        # The web site's pages (gateway/site) are for people, not programs: not API.
        if rule.endpoint.partition(".")[0] in SITE_NAMES:
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routed.add((method, path))
    assert routed == documented


def test_the_openapi_request_schemas_are_the_validation_models():
    document = build_spec("https://justincase.example")
    sign_up = document["components"]["schemas"]["SignUp"]
    assert set(sign_up["required"]) == set(SIGN_UP)
    assert sign_up["additionalProperties"] is False
