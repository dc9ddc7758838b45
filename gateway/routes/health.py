"""Liveness, readiness and the OpenAPI document."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from flask import Blueprint, Response, current_app, jsonify

from gateway.api import operation
from gateway.liveness import loop_status, scheduler_liveness
from gateway.openapi import build_spec
from gateway.remote import rpc_pool
from shared.config import SETTINGS_CONFIG_KEY
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RpcError

bp = Blueprint("health", __name__)

READINESS_TIMEOUT = 3.0


@operation(bp, "GET", "/healthz", summary="Liveness", tag="operations", auth=False,
           description="200 while the gateway process serves requests.")
def healthz() -> dict:
    return {"status": "ok"}


@operation(bp, "GET", "/readyz", summary="Readiness", tag="operations", auth=False,
           errors=(503,),
           description="200 when the broker and every configured service answer, and the "
                       "scheduler's loop has ticked recently; 503 naming what does not. "
                       "`scheduler.held_back` lists (ids and reasons only) the switches past "
                       "their grace whose firing waits for their overdue notice to leave; "
                       "they do not make the gateway unready. Serve it to your own network "
                       "only.")
def readyz() -> Response:
    rpc = rpc_pool()
    checks = {"broker": "ok" if rpc.check_broker(READINESS_TIMEOUT) else "unreachable"}
    services = current_app.config[SETTINGS_CONFIG_KEY].service_names
    # Asked in parallel, so one silent service costs one timeout, not one per service.
    with ThreadPoolExecutor(max_workers=max(1, len(services))) as threads:
        statuses = threads.map(lambda name: _service_status(rpc, name), services)
        checks.update(zip(services, statuses, strict=True))
    details = _scheduler_loop(rpc, checks) if "scheduler" in services else {}
    ready = all(status == "ok" for status in checks.values())
    response = jsonify({"status": "ready" if ready else "not ready", "checks": checks,
                        **details})
    response.status_code = 200 if ready else 503
    return response


def _scheduler_loop(rpc: RpcClientPool, checks: dict[str, str]) -> dict:
    """Answering RPC is not enough: the loop that moves switches must be ticking."""
    figures = scheduler_liveness(rpc)
    stale_after = current_app.config[SETTINGS_CONFIG_KEY].scheduler_stale_after
    checks["scheduler_loop"] = loop_status(figures, stale_after)
    if figures is None:
        return {}
    keys = ("heartbeat_age_seconds", "lag_seconds", "due_switches", "held_back_switches",
            "held_back_by_reason", "held_back")
    return {"scheduler": {key: figures[key] for key in keys}}


def _service_status(rpc: RpcClientPool, service: str) -> str:
    try:
        rpc.call(service, "health", timeout=READINESS_TIMEOUT)
    except RpcError as exc:
        return type(exc).__name__
    return "ok"


@operation(bp, "GET", "/api/v1/openapi.json", summary="This API's OpenAPI document",
           tag="operations", auth=False)
def openapi() -> dict:
    return build_spec(current_app.config[SETTINGS_CONFIG_KEY].public_url)
