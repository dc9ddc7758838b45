"""Every part's /metrics after real traffic, against `make run`'s processes: each service on
its own port (shared/metrics.py), the gateway under gunicorn with two workers whose
counters add up whichever worker answers the scrape.

The traffic: a sender signs up, confirms the address, logs in (and once with a wrong
password), writes a message, checks in, asks for an export, and lets a seconds-long
switch fire, so that every counter the alert rules and the dashboard use has moved."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from deploy.local.supervisor import DEFAULT_SERVICES, metrics_port
from tests.e2e.conftest import System, free_port, start_system, system_environment
from tests.e2e.people import Sender
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

SERVICES = tuple(DEFAULT_SERVICES.split(","))


@pytest.fixture(scope="module")
def system(tmp_path_factory, vhost) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("metrics-system")
    environ = system_environment(
        tmp, vhost, DEFAULT_SERVICES,
        JICM_STRIPE_STANDIN_PORT=str(free_port()),
        JICM_TRUSTED_PROXIES="1",
        JICM_GATEWAY_WORKERS="2",
        JICM_DELIVERY_TICK="0.2",
        JICM_SCHEDULER_TICK="0.5",
        JICM_MIN_INTERVAL="2",
    )
    system = start_system(tmp, environ)
    yield system
    system.supervisor.stop_all()


@pytest.fixture(scope="module")
def traffic(system) -> Sender:
    """One sender's whole story, up to a released message."""
    sender = Sender(system, verified=True)
    wrong = requests.post(system.url("/api/v1/sessions"), headers=sender.client, timeout=10,
                          json={"email": sender.email, "password": "not the password at all"})
    assert wrong.status_code == 401
    written = sender.call("POST", "/api/v1/messages", json={
        "subject": "a farewell", "body": "thank you for everything",
        "recipients": [{"name": "Friend", "email": "friend@example.org"}]})
    assert written.status_code == 201, written.text
    assert sender.check_in().status_code == 200
    asked = sender.call("POST", "/api/v1/privacy/requests", json={"type": "export"})
    assert asked.status_code == 202, asked.text
    assert sender.call("GET", "/api/v1/billing").status_code == 200
    changed = sender.configure(interval_seconds=2, grace_seconds=2, reminders_seconds=[1])
    assert changed["interval_seconds"] == 2
    wait_for(lambda: sender.switch()["state"] == "released", timeout=90,
             what="the switch to fire and its release to finish")
    return sender


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a /metrics page: (name, labels) -> value."""
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def service_metrics(system: System, service: str) -> dict:
    return scrape(f"http://127.0.0.1:{metrics_port(system.environ, service)}/metrics")


def test_every_service_serves_its_own_metrics(system, traffic):
    for service in SERVICES:
        samples = service_metrics(system, service)
        assert value(samples, "jicm_rpc_answered_total", service=service, outcome="ok") >= 1, \
            service
        assert value(samples, "jicm_worker_duration_seconds_count", service=service) >= 1
        assert any(name == "jicm_outbox_documents" and ("service", service) in labels
                   for name, labels in samples), f"{service} reports its outbox"


def test_each_service_process_answers_its_own_liveness_probe(system):
    for service in SERVICES:
        port = metrics_port(system.environ, service)
        answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert (answer.status_code, answer.text) == (200, "ok\n"), service


def test_accounts_counts_sign_ups_and_log_ins_by_outcome(system, traffic):
    samples = service_metrics(system, "accounts")
    assert value(samples, "jicm_signups_total") >= 1
    assert value(samples, "jicm_logins_total", outcome="ok") >= 1
    assert value(samples, "jicm_logins_total", outcome="refused") >= 1
    assert value(samples, "jicm_events_published_total", type="UserRegistered") >= 1


def test_consumers_count_the_events_they_handled(system, traffic):
    scheduler = service_metrics(system, "scheduler")
    assert value(scheduler, "jicm_events_consumed_total",
                 consumer="jicm.scheduler.UserRegistered") >= 1
    assert value(scheduler, "jicm_events_consumed_total",
                 consumer="jicm.scheduler.EmailVerified") >= 1
    assert value(scheduler, "jicm_checkins_total", method="api") >= 1
    privacy = service_metrics(system, "privacy")
    assert value(privacy, "jicm_events_consumed_total",
                 consumer="jicm.privacy.UserRegistered") >= 1


def test_delivery_counts_mail_by_kind_and_outcome(system, traffic):
    samples = wait_for(lambda: (found := service_metrics(system, "delivery"))
                       and value(found, "jicm_mails_total", kind="released_message",
                                 outcome="sent") >= 1 and found,
                       timeout=30, what="the released message's mail to be sent")
    assert value(samples, "jicm_mails_total", kind="verification", outcome="sent") >= 1
    assert value(samples, "jicm_events_consumed_total",
                 consumer="jicm.delivery.MessageReleased") >= 1


def test_the_vault_counts_releases_started_and_completed(system, traffic):
    samples = service_metrics(system, "vault")
    assert value(samples, "jicm_releases_started_total") >= 1
    assert value(samples, "jicm_releases_completed_total", outcome="released") >= 1
    assert value(samples, "jicm_messages_released_total") >= 1


def test_privacy_counts_requests_and_reports_the_open_ones(system, traffic):
    samples = service_metrics(system, "privacy")
    assert value(samples, "jicm_privacy_requests_total", type="export") >= 1
    assert ("jicm_privacy_requests_overdue", frozenset({("type", "export")})) in samples


def test_billing_serves_its_metrics_too(system, traffic):
    samples = service_metrics(system, "billing")
    assert value(samples, "jicm_rpc_answered_total", service="billing", outcome="ok") >= 1


def test_the_gateway_reports_routes_rpc_latency_queues_and_the_scheduler(system, traffic):
    samples = scrape(system.url("/metrics"))
    assert value(samples, "jicm_http_requests_total", route="/api/v1/accounts", method="POST",
                 status="201") >= 1
    assert value(samples, "jicm_gateway_rpc_duration_seconds_count", route="/api/v1/sessions",
                 service="accounts", method="log_in") >= 2
    assert value(samples, "jicm_scheduler_up") == 1
    assert value(samples, "jicm_broker_queues_up") == 1
    assert ("jicm_queue_messages", frozenset({("queue", "jicm.delivery.ReminderDue.dead"),
                                              ("role", "dead_letter")})) in samples


def test_the_gateway_workers_counts_add_up_whichever_worker_answers(system, traffic):
    route = {"route": "/healthz", "method": "GET", "status": "200"}
    before = value(scrape(system.url("/metrics")), "jicm_http_requests_total", **route)
    for _ in range(20):  # new connections, so both workers take some
        assert requests.get(system.url("/healthz"), timeout=10).status_code == 200
    for _ in range(4):
        assert value(scrape(system.url("/metrics")), "jicm_http_requests_total",
                     **route) == before + 20
