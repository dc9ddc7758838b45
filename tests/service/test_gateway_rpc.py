"""The gateway's pooled RPC client against the real broker and a real nameko service.

The service runs in this (eventlet-patched) process through nameko's `container_factory`;
the client speaks nameko's wire format over pika, as it does in the gateway.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import eventlet
import pika
import pytest
import requests
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc

from shared.rpc.client import CONNECTION_NAME, RpcClient, RpcClientPool, connection_parameters
from shared.rpc.errors import RemoteError, RpcTimeout, ServiceUnavailable
from tests.helpers import wait_for

pytestmark = pytest.mark.service

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE = "rpc_test_service"

# What the service did, shared with the tests (the service runs in this process).
RECORDED: list[str] = []
STARTED: list[str] = []


class KaboomError(Exception):
    """A service's own exception, raised with arguments."""


class ContextData(DependencyProvider):
    """Hands each worker the context data nameko decoded from the request headers."""

    def get_dependency(self, worker_ctx: Any) -> dict[str, Any]:
        return dict(worker_ctx.context_data)


class RpcTestService:
    name = SERVICE

    context_data = ContextData()

    @rpc
    def echo(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": args, "kwargs": kwargs}

    @rpc
    def boom(self, *args: Any) -> None:
        raise KaboomError(*args)

    @rpc
    def slow(self, seconds: float, value: str) -> str:
        STARTED.append(value)
        eventlet.sleep(seconds)
        return value

    @rpc
    def context(self) -> dict[str, Any]:
        return self.context_data

    @rpc
    def record(self, token: str) -> str:
        RECORDED.append(token)
        return token


@pytest.fixture(autouse=True)
def _forget_what_the_service_did() -> None:
    RECORDED.clear()
    STARTED.clear()


@pytest.fixture
def amqp(rabbit_config: dict[str, Any]) -> str:
    return rabbit_config["AMQP_URI"]


@pytest.fixture
def start_service(container_factory: Any, rabbit_config: dict[str, Any]) -> Callable[[], Any]:
    def start() -> Any:
        container = container_factory(RpcTestService, rabbit_config)
        container.start()
        return container

    return start


@pytest.fixture
def service(start_service: Callable[[], Any]) -> Any:
    return start_service()


@pytest.fixture
def make_pool(amqp: str) -> Iterator[Callable[..., RpcClientPool]]:
    pools: list[RpcClientPool] = []

    def make(**options: Any) -> RpcClientPool:
        options.setdefault("timeout", 5.0)
        pool = RpcClientPool(amqp, **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def pool(make_pool: Callable[..., RpcClientPool]) -> RpcClientPool:
    return make_pool(size=2)


def test_a_call_returns_the_services_result(service: Any, pool: RpcClientPool) -> None:
    result = pool.call(SERVICE, "echo", 1, "zwölf Boxkämpfer ☂", nested={"ü": [1.5, None]})

    assert result == {"args": [1, "zwölf Boxkämpfer ☂"], "kwargs": {"nested": {"ü": [1.5, None]}}}


def test_kwargs_named_like_the_pools_own_parameters_reach_the_service(
    service: Any, pool: RpcClientPool
) -> None:
    result = pool.call(SERVICE, "echo", service="s", method="m")

    assert result == {"args": [], "kwargs": {"service": "s", "method": "m"}}


def test_a_remote_exception_arrives_as_remote_error_with_its_type_and_args(
    service: Any, pool: RpcClientPool
) -> None:
    with pytest.raises(RemoteError) as caught:
        pool.call(SERVICE, "boom", "card declined", 42)

    error = caught.value
    assert error.exc_type == "KaboomError"
    assert error.exc_path == f"{__name__}.KaboomError"
    # nameko stringifies arguments that are not strings, lists or dicts.
    assert error.exc_args == ["card declined", "42"]


def test_a_call_to_a_service_that_does_not_exist_fails_fast(pool: RpcClientPool) -> None:
    started = time.monotonic()

    with pytest.raises(ServiceUnavailable):
        pool.call("no_such_service", "anything", timeout=5.0)

    assert time.monotonic() - started < 1.0


def test_a_slow_call_times_out_near_its_deadline_and_its_late_reply_goes_to_no_one(
    service: Any, make_pool: Callable[..., RpcClientPool]
) -> None:
    pool = make_pool(size=1)
    started = time.monotonic()

    with pytest.raises(RpcTimeout):
        pool.call(SERVICE, "slow", 0.8, "first", timeout=0.4)

    assert 0.4 <= time.monotonic() - started < 0.7
    # The late reply to "first" arrives while this call waits on the same client.
    assert pool.call(SERVICE, "slow", 0.8, "second", timeout=5.0) == "second"
    assert pool.call(SERVICE, "echo", "third") == {"args": ["third"], "kwargs": {}}
    assert pool.connects == 1


def queued(amqp_uri: str, queue: str) -> int:
    """How many messages `queue` holds now (a passive declare asks the queue itself)."""
    connection = pika.BlockingConnection(connection_parameters(amqp_uri))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def test_a_request_nobody_consumed_before_its_deadline_is_never_executed(
    start_service: Callable[[], Any], pool: RpcClientPool, amqp: str
) -> None:
    # A stopped service leaves its durable queue behind: requests are routed, then wait.
    start_service().stop()
    with pytest.raises(RpcTimeout):
        pool.call(SERVICE, "record", "stale", timeout=0.3)
    # The broker drops the request once its time is up (the restart below must not race it).
    wait_for(lambda: queued(amqp, f"rpc-{SERVICE}") == 0, what="the request to expire")

    start_service()

    # Had the stale request survived, it would sit ahead of this one in the queue.
    assert pool.call(SERVICE, "record", "fresh") == "fresh"
    assert RECORDED == ["fresh"]


def test_context_items_arrive_as_nameko_context_data(service: Any, pool: RpcClientPool) -> None:
    seen = pool.call(SERVICE, "context", context={"request_id": "req-7f3a"})

    assert seen["request_id"] == "req-7f3a"
    assert seen["call_id_stack"][0].startswith(f"gateway.{SERVICE}.context.")


def test_a_call_waits_for_a_free_client_only_until_its_deadline(
    service: Any, make_pool: Callable[..., RpcClientPool]
) -> None:
    pool = make_pool(size=1)
    busy = eventlet.spawn(pool.call, SERVICE, "slow", 1.0, "busy")
    wait_for(lambda: STARTED == ["busy"], what="the first call to hold the only client")
    started = time.monotonic()

    with pytest.raises(RpcTimeout):
        pool.call(SERVICE, "echo", "waiting", timeout=0.3)

    assert time.monotonic() - started < 0.6
    assert busy.wait() == "busy"


# The pool is meant for gunicorn's gthread workers: real threads and no eventlet. This test
# process is monkey-patched (tests/conftest.py), so threading here is green and pika's sockets
# are eventlet's; driving pika from real OS threads on green sockets would test neither
# environment. The concurrent callers therefore run in a plain Python subprocess, as they do in
# the gateway, while the service keeps serving from this process (subprocess waits are green).
CONCURRENT_CALLERS = """
import json, sys, threading
from shared.rpc.client import RpcClientPool

pool = RpcClientPool(sys.argv[1], size=4, timeout=15.0)
callers, calls = 20, 5
barrier = threading.Barrier(callers)
answers = {}

def caller(n):
    barrier.wait()  # everyone at once, so that 20 threads compete for 4 clients
    answers[n] = [pool.call(sys.argv[2], "slow", 0.02, f"{n}-{i}") for i in range(calls)]

threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
pool.close()
print(json.dumps({"answers": answers, "connects": pool.connects}))
"""


def test_the_pool_serves_twenty_threads_with_four_clients_without_crossing_replies(
    service: Any, amqp: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CONCURRENT_CALLERS, amqp, SERVICE],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["answers"] == {str(n): [f"{n}-{i}" for i in range(5)] for n in range(20)}
    assert report["connects"] == 4


@pytest.fixture
def management() -> Iterator[requests.Session]:
    session = requests.Session()
    session.auth = ("guest", "guest")
    yield session
    session.close()


def gateway_connections(management: requests.Session, vhost: str) -> list[str]:
    url = f"http://127.0.0.1:15672/api/vhosts/{vhost}/connections"
    response = management.get(url, timeout=5)
    response.raise_for_status()
    return [
        c["name"]
        for c in response.json()
        if c.get("client_properties", {}).get("connection_name") == CONNECTION_NAME
    ]


def test_the_pool_recovers_after_the_broker_closes_its_connection(
    service: Any,
    pool: RpcClientPool,
    management: requests.Session,
    rabbit_config: dict[str, Any],
) -> None:
    assert pool.call(SERVICE, "echo", "before") == {"args": ["before"], "kwargs": {}}
    vhost = rabbit_config["vhost"]
    [name] = wait_for(
        # The management API lists a connection only after its next stats emission (5 s).
        lambda: gateway_connections(management, vhost),
        timeout=10.0,
        what="the connection",
    )

    closed = management.delete(f"http://127.0.0.1:15672/api/connections/{name}", timeout=5)
    closed.raise_for_status()

    # The broker has written connection.close by the time it answers the DELETE; the pool
    # reads it when it lends the client out, before publishing anything on it.
    assert pool.call(SERVICE, "echo", "after") == {"args": ["after"], "kwargs": {}}
    assert pool.connects == 2


def test_a_call_whose_connection_died_unnoticed_before_publishing_is_retried_once(
    service: Any, pool: RpcClientPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool.call(SERVICE, "echo", "warm-up")
    [idle] = pool._idle
    idle._connection.close()
    # Make the pool lend out the dead client, as if its death had not been noticed yet.
    monkeypatch.setattr(RpcClient, "is_usable", lambda self: True)

    assert pool.call(SERVICE, "record", "once") == "once"
    assert RECORDED == ["once"]
    assert pool.connects == 2


def test_check_broker_is_false_for_an_unreachable_broker() -> None:
    pool = RpcClientPool("amqp://guest:guest@127.0.0.1:1/")

    assert pool.check_broker(timeout=2.0) is False


def test_check_broker_is_true_for_the_real_broker(amqp: str) -> None:
    assert RpcClientPool(amqp).check_broker(timeout=2.0) is True
