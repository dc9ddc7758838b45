"""`rpc`: the gateway's RPC client against the accounts service, over RabbitMQ.

The accounts service runs as `make run` runs it (`python -m shared.runner accounts`
under the Supervisor). `accounts.health` is the cheapest real call: it crosses the
broker twice and reads the service's database once, so it measures the RPC path itself.

Three ways of calling:

- sequential, through one pooled client: the latency of a round trip;
- 8 threads sharing a pool of 8: the throughput the gateway gets from one process;
- a new pool (so a new connection, channel and reply queue) per call: what pooling
  saves the gateway on every request.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.measure import WorkerFactory, measure
from bench.report import BenchResult
from bench.system import running_system
from shared.rpc.client import RpcClientPool

THREADS = 8
POOL_SIZE = 8
CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Sizes:
    """How many calls in each case."""

    sequential: int
    concurrent: int
    new_connection: int


FULL = Sizes(sequential=2_000, concurrent=4_000, new_connection=200)
QUICK = Sizes(sequential=100, concurrent=200, new_connection=20)


def run(result: BenchResult) -> None:
    """Start accounts, measure the three ways of calling it, stop it."""
    sizes = QUICK if result.quick else FULL
    parameters = {"threads": THREADS, "pool_size": POOL_SIZE, "call": "accounts.health"}
    result.parameters = vars(sizes) | parameters
    result.notes.append(
        "accounts.health crosses the broker twice and reads the service's SQLite file once; "
        "pooled cases run after a warm-up that opens the pool's connections."
    )
    with running_system(["accounts"]) as system:
        pool = RpcClientPool(system.amqp_uri, size=POOL_SIZE, timeout=CALL_TIMEOUT)
        try:
            _warm_up(pool)
            _pooled(result, pool, sizes)
            result.extra["pool_connections_opened"] = pool.connects
        finally:
            pool.close()
        result.add(
            measure(
                "new pool (new connection) per call",
                _fresh_pool_calls(system.amqp_uri),
                range(sizes.new_connection),
                notes="connect, open a channel, declare and bind a reply queue, call, close",
            )
        )


def _health_calls(pool: RpcClientPool) -> WorkerFactory[int]:
    """Every thread calls accounts.health through the one shared pool."""
    return lambda _thread: lambda _call: pool.call("accounts", "health")


def _warm_up(pool: RpcClientPool) -> None:
    """Open every pooled connection before the clock runs: the gateway keeps them open."""
    calls = range(POOL_SIZE * 4)
    measure("warm-up (not recorded)", _health_calls(pool), calls, threads=THREADS)


def _pooled(result: BenchResult, pool: RpcClientPool, sizes: Sizes) -> None:
    result.add(measure("pooled, sequential", _health_calls(pool), range(sizes.sequential)))
    result.add(
        measure(
            f"pooled, {THREADS} threads (pool of {POOL_SIZE})",
            _health_calls(pool),
            range(sizes.concurrent),
            threads=THREADS,
        )
    )


def _fresh_pool_calls(amqp_uri: str) -> WorkerFactory[int]:
    """Each call on a pool of its own, closed afterwards: a connection per request."""

    def call(_: int) -> object:
        pool = RpcClientPool(amqp_uri, size=1, timeout=CALL_TIMEOUT)
        try:
            return pool.call("accounts", "health")
        finally:
            pool.close()

    return lambda _thread: call
