"""Messages over real HTTP against `make run`'s processes: gunicorn serving the gateway,
accounts, the scheduler and the vault under nameko, RabbitMQ between them. The scheduler
answers the vault's questions about switches; to release a user's messages on the spot,
the test publishes the scheduler's CheckInMissed itself (the whole story, with a switch
that really fires, is `test_release_story.py`)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import System, start_system, system_environment
from tests.e2e.people import Sender, client_address
from tests.e2e.test_openapi_conformance import SCHEMATHESIS
from tests.helpers import wait_for
from tests.service.vault_helpers import EventTap, check_in_missed, publish

pytestmark = pytest.mark.e2e



@pytest.fixture(scope="module")
def vault_system(tmp_path_factory, vhost) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("vault-system")
    # Behind a "proxy" (this test), so each test user can come from an address of its own
    # and the per-client limits on sign-up and reading do not add up across tests.
    environ = system_environment(tmp, vhost, "accounts,scheduler,vault",
                                 JICM_TRUSTED_PROXIES="1")
    system = start_system(tmp, environ)
    yield system
    system.supervisor.stop_all()


class User(Sender):
    """A signed-up, logged-in user of the running system, with their default switch."""

    def __init__(self, system: System) -> None:
        super().__init__(system)
        # The scheduler makes the default switch when it hears of the new account.
        self.switch_id = wait_for(self.default_switch, timeout=20,
                                  what="the default switch of a new account")

    def write(self, **fields) -> requests.Response:
        body = {"subject": "For the family", "body": "The code of the safe is 4921.",
                "recipients": [{"name": "Grace Hopper", "email": "grace@example.org"}], **fields}
        return self.call("POST", "/api/v1/messages", json=body)


@pytest.fixture
def ada(vault_system) -> User:
    return User(vault_system)


@pytest.fixture
def eve(vault_system) -> User:
    return User(vault_system)


def error_of(response: requests.Response) -> dict:
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    return response.json()["error"]


# Writing, reading, changing, deleting ----------------------------------------------------


def test_an_author_writes_reads_changes_and_deletes_a_message(ada):
    created = ada.write(sender_name="Ada Lovelace", inline=True,
                        recipients=[{"name": "Grace Hopper", "email": "grace@example.org"},
                                    {"name": "Émile Zola", "email": "emile@example.fr"}])
    assert created.status_code == 201
    message_id = created.json()["id"]

    listed = ada.call("GET", "/api/v1/messages").json()["messages"]
    assert [(m["id"], m["subject"], m["recipient_count"]) for m in listed] == [
        (message_id, "For the family", 2)]
    assert "body" not in listed[0]

    message = ada.call("GET", f"/api/v1/messages/{message_id}").json()
    assert message["body"] == "The code of the safe is 4921."
    assert message["switch_id"] == ada.switch_id
    assert [r["name"] for r in message["recipients"]] == ["Grace Hopper", "Émile Zola"]
    assert (message["sender_name"], message["inline"], message["state"]) == (
        "Ada Lovelace", True, "sealed")

    changed = ada.call("PUT", f"/api/v1/messages/{message_id}",
                          json={"body": "Neuer Code: 7734 ✓", "inline": False})
    assert changed.status_code == 200
    assert (changed.json()["body"], changed.json()["inline"]) == ("Neuer Code: 7734 ✓", False)
    assert changed.json()["subject"] == "For the family"

    assert ada.call("DELETE", f"/api/v1/messages/{message_id}").status_code == 204
    assert ada.call("GET", f"/api/v1/messages/{message_id}").status_code == 404
    assert ada.call("GET", "/api/v1/messages").json() == {"messages": []}


def test_another_users_message_is_a_404_exactly_like_one_that_does_not_exist(ada, eve):
    message_id = ada.write().json()["id"]
    missing = str(uuid.uuid4())
    for method, body in (("GET", None), ("PUT", {"subject": "mine"}), ("DELETE", None)):
        theirs = eve.call(method, f"/api/v1/messages/{message_id}", json=body)
        nothing = eve.call(method, f"/api/v1/messages/{missing}", json=body)
        assert theirs.status_code == nothing.status_code == 404
        assert error_of(theirs)["code"] == error_of(nothing)["code"] == "message_not_found"
    assert eve.call("GET", "/api/v1/messages").json() == {"messages": []}
    assert ada.call("GET", f"/api/v1/messages/{message_id}").json()["subject"] == (
        "For the family")


def test_another_users_switch_is_refused_like_a_missing_one(ada, eve):
    for switch_id in (ada.switch_id, str(uuid.uuid4())):
        refused = eve.write(switch_id=switch_id)
        assert refused.status_code == 404
        assert error_of(refused)["code"] == "switch_not_found"
    assert eve.write(switch_id=eve.switch_id).status_code == 201
    assert ada.call("GET", "/api/v1/messages").json() == {"messages": []}


def test_messages_need_a_session(vault_system):
    response = requests.get(vault_system.url("/api/v1/messages"), timeout=10)
    assert response.status_code == 401


# Plan limits ---------------------------------------------------------------------------------


def test_the_free_plan_limits_are_402s_naming_the_limit_and_its_value(ada):
    four = [{"name": f"R {n}", "email": f"r{n}@example.org"} for n in range(4)]
    too_many = ada.write(recipients=four)
    assert too_many.status_code == 402
    assert error_of(too_many)["details"] == {"limit": "recipients_per_message", "allowed": 3,
                                             "wanted": 4, "plan": "free"}
    too_long = ada.write(body="€" * 3414)  # 10242 bytes of UTF-8
    assert too_long.status_code == 402
    assert error_of(too_long)["details"] == {"limit": "body_bytes", "allowed": 10240,
                                             "wanted": 10242, "plan": "free"}
    for _ in range(3):
        assert ada.write().status_code == 201
    fourth = ada.write()
    assert fourth.status_code == 402
    error = error_of(fourth)
    assert error["code"] == "plan_limit_reached"
    assert error["details"] == {"limit": "messages_per_switch", "allowed": 3,
                                "wanted": 4, "plan": "free"}
    assert "3 messages per switch" in error["message"]
    assert len(ada.call("GET", "/api/v1/messages").json()["messages"]) == 3


# Bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, status, field",
    [
        (b'{"subject": "x", ', 400, None),
        (b'{"subject": "x", "body": "y"}', 422, "recipients"),
        (b'{"subject": 5, "body": "y", "recipients": [{"name": "G", "email": "g@x.org"}]}',
         422, "subject"),
        (b'{"subject": "x", "body": "y", "recipients": [{"name": "G", "email": "nope"}]}',
         422, "recipients.0.email"),
        (b'{"subject": "x", "body": "y", "recipients": []}', 422, "recipients"),
        (b'{"subject": "x", "body": "y", "recipients": [{"name": "G", "email": "g@x.org"}], '
         b'"state": "released"}', 422, "state"),
        (b'{"subject": "a\\nBcc: x@evil.org", "body": "y", '
         b'"recipients": [{"name": "G", "email": "g@x.org"}]}', 422, "subject"),
        (b'{"subject": "x", "body": "\\ud800", "recipients": [{"name": "G", "email": "g@x.org"}]}',
         422, "body"),
        (b"[]", 422, None),
    ],
)
def test_bad_bodies_are_refused_with_a_json_error_naming_the_problem(ada, raw, status, field):
    response = ada.call("POST", "/api/v1/messages", data=raw,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == status
    error = error_of(response)
    if field:
        assert error["message"].startswith(field)
    assert "Traceback" not in response.text
    assert ada.call("GET", "/api/v1/messages").json() == {"messages": []}


def test_a_huge_body_is_refused_before_it_is_read(ada):
    response = ada.write(body="x" * 2_000_000)
    assert response.status_code == 413


def test_unicode_is_welcome_everywhere(ada):
    created = ada.write(subject="Für dich 💌", body="日本語\nemoji ☂️\ttabs",
                        recipients=[{"name": "Zoë Ñandú", "email": "zoe@exämple.org"}])
    assert created.status_code == 201, created.text
    message = ada.call("GET", f"/api/v1/messages/{created.json()['id']}").json()
    assert (message["subject"], message["body"]) == ("Für dich 💌", "日本語\nemoji ☂️\ttabs")
    assert message["recipients"][0]["name"] == "Zoë Ñandú"


@pytest.mark.parametrize("message_id", ["x" * 65, "not a uuid", "%00"])
def test_a_message_id_that_cannot_exist_is_a_404(ada, message_id):
    assert ada.call("GET", f"/api/v1/messages/{message_id}").status_code == 404


# The release and the read page --------------------------------------------------------------


def release(system: System, user: User) -> list[dict]:
    """Fire the user's default switch as the scheduler would; the MessageReleased events."""
    tap = EventTap(system.environ["AMQP_URI"], "MessageReleased")
    try:
        before = len(user.call("GET", "/api/v1/messages").json()["messages"])
        publish(system.environ["AMQP_URI"], check_in_missed(user.id, user.switch_id))
        return wait_for(lambda: (events := tap.drain()) and len(events) >= before and events,
                        timeout=30, what="the release")
    finally:
        tap.close()


def test_a_released_message_is_read_on_its_page_by_each_recipient(vault_system, ada):
    message_id = ada.write(
        subject="Read me <b>now</b>", sender_name="Ada Lovelace",
        body="Line one\n<script>alert('gotcha')</script>\nLine three",
        recipients=[{"name": "Grace", "email": "grace@example.org"},
                    {"name": "Alan", "email": "alan@example.org"}],
    ).json()["id"]
    [event] = release(vault_system, ada)
    assert event["data"]["message_id"] == message_id
    grace, alan = event["data"]["recipients"]

    reader = {"X-Forwarded-For": client_address()}
    page = requests.get(vault_system.url(f"/r/{alan['read_token']}"), headers=reader, timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    html = page.text
    assert "A message from <strong>Ada Lovelace (" in html and "for Alan" in html
    assert "&lt;script&gt;alert(&#39;gotcha&#39;)&lt;/script&gt;" in html
    assert "<script>" not in html and "<b>now</b>" not in html
    assert "Line one\n" in html
    csp = page.headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'none'; script-src 'self'; style-src 'self';")
    assert "unsafe-inline" not in csp and "form-action 'none'" in csp
    assert "Set-Cookie" not in page.headers
    assert page.headers["X-Robots-Tag"].startswith("noindex")
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    again = requests.get(vault_system.url(f"/r/{grace['read_token']}"), headers=reader,
                         timeout=10)
    assert again.status_code == 200 and "for Grace" in again.text

    refused = ada.call("PUT", f"/api/v1/messages/{message_id}", json={"body": "too late"})
    assert refused.status_code == 409
    assert error_of(refused)["code"] == "message_released"
    assert ada.call("DELETE", f"/api/v1/messages/{message_id}").status_code == 409
    assert ada.call("GET", f"/api/v1/messages/{message_id}").json()["state"] == "released"

    log = Path(vault_system.environ["JICM_DATA_DIR"]).parent / "logs" / "gateway.log"
    # gunicorn writes the access line just after the answer: wait for it.
    logged = wait_for(lambda: (text := log.read_text()).count("/r/[redacted]") >= 2 and text,
                      timeout=10, what="the access log lines of both reads")
    assert alan["read_token"] not in logged and grace["read_token"] not in logged


@pytest.mark.parametrize("token", ["A" * 43, "short", "has.dots.in.it.and.more.than.twenty"])
def test_a_link_that_opens_nothing_is_a_404_page(vault_system, token):
    page = requests.get(vault_system.url(f"/r/{token}"), timeout=10)
    assert page.status_code == 404
    assert page.headers["Content-Type"].startswith("text/html")
    assert "This link does not open any message" in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_readiness_expects_the_vault(vault_system):
    ready = requests.get(vault_system.url("/readyz"), timeout=10)
    assert ready.json()["checks"] == {"broker": "ok", "accounts": "ok", "scheduler": "ok",
                                      "vault": "ok", "scheduler_loop": "ok"}


def test_the_messages_api_keeps_the_promises_of_its_openapi_document(vault_system, tmp_path):
    # Last in this module: its reads of /r/... use up the client's read allowance.
    user = User(vault_system)
    # A body far over the size limit is refused before it is read (413): a rejection too.
    (tmp_path / "schemathesis.toml").write_text(
        "[checks.negative_data_rejection]\nexpected-statuses = "
        '["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", '
        '"429", "5xx"]\n'
    )
    result = subprocess.run(
        [str(SCHEMATHESIS), "run", vault_system.url("/api/v1/openapi.json"),
         "--checks", "all", "--exclude-checks", "positive_data_acceptance",
         "--exclude-path", "/api/v1/sessions/current",
         "--include-tag", "messages", "--include-tag", "recipients",
         "--header", f"Authorization: {user.headers['Authorization']}",
         "--max-examples", "25", "--seed", "20261124", "--generation-database", "none",
         "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
