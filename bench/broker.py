"""RabbitMQ's management API, as the service and end-to-end tests use it: a fresh vhost.

Each system the benchmarks start gets a vhost of its own, so nothing left in the
developer's `/` vhost (or by an earlier run) is consumed or counted, and deleting the
vhost afterwards removes every queue and exchange the run declared.
"""

from __future__ import annotations

import logging
import uuid

import requests

log = logging.getLogger(__name__)

# The same local broker `make bench` makes sure of (and the tests use).
MANAGEMENT_URL = "http://127.0.0.1:15672/api"
AMQP_HOSTPORT = "127.0.0.1:5672"
AUTH = ("guest", "guest")
TIMEOUT = 10.0


def _session() -> requests.Session:
    session = requests.Session()
    session.auth = AUTH
    # Proxy variables from the environment must not reroute calls to a local broker.
    session.trust_env = False
    return session


def rabbitmq_version() -> str | None:
    """The broker's version if the management API answers, else None."""
    try:
        with _session() as http:
            response = http.get(f"{MANAGEMENT_URL}/overview", timeout=3)
            response.raise_for_status()
            return response.json().get("rabbitmq_version")
    except (requests.RequestException, ValueError):
        return None


def new_vhost_name(prefix: str = "jicm-bench") -> str:
    """A vhost name no other run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_vhost(name: str) -> str:
    """Create the vhost with every permission for guest; return its AMQP URI."""
    with _session() as http:
        http.put(f"{MANAGEMENT_URL}/vhosts/{name}", timeout=TIMEOUT).raise_for_status()
        http.put(
            f"{MANAGEMENT_URL}/permissions/{name}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
            timeout=TIMEOUT,
        ).raise_for_status()
    return f"amqp://guest:guest@{AMQP_HOSTPORT}/{name}"


def delete_vhost(name: str) -> None:
    """Delete the vhost (and every queue in it); a failure is logged, never raised."""
    try:
        with _session() as http:
            response = http.delete(f"{MANAGEMENT_URL}/vhosts/{name}", timeout=TIMEOUT)
        if response.status_code not in (204, 404):
            log.warning("could not delete vhost %s: HTTP %s", name, response.status_code)
    except requests.RequestException as exc:
        log.warning("could not delete vhost %s: %r", name, exc)
