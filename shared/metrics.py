"""Prometheus metrics of a service process, served at `http://JICM_METRICS_BIND/metrics`
(and `/healthz`, the process's own liveness).

Two kinds of figures, and why each is where it is (docs/scaling.md, "Metrics"):

- What this process did (events consumed, retried, dead-lettered; RPCs answered; mail
  sent; sign-ups...) is counted in the process's memory with `prometheus-client`'s
  counters and histograms. Each replica counts only its own work and serves it from its
  own endpoint, so Prometheus, scraping every replica, adds them up (`sum(rate(...))`)
  without counting anything twice; a restart resets a counter, which `rate()` expects.
- What is in the service's store (events waiting in an outbox, overdue privacy
  requests) is read from the store at scrape time into a fresh registry. Every replica
  shares the store and so reports the same value: aggregate those with `max`, never sum.

A service declares `metrics = ServiceMetrics()` (optionally with `figures=`, a function
of the database and now giving more store gauges). The dependency times every worker and
counts its outcome; the endpoint is a `MetricsEndpoint` shared by the container.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import eventlet
import eventlet.wsgi
from nameko.extensions import DependencyProvider, SharedExtension
from nameko.rpc import Rpc
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from shared.clock import CLOCK_CONFIG_KEY, SystemClock
from shared.config import settings_of
from shared.errors import ServiceError
from shared.storage import Database

log = logging.getLogger(__name__)

# Events, per consumer queue (`jicm.<service>.<EventType>`).
EVENTS_CONSUMED = Counter("jicm_events_consumed", "events handled successfully", ["consumer"])
EVENTS_DUPLICATE = Counter("jicm_events_duplicate",
                           "redelivered events skipped because they were processed already",
                           ["consumer"])
EVENTS_RETRIED = Counter("jicm_events_retried",
                         "failed handlings sent to a delay queue for another attempt",
                         ["consumer"])
EVENTS_DEAD_LETTERED = Counter("jicm_events_dead_lettered",
                               "events moved to the consumer's dead-letter queue, by why: "
                               "malformed, refused, exhausted", ["consumer", "reason"])
EVENTS_PUBLISHED = Counter("jicm_events_published",
                           "events relayed from an outbox and confirmed by the broker",
                           ["service", "type"])

# Every worker: an RPC answered, an event handled, a timer or loop turn.
WORKER_SECONDS = Histogram("jicm_worker_duration_seconds",
                           "time a worker took, by service and entrypoint method",
                           ["service", "method"],
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
RPC_ANSWERED = Counter("jicm_rpc_answered",
                       "RPC requests answered, by outcome: ok, refused (a ServiceError the "
                       "caller is told about), error (a bug)", ["service", "method", "outcome"])

# The rest of a service's store figures are gathered by this function at scrape time.
Figures = Callable[[Database, datetime], Iterable[GaugeMetricFamily]]


@contextmanager
def counted(counter: Counter, **labels: str) -> Iterator[None]:
    """Count one attempt at something in `counter` under `outcome` ok, refused or error."""
    try:
        yield
    except ServiceError:
        counter.labels(outcome="refused", **labels).inc()
        raise
    except Exception:
        counter.labels(outcome="error", **labels).inc()
        raise
    counter.labels(outcome="ok", **labels).inc()


def gauge(name: str, documentation: str, value: float | None = None,
          labels: Iterable[str] = ()) -> GaugeMetricFamily:
    """A gauge read at scrape time (`add_metric` for one value per label set)."""
    family = GaugeMetricFamily(name, documentation, labels=list(labels) or None)
    if value is not None:
        family.add_metric([], value)
    return family


class _Figures:
    """A collector that asks the store when it is scraped, and only then."""

    def __init__(self, gather: Callable[[], Iterable[GaugeMetricFamily]]) -> None:
        self._gather = gather

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self._gather()

    def describe(self) -> list:
        return []  # nothing to check at registration: the store is asked at scrape time


class MetricsEndpoint(SharedExtension):
    """The container's HTTP endpoint: the process's counters, then its store's figures.

    Off unless `JICM_METRICS_BIND` is set (each process needs a port of its own).
    """

    def __init__(self) -> None:
        self.figure_sources: list[Callable[[], Iterable[GaugeMetricFamily]]] = []
        self._socket = None

    def start(self) -> None:
        bind = settings_of(self.container).metrics_bind
        if bind is None:
            return
        host, _, port = bind.rpartition(":")
        self._socket = eventlet.listen((host, int(port)))
        log.info("metrics at http://%s/metrics", bind)
        self.container.spawn_managed_thread(self._serve, identifier="metrics.endpoint")

    def stop(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def kill(self) -> None:
        self.stop()

    def _serve(self) -> None:
        eventlet.wsgi.server(self._socket, self.wsgi, log_output=False)

    def wsgi(self, request: dict, start_response: Callable) -> list[bytes]:
        path = request.get("PATH_INFO")
        if path == "/healthz":
            # Answered by this very process's event loop, touching nothing else: what a
            # liveness probe needs (an RPC health check may be answered by another replica).
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        body = self.render()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                  ("Content-Length", str(len(body)))])
        return [body]

    def render(self) -> bytes:
        """Everything this process reports, in Prometheus' text format."""
        figures = CollectorRegistry()
        for source in self.figure_sources:
            figures.register(_Figures(source))
        try:
            store = generate_latest(figures)
        except Exception:
            log.exception("gathering the store's figures for /metrics failed")
            store = b""
        return generate_latest(REGISTRY) + store


class ServiceMetrics(DependencyProvider):
    """Times every worker, counts RPC outcomes, and adds the service's store figures."""

    endpoint = MetricsEndpoint()

    def __init__(self, figures: Figures | None = None) -> None:
        self.figures = figures
        self._started: dict[Any, float] = {}

    def setup(self) -> None:
        if self.figures is not None:
            self.endpoint.figure_sources.append(self._store_figures)

    def _store_figures(self) -> Iterable[GaugeMetricFamily]:
        from shared.storage.provider import database_of

        clock = self.container.config.get(CLOCK_CONFIG_KEY) or SystemClock()
        return list(self.figures(database_of(self.container), clock.now()))

    def get_dependency(self, worker_ctx) -> None:
        return None

    def worker_setup(self, worker_ctx) -> None:
        self._started[worker_ctx] = time.monotonic()

    def worker_result(self, worker_ctx, result=None, exc_info=None) -> None:
        started = self._started.pop(worker_ctx, None)
        service, method = self.container.service_name, worker_ctx.entrypoint.method_name
        if started is not None:
            WORKER_SECONDS.labels(service, method).observe(time.monotonic() - started)
        if isinstance(worker_ctx.entrypoint, Rpc):
            RPC_ANSWERED.labels(service, method, _outcome(exc_info)).inc()


def _outcome(exc_info) -> str:
    if exc_info is None:
        return "ok"
    return "refused" if isinstance(exc_info[1], ServiceError) else "error"
