"""End-to-end fixtures: the system as `make run` starts it, as separate processes.

Each test module gets its own RabbitMQ vhost, data directory, maildir and ports, and
the very process specs of `make run` (`deploy.local.supervisor.default_specs`), so the
tests exercise what a newcomer runs.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from deploy.local.smtp_sink import read_mail, wait_for_mail
from deploy.local.supervisor import (
    DEFAULT_SERVICES,
    NotReadyError,
    ProcessSpec,
    Supervisor,
    default_specs,
    free_port_block,
)

MANAGEMENT = "http://127.0.0.1:15672/api"
AUTH = ("guest", "guest")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    """A fresh RabbitMQ vhost for the module, deleted afterwards; returns its AMQP URI."""
    yield from fresh_vhost()


def fresh_vhost() -> Iterator[str]:
    """A fresh RabbitMQ vhost, deleted afterwards (for a fixture of any scope)."""
    name = f"jicm-e2e-{uuid.uuid4().hex[:10]}"
    requests.put(f"{MANAGEMENT}/vhosts/{name}", auth=AUTH, timeout=10).raise_for_status()
    requests.put(
        f"{MANAGEMENT}/permissions/{name}/guest",
        json={"configure": ".*", "write": ".*", "read": ".*"},
        auth=AUTH,
        timeout=10,
    ).raise_for_status()
    yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    requests.delete(f"{MANAGEMENT}/vhosts/{name}", auth=AUTH, timeout=10)


@dataclass
class System:
    """The running system and the places a test looks at."""

    supervisor: Supervisor
    base_url: str
    maildir: Path
    data_dir: Path
    environ: dict[str, str]

    def url(self, path: str) -> str:
        return self.base_url + path

    def mail(self) -> list:
        return read_mail(self.maildir)

    def wait_for_mail(self, count: int, timeout: float = 20.0) -> list:
        return wait_for_mail(self.maildir, count=count, timeout=timeout)

    def query(self, service: str, sql: str, params: tuple = ()) -> list:
        """Read a service's embedded database directly, as an operator with sqlite3 would."""
        with sqlite3.connect(f"file:{self.data_dir / service}.sqlite3?mode=ro", uri=True) as db:
            return db.execute(sql, params).fetchall()

    def execute(self, service: str, sql: str, params: tuple = ()) -> None:
        with sqlite3.connect(self.data_dir / f"{service}.sqlite3", timeout=10) as db:
            db.execute(sql, params)


def system_environment(tmp: Path, amqp_uri: str, services: str, **extra: str) -> dict[str, str]:
    gateway_port = free_port()
    return {
        **os.environ,
        "JICM_ENV": "test",
        "AMQP_URI": amqp_uri,
        "JICM_DATA_DIR": str(tmp / "data"),
        "JICM_MAILDIR": str(tmp / "mail"),
        "JICM_SMTP_SINK_PORT": str(free_port()),
        "JICM_METRICS_PORT_BASE": str(free_port_block(7)),
        "JICM_GATEWAY_BIND": f"127.0.0.1:{gateway_port}",
        "JICM_PUBLIC_URL": f"http://127.0.0.1:{gateway_port}",
        "JICM_PASSWORD_HASH": "min",
        "JICM_SERVICES": services,
        "JICM_LOG_FORMAT": "text",
        "JICM_GATEWAY_WORKERS": "1",
        "JICM_GATEWAY_THREADS": "8",
        "JICM_RPC_TIMEOUT": "4",
        **extra,
    }


def start_system(tmp: Path, environ: dict[str, str],
                 specs: list[ProcessSpec] | None = None) -> System:
    """`make run`'s parts (or `specs`, such as those with a fault injected), each ready."""
    specs = default_specs(environ) if specs is None else specs
    supervisor = Supervisor(specs, env=environ, log_dir=tmp / "logs")
    for spec in specs:
        supervisor.start(spec.name)
    base_url = f"http://{environ['JICM_GATEWAY_BIND']}"
    try:
        for spec in specs:
            supervisor.wait_ready(spec.name)
    except NotReadyError as exc:
        # Say why, and leave no part running to slow down the tests after this one.
        said = _last_words(supervisor, specs, base_url)
        supervisor.stop_all()
        raise NotReadyError(exc.name, f"{exc.reason}\n{said}", exc.tail) from exc
    return System(
        supervisor=supervisor,
        base_url=base_url,
        maildir=Path(environ["JICM_MAILDIR"]),
        data_dir=Path(environ["JICM_DATA_DIR"]),
        environ=environ,
    )


def _last_words(supervisor: Supervisor, specs: list[ProcessSpec], base_url: str) -> str:
    """Each part's last lines and, if the gateway answers, its readiness report."""
    lines = [f"{spec.name} | {line}" for spec in specs for line in supervisor.tail(spec.name)]
    try:
        lines.append(f"GET /readyz: {requests.get(base_url + '/readyz', timeout=10).text}")
    except requests.RequestException as exc:
        lines.append(f"GET /readyz: {exc!r}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def accounts_system(tmp_path_factory, vhost) -> Iterator[System]:
    """Accounts, the gateway and the SMTP sink."""
    tmp = tmp_path_factory.mktemp("system")
    system = start_system(tmp, system_environment(tmp, vhost, "accounts"))
    yield system
    system.supervisor.stop_all()


@pytest.fixture(scope="module")
def full_system(tmp_path_factory, vhost) -> Iterator[System]:
    """Every service `make run` starts, with the Stripe stand-in, the gateway and the sink."""
    tmp = tmp_path_factory.mktemp("system")
    environ = system_environment(tmp, vhost, DEFAULT_SERVICES,
                                 JICM_STRIPE_STANDIN_PORT=str(free_port()))
    system = start_system(tmp, environ)
    yield system
    system.supervisor.stop_all()
