"""`GET /metrics`: Prometheus text, gathered from the services at scrape time.

Nothing is counted in the gateway's memory: with several gunicorn workers and replicas,
per-process counters would each tell a different story. Each scrape asks the scheduler
for its figures and renders them into a fresh registry.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from gateway.api import operation
from gateway.liveness import scheduler_liveness
from gateway.remote import rpc_pool
from shared.config import SETTINGS_CONFIG_KEY

bp = Blueprint("metrics", __name__)


@operation(bp, "GET", "/metrics", summary="Prometheus metrics", tag="operations", auth=False,
           content_type="text/plain",
           description="The scheduler's heartbeat age and lag, switches by state, and "
                       "whether the gateway and scheduler answer. Expose it to your "
                       "monitoring network only.")
def metrics() -> Response:
    registry = CollectorRegistry()
    Gauge("jicm_gateway_up", "1 while this gateway answers", registry=registry).set(1)
    if "scheduler" in current_app.config[SETTINGS_CONFIG_KEY].service_names:
        _scheduler_metrics(registry)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _scheduler_metrics(registry: CollectorRegistry) -> None:
    figures = scheduler_liveness(rpc_pool())
    up = Gauge("jicm_scheduler_up", "1 when the scheduler answered this scrape",
               registry=registry)
    up.set(0 if figures is None else 1)
    if figures is None:
        return
    if figures["heartbeat_age_seconds"] is not None:
        Gauge("jicm_scheduler_heartbeat_age_seconds",
              "seconds since a scheduler instance last finished a tick",
              registry=registry).set(figures["heartbeat_age_seconds"])
    Gauge("jicm_scheduler_lag_seconds", "now minus the oldest switch still due (0: none)",
          registry=registry).set(figures["lag_seconds"])
    Gauge("jicm_scheduler_due_switches", "switches due now and not yet handled",
          registry=registry).set(figures["due_switches"])
    Gauge("jicm_scheduler_held_back_switches",
          "switches past their grace whose firing waits for the overdue notice to leave",
          registry=registry).set(figures["held_back_switches"])
    held = Gauge("jicm_scheduler_held_back_switches_by_reason",
                 "held-back switches by why: notice_waiting, notice_failed, notice_unknown, "
                 "delivery_unavailable", ["reason"], registry=registry)
    for reason, count in figures["held_back_by_reason"].items():
        held.labels(reason=reason).set(count)
    oldest = max((entry["held_seconds"] for entry in figures["held_back"]), default=0.0)
    Gauge("jicm_scheduler_held_back_oldest_seconds",
          "how long the switch held back longest has been waiting (0: none)",
          registry=registry).set(oldest)
    switches = Gauge("jicm_switches", "switches by state", ["state"], registry=registry)
    for state, count in figures["switches"].items():
        switches.labels(state=state).set(count)
