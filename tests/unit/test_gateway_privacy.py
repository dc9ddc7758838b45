"""The privacy routes at the gateway, with the services replaced by a recording stand-in:
the browser's privacy signals reach privacy on every consent request, closing the account
is an erasure with the password, bad input is refused before any call, and the export
downloads as a file."""

from __future__ import annotations

import pytest

from gateway.app import create_app
from services.privacy.notices import current_notice
from shared.config import ConfigError, load_settings

TOKEN = "t" * 43
PROFILE = {"id": "user-1", "email": "ada@example.org", "email_verified": True,
           "created_at": "2030-01-01T00:00:00Z", "policy_version": "2024-04-29"}
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CONSENT = {"marketing": {"email": False, "postal": False, "phone": False, "sms": False},
           "cookies": {"analytics": False, "marketing": False}, "policy_version": "2024-04-29",
           "policy_accepted_at": None, "sale_and_sharing": "opted_out", "signal": None,
           "kept_off": [], "updated_at": None}
CREATED = {"id": "req-1", "type": "erasure", "status": "pending",
           "due_at": "2030-01-31T00:00:00Z"}


class RecordingRpc:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, tuple]] = []
        self.answers = {
            ("accounts", "resolve_session"): {"profile": PROFILE,
                                              "expires_at": "2030-01-15T00:00:00Z"},
            ("privacy", "get_consent"): CONSENT,
            ("privacy", "update_consent"): CONSENT,
            ("privacy", "create_request"): CREATED,
            ("privacy", "download_export"): {"format": "jicm-export/1", "services": {}},
        }

    def call(self, service, method, *args, timeout=None, context=None):
        self.calls.append((service, method, args))
        return self.answers[(service, method)]

    def to(self, method: str) -> list[tuple]:
        return [args for service, name, args in self.calls
                if (service, name) == ("privacy", method)]


@pytest.fixture
def rpc():
    return RecordingRpc()


@pytest.fixture
def client(tmp_path, rpc):
    settings = load_settings({"JICM_ENV": "test", "JICM_DATA_DIR": str(tmp_path / "data")})
    return create_app(settings, rpc=rpc).test_client()


@pytest.mark.parametrize("headers, gpc, dnt", [
    ({}, False, False),
    ({"Sec-GPC": "1"}, True, False),
    ({"DNT": "1"}, False, True),
    ({"Sec-GPC": "0", "DNT": "0"}, False, False),
])
def test_the_browsers_privacy_signals_reach_privacy_on_reads_and_writes(client, rpc, headers,
                                                                        gpc, dnt):
    client.get("/api/v1/privacy/consent", headers={**BEARER, **headers})
    client.put("/api/v1/privacy/consent", json={"marketing": {"email": True}},
               headers={**BEARER, **headers, "User-Agent": "Firefox/130"})
    [(_, read)] = rpc.to("get_consent")
    [(_, changes, written)] = rpc.to("update_consent")
    assert (read["gpc"], read["dnt"]) == (written["gpc"], written["dnt"]) == (gpc, dnt)
    assert changes == {"marketing": {"email": True}}, "only what was given"
    assert written["user_agent"] == "Firefox/130"


def test_closing_the_account_is_an_erasure_that_needs_the_password(client, rpc):
    answer = client.delete("/api/v1/me", json={"password": "correct horse battery staple"},
                           headers=BEARER)
    assert answer.status_code == 202 and answer.get_json()["id"] == "req-1"
    [(user_id, email, request, _)] = rpc.to("create_request")
    assert (user_id, email) == ("user-1", "ada@example.org")
    assert request == {"type": "erasure", "password": "correct horse battery staple"}
    refused = client.delete("/api/v1/me", json={}, headers=BEARER)
    assert refused.status_code == 422 and "password" in refused.get_json()["error"]["message"]


@pytest.mark.parametrize("path, body", [
    ("/api/v1/privacy/requests", {"type": "erasure"}),
    ("/api/v1/privacy/requests", {"type": "export", "password": "x"}),
    ("/api/v1/privacy/requests", {"type": "everything"}),
    ("/api/v1/privacy/consent", {"marketing": {"email": "yes"}}),
    ("/api/v1/privacy/consent", {}),
])
def test_bad_requests_are_refused_before_any_call(client, rpc, path, body):
    method = client.post if path.endswith("requests") else client.put
    answer = method(path, json=body, headers=BEARER)
    assert answer.status_code == 422
    assert [call for call in rpc.calls if call[0] == "privacy"] == []


def test_a_request_id_that_cannot_be_one_is_a_404_without_asking(client, rpc):
    answer = client.get("/api/v1/privacy/requests/../../etc", headers=BEARER)
    assert answer.status_code == 404
    assert client.get("/api/v1/privacy/requests/a%20b", headers=BEARER).status_code == 404
    assert rpc.to("get_request") == []


def test_an_export_downloads_as_a_json_file(client):
    answer = client.get("/api/v1/privacy/requests/req-1/download", headers=BEARER)
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    assert answer.headers["Content-Disposition"] == (
        'attachment; filename="just-in-case-export-req-1.json"')
    assert answer.get_json()["format"] == "jicm-export/1"
    assert answer.headers["Cache-Control"] == "no-store"


def test_privacy_does_not_start_without_the_published_text_of_the_policy_version():
    assert current_notice("2024-04-29").sha256
    with pytest.raises(ConfigError, match="no published text"):
        current_notice("2031-01-01")
    with pytest.raises(ConfigError):
        current_notice("../../etc/passwd")


def test_the_api_lists_the_receipts_that_prove_ones_choices(client, rpc):
    rpc.answers[("privacy", "list_receipts")] = {"receipts": [{
        "id": "r1", "at": "2030-01-01T00:00:00Z", "method": "api",
        "changes": [{"purpose": "marketing.email", "choice": True}],
        "notice_version": "2024-04-29", "notice_sha256": "ab" * 32,
        "ip_truncated": "203.0.113.0/24", "user_agent": "curl"}]}
    answer = client.get("/api/v1/privacy/consent/receipts", headers=BEARER)
    assert answer.status_code == 200
    assert answer.get_json()["receipts"][0]["changes"] == [
        {"purpose": "marketing.email", "choice": True}]
    assert rpc.to("list_receipts") == [("user-1",)]
    assert client.get("/api/v1/privacy/consent/receipts").status_code == 401


def test_an_erasure_is_followed_with_its_progress_token_and_no_session(client, rpc):
    rpc.answers[("privacy", "erasure_progress")] = {
        "id": "req-1", "type": "erasure", "status": "in_progress",
        "created_at": "2030-01-01T00:00:00Z", "due_at": "2030-01-31T00:00:00Z",
        "overdue": False, "services": {"vault": {"status": "done"}}}
    answer = client.post("/api/v1/privacy/erasures/req-1/progress", json={"token": "p" * 43})
    assert answer.status_code == 200 and answer.get_json()["status"] == "in_progress"
    [(request_id, token, context)] = rpc.to("erasure_progress")
    assert (request_id, token) == ("req-1", "p" * 43) and "ip" in context
    assert not [call for call in rpc.calls if call[1] == "resolve_session"], "no session needed"
    for body in ({}, {"token": "short"}, {"token": "p" * 43, "more": 1}):
        assert client.post("/api/v1/privacy/erasures/req-1/progress", json=body
                           ).status_code == 422
    assert len(rpc.to("erasure_progress")) == 1


def test_the_openapi_document_describes_the_new_privacy_routes(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert "security" in paths["/api/v1/privacy/consent/receipts"]["get"]
    progress = paths["/api/v1/privacy/erasures/{request_id}/progress"]["post"]
    assert "security" not in progress and "404" in progress["responses"]
