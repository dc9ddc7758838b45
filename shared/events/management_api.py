"""The broker's management API: the policy that bounds the dead-letter queues, declared
at start-up, and (for the gateway's /metrics) the depth of every queue.

A dead-letter queue grows only when handlers fail for good, and an operator is alerted
long before it fills (`deploy/prometheus/alerts.yml`). The bound is a safety valve for the
broker's memory and disk, and it must never lose a message: the policy sets `max-length`
with `reject-publish` overflow, so once a dead-letter queue is full the broker refuses
(nacks) the dead letter, the consumer puts the original message back in its own queue,
and that queue grows instead, visibly (a quorum queue applies the bound once it is over
it, so one message may slip past). A message TTL would have dropped dead letters
silently; it is not used.

Every process applies the policy at start-up with an idempotent PUT. A broker whose
management API cannot be reached, or a user without the `policymaker` tag, costs the
bound, not the service: the process logs why and carries on.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from shared.config import Settings

log = logging.getLogger(__name__)

POLICY_NAME = "jicm-dead-letters"
# Every `jicm.<service>.<EventType>.dead` queue, and nothing else.
DEAD_LETTER_PATTERN = r"^jicm\.[^.]+\.[^.]+\.dead$"
# Above any operator policy of lower priority that might also match these queues.
POLICY_PRIORITY = 10
TIMEOUT_SECONDS = 5.0
MANAGEMENT_PORTS = {"amqp": 15672, "pyamqp": 15672, "amqps": 15671, "pyamqps": 15671}


@dataclass(frozen=True)
class ManagementApi:
    """Where the management API of the broker behind `AMQP_URI` answers, and as whom."""

    base_url: str
    vhost: str
    username: str
    password: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ManagementApi:
        amqp = urlsplit(settings.amqp_uri)
        vhost = unquote(amqp.path[1:]) if len(amqp.path) > 1 else "/"
        username, password = unquote(amqp.username or "guest"), unquote(amqp.password or "guest")
        if settings.broker_management_url:
            given = urlsplit(settings.broker_management_url)
            if given.username:
                username, password = unquote(given.username), unquote(given.password or "")
            host = given.hostname or ""
            netloc = f"{host}:{given.port}" if given.port else host
            base = urlunsplit((given.scheme, netloc, given.path.rstrip("/"), "", ""))
        else:
            scheme = "https" if amqp.scheme.endswith("s") else "http"
            base = f"{scheme}://{amqp.hostname}:{MANAGEMENT_PORTS.get(amqp.scheme, 15672)}"
        return cls(base, vhost, username, password)

    def url(self, path: str) -> str:
        return f"{self.base_url}/api/{path}"

    def request(self, method: str, path: str, body: dict | None = None) -> dict | None:
        """One call to the API; the decoded JSON answer (None when it has no body)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url(path), data=data, method=method)  # noqa: S310
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            text = response.read()
        return json.loads(text) if text else None


def dead_letter_policy(max_length: int) -> dict:
    """The policy's body for the management API."""
    return {
        "pattern": DEAD_LETTER_PATTERN,
        "apply-to": "queues",
        "priority": POLICY_PRIORITY,
        "definition": {"max-length": max_length, "overflow": "reject-publish"},
    }


def policy_path(api: ManagementApi) -> str:
    return f"policies/{quote(api.vhost, safe='')}/{POLICY_NAME}"


def apply_dead_letter_policy(settings: Settings) -> bool:
    """PUT the dead-letter policy on the broker's vhost; False (logged) when it could not."""
    api = ManagementApi.from_settings(settings)
    try:
        api.request("PUT", policy_path(api), dead_letter_policy(settings.dead_letter_max_length))
    except urllib.error.HTTPError as exc:
        log.warning("could not set the RabbitMQ policy %s on vhost %r: HTTP %s (the user needs "
                    "the policymaker tag); dead-letter queues stay unbounded",
                    POLICY_NAME, api.vhost, exc.code)
        return False
    except OSError as exc:
        log.warning("could not reach the RabbitMQ management API at %s to set the policy %s: "
                    "%s; dead-letter queues stay unbounded", api.base_url, POLICY_NAME, exc)
        return False
    return True
