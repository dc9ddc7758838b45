"""`shared.rpc.bounded` on the real RabbitMQ: a service asking another never hangs.

A `caller` service asks a `slowpoke` service through `BoundedRpcProxy`. The caller must
get its answer, or `RpcTimeout` near the deadline when slowpoke is slow or down; the
forgotten reply must not stay in the caller's listener; and a question that waited in
the queue past its deadline must never run once slowpoke is back.
"""

from __future__ import annotations

import time
from typing import Any

import eventlet
import pytest
from nameko.rpc import rpc
from nameko.testing.utils import get_extension

from shared.rpc.bounded import BoundedRpcProxy
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RpcTimeout
from tests.helpers import wait_for

pytestmark = pytest.mark.service

DEADLINE = 0.5
RAN: list[str] = []


class Slowpoke:
    name = "slowpoke"

    @rpc
    def echo(self, text: str) -> str:
        RAN.append(text)
        return text

    @rpc
    def nap(self, text: str, seconds: float) -> str:
        RAN.append(text)
        eventlet.sleep(seconds)
        return text


class Caller:
    name = "caller"
    slowpoke = BoundedRpcProxy("slowpoke", timeout=DEADLINE)

    @rpc
    def ask(self, method: str, *args: Any) -> dict:
        started = time.monotonic()
        try:
            answer = self.slowpoke.call(method, *args)
        except RpcTimeout as exc:
            return {"timeout": str(exc), "waited": time.monotonic() - started}
        return {"answer": answer, "waited": time.monotonic() - started}


@pytest.fixture(autouse=True)
def _fresh():
    RAN.clear()


@pytest.fixture
def start(container_factory, rabbit_config):
    def start_service(cls):
        container = container_factory(cls, {**rabbit_config, "max_workers": 4})
        container.start()
        return container

    return start_service


@pytest.fixture
def client(rabbit_config):
    pool = RpcClientPool(rabbit_config["AMQP_URI"], size=1, timeout=10)
    yield pool
    pool.close()


def pending_replies(caller) -> int:
    proxy = get_extension(caller, BoundedRpcProxy)
    return len(proxy.rpc_reply_listener._reply_events)


def test_an_answer_in_time_comes_back_unchanged(start, client):
    start(Slowpoke)
    caller = start(Caller)
    assert client.call("caller", "ask", "echo", "héllo")["answer"] == "héllo"
    assert pending_replies(caller) == 0


def test_a_slow_service_costs_the_caller_its_deadline_and_no_more(start, client):
    start(Slowpoke)
    caller = start(Caller)
    result = client.call("caller", "ask", "nap", "slow", 3.0)
    assert result["timeout"] == f"slowpoke.nap did not answer within {DEADLINE:g} s"
    assert DEADLINE <= result["waited"] < DEADLINE + 1.5
    # The late reply has nobody waiting for it, and leaves nothing behind.
    assert pending_replies(caller) == 0
    assert client.call("caller", "ask", "echo", "next")["answer"] == "next"


def test_a_question_that_waited_past_its_deadline_never_runs_once_the_service_is_back(
        start, client):
    slowpoke = start(Slowpoke)
    caller = start(Caller)
    slowpoke.stop()  # its queue stays; questions wait there
    result = client.call("caller", "ask", "echo", "too late")
    assert "did not answer" in result["timeout"]
    start(Slowpoke)
    wait_for(lambda: client.call("caller", "ask", "echo", "fresh").get("answer") == "fresh",
             timeout=15, what="slowpoke to answer again")
    assert "too late" not in RAN
    assert pending_replies(caller) == 0
