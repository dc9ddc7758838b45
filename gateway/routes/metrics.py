"""`GET /metrics`: Prometheus text, the gateway's own counters and the installation's state.

- The gateway's counters (requests and RPC latency per route, gateway/instruments.py) are
  kept per gunicorn worker in `PROMETHEUS_MULTIPROC_DIR` and added up here, so whichever
  worker answers the scrape reports them all.
- The installation's state is gathered at scrape time, never kept in memory: the
  scheduler's figures (asked over RPC, as /readyz does) and the depth of every queue of
  the topology (from the broker's management API). Every gateway replica reports the
  same values; aggregate them with `max`.

Each service process serves its own counters on `JICM_METRICS_BIND` (shared/metrics.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from urllib.parse import quote

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.api import operation
from gateway.liveness import scheduler_liveness
from gateway.remote import rpc_pool
from shared.config import SETTINGS_CONFIG_KEY, Settings
from shared.events.management_api import ManagementApi
from shared.metrics import gauge

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)


@operation(bp, "GET", "/metrics", summary="Prometheus metrics", tag="operations", auth=False,
           content_type="text/plain",
           description="The gateway's requests and RPC latency per route, the scheduler's "
                       "heartbeat age and lag, held-back switches, switches by state, and "
                       "the depth of every queue. Expose it to your monitoring network only.")
def metrics() -> Response:
    settings = current_app.config[SETTINGS_CONFIG_KEY]
    state = CollectorRegistry()
    state.register(_InstallationState(settings))
    body = generate_latest(_process_registry()) + generate_latest(state)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def _process_registry() -> CollectorRegistry:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY  # one process (tests, a single worker without gunicorn)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


class _InstallationState:
    """Collects the installation's figures when scraped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield gauge("jicm_gateway_up", "1 while this gateway answers", 1)
        if "scheduler" in self.settings.service_names:
            yield from _scheduler_figures()
        yield from _queue_figures(self.settings)


def _scheduler_figures() -> Iterable[GaugeMetricFamily]:
    figures = scheduler_liveness(rpc_pool())
    yield gauge("jicm_scheduler_up", "1 when the scheduler answered this scrape",
                0 if figures is None else 1)
    if figures is None:
        return
    if figures["heartbeat_age_seconds"] is not None:
        yield gauge("jicm_scheduler_heartbeat_age_seconds",
                    "seconds since a scheduler instance last finished a tick",
                    figures["heartbeat_age_seconds"])
    yield gauge("jicm_scheduler_lag_seconds", "now minus the oldest switch still due (0: none)",
                figures["lag_seconds"])
    yield gauge("jicm_scheduler_due_switches", "switches due now and not yet handled",
                figures["due_switches"])
    yield gauge("jicm_scheduler_held_back_switches",
                "switches past their grace whose firing waits for the overdue notice to leave",
                figures["held_back_switches"])
    held = gauge("jicm_scheduler_held_back_switches_by_reason",
                 "held-back switches by why: notice_waiting, notice_failed, notice_unknown, "
                 "delivery_unavailable", labels=["reason"])
    for reason, count in figures["held_back_by_reason"].items():
        held.add_metric([reason], count)
    yield held
    oldest = max((entry["held_seconds"] for entry in figures["held_back"]), default=0.0)
    yield gauge("jicm_scheduler_held_back_oldest_seconds",
                "how long the switch held back longest has been waiting (0: none)", oldest)
    switches = gauge("jicm_switches", "switches by state, as of the last complete census",
                     labels=["state"])
    for state, count in figures["switches"].items():
        switches.add_metric([state], count)
    yield switches
    if figures.get("switches_census"):
        yield gauge("jicm_switches_census_age_seconds",
                    "how old the oldest figure of jicm_switches may be",
                    figures["switches_census"]["age_seconds"])


def queue_role(name: str) -> str | None:
    """What a queue of the topology is for, from its name; None for per-process queues."""
    if name.startswith("rpc-"):
        return "rpc"
    if not name.startswith("jicm."):
        return None
    if name.endswith(".dead"):
        return "dead_letter"
    if name.startswith("jicm.retry."):
        return "retry"
    if name == "jicm.unrouted":
        return "unrouted"
    return "consumer"


def _queue_figures(settings: Settings) -> Iterable[GaugeMetricFamily]:
    api = ManagementApi.from_settings(settings)
    try:
        queues = api.request("GET", f"queues/{quote(api.vhost, safe='')}?columns=name,messages")
    except OSError as exc:
        log.warning("queue depths unavailable: %s", exc)
        yield gauge("jicm_broker_queues_up", "1 when the broker listed its queues this scrape", 0)
        return
    yield gauge("jicm_broker_queues_up", "1 when the broker listed its queues this scrape", 1)
    depth = gauge("jicm_queue_messages",
                  "messages in each queue of the topology, by role: consumer, dead_letter, "
                  "retry, unrouted, rpc (the broker's statistics, a few seconds old)",
                  labels=["queue", "role"])
    for queue in queues or []:
        role = queue_role(queue["name"])
        if role is not None:
            depth.add_metric([queue["name"], role], queue.get("messages") or 0)
    yield depth
