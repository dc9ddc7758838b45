"""The system under measurement, started as `make run` starts it and always torn down.

`running_system()` takes the very process specs of `make run`
(`deploy.local.supervisor.default_specs`), keeps the parts a benchmark needs, and runs
them under a `Supervisor` with a fresh RabbitMQ vhost, free ports, `JICM_ENV=test` and
throw-away data and mail directories. A `before_start` hook sees the environment first,
so a benchmark can fill the services' stores (through their own domain code) while no
process has them open yet. However the benchmark ends (an error, Ctrl-C,
SIGTERM), every part is stopped and the vhost deleted; a second Ctrl-C while stopping
kills the parts at once, as it does under `make run`.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench.broker import create_vhost, delete_vhost, new_vhost_name
from deploy.local.supervisor import (
    REPO_ROOT,
    NotReadyError,
    Supervisor,
    default_specs,
    free_port_block,
)
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RpcError

STOP_TIMEOUT = 15.0
RPC_READY_TIMEOUT = 60.0
GATEWAY = "gateway"


@dataclass(frozen=True)
class RunningSystem:
    """Where to reach the parts that were started."""

    amqp_uri: str
    base_url: str
    environ: Mapping[str, str]
    supervisor: Supervisor


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def system_environment(
    tmp: Path, amqp_uri: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of every part: the caller's, with the run's own places and ports."""
    gateway_port = free_port()
    return {
        **os.environ,
        "JICM_ENV": "test",
        "AMQP_URI": amqp_uri,
        # Empty means unset: always the embedded SQLite store, whatever the shell says.
        "MONGO_URI": "",
        "JICM_DATA_DIR": str(tmp / "data"),
        "JICM_MAILDIR": str(tmp / "mail"),
        "JICM_SMTP_SINK_PORT": str(free_port()),
        "JICM_METRICS_PORT_BASE": str(free_port_block(7)),
        "JICM_GATEWAY_BIND": f"127.0.0.1:{gateway_port}",
        "JICM_PUBLIC_URL": f"http://127.0.0.1:{gateway_port}",
        "JICM_SERVICES": "accounts",
        **(extra or {}),
    }


@contextmanager
def running_system(
    parts: Sequence[str],
    extra_env: Mapping[str, str] | None = None,
    before_start: Callable[[Mapping[str, str]], None] | None = None,
) -> Iterator[RunningSystem]:
    """Start the named parts of `make run` (in its order), ready to use; stop them after.

    `before_start(environ)` runs once the run's environment (its data directory, its
    secrets) is decided and before any part starts.
    """
    vhost = new_vhost_name()
    supervisor: Supervisor | None = None
    with tempfile.TemporaryDirectory(prefix="jicm-bench-") as tmp:
        try:
            amqp_uri = create_vhost(vhost)
            environ = system_environment(Path(tmp), amqp_uri, extra_env)
            if before_start is not None:
                before_start(environ)
            specs = [spec for spec in default_specs(environ) if spec.name in parts]
            supervisor = Supervisor(
                specs, env=environ, cwd=REPO_ROOT, log_dir=Path(tmp) / "logs", output=sys.stderr
            )
            _start(supervisor, amqp_uri)
            yield RunningSystem(
                amqp_uri=amqp_uri,
                base_url=f"http://{environ['JICM_GATEWAY_BIND']}",
                environ=environ,
                supervisor=supervisor,
            )
        finally:
            with _interrupts_hurry(supervisor):
                if supervisor is not None:
                    supervisor.stop_all(STOP_TIMEOUT)
                delete_vhost(vhost)


def _start(supervisor: Supervisor, amqp_uri: str) -> None:
    # Start everything first, then wait: the parts boot in parallel, as in the e2e tests.
    for name in supervisor.names:
        supervisor.start(name)
    for name in supervisor.names:
        supervisor.wait_ready(name)
    # Without a gateway nothing has proven the services answer yet (the gateway's
    # /readyz does that when it runs): ask each one directly.
    if GATEWAY not in supervisor.names:
        for name in supervisor.names:
            if name != "smtp":
                wait_for_rpc(supervisor, amqp_uri, name)


def wait_for_rpc(supervisor: Supervisor, amqp_uri: str, service: str) -> None:
    """Poll `service.health` until it answers; NotReadyError if the process dies first."""
    pool = RpcClientPool(amqp_uri, size=1, timeout=2.0)
    deadline = time.monotonic() + RPC_READY_TIMEOUT
    try:
        while True:
            if not supervisor.alive(service):
                raise NotReadyError(service, "it exited before answering", supervisor.tail(service))
            try:
                pool.call(service, "health", timeout=1.0)
                return
            except RpcError:
                if time.monotonic() >= deadline:
                    raise NotReadyError(
                        service,
                        f"no health answer in {RPC_READY_TIMEOUT:g} s",
                        supervisor.tail(service),
                    ) from None
                time.sleep(0.1)
    finally:
        pool.close()


@contextmanager
def _interrupts_hurry(supervisor: Supervisor | None) -> Iterator[None]:
    """While tearing down, Ctrl-C or SIGTERM kill the parts at once instead of aborting."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be changed from the main thread
        return

    def hurry(signum: int, frame: FrameType | None) -> None:
        if supervisor is not None:
            supervisor.kill_all()

    previous = {sig: signal.signal(sig, hurry) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
