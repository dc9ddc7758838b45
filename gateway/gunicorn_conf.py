"""gunicorn settings for the gateway (`gunicorn -c gateway/gunicorn_conf.py ...`).

Threads, not eventlet: gunicorn 26 removed its eventlet worker, and the gateway's RPC
client is plain pika, so eventlet stays out of the gateway entirely.

Each worker runs one more thread of its own: the listener that hears session revocations
(gateway/sessions.py). It starts in the worker, after the fork, when the worker resolves
its first session (a thread started before a fork would not survive it), so `preload_app`
changes nothing there.
"""

import os
import shutil
import tempfile
from pathlib import Path

bind = os.environ.get("JICM_GATEWAY_BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = int(os.environ.get("JICM_GATEWAY_WORKERS", "2"))
threads = int(os.environ.get("JICM_GATEWAY_THREADS", "8"))
timeout = 30
graceful_timeout = 10
keepalive = 5
# Bound what one request can make us read before the app's own size limit applies.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# gunicorn 27's control socket lives at one path per user: several gateways on one
# machine (tests, replicas) would fight over it, and nothing here uses it.
control_socket_disable = True
_own_metrics_dir = False
accesslog = "-"
errorlog = "-"
# Read links, check-in links and mailed tokens never reach the access log.
logger_class = "gateway.redact.RedactingLogger"
# No client address: the access log need not hold personal data.
access_log_format = '"%(r)s" %(s)s %(b)s %(L)ss rid=%({x-request-id}o)s'


def on_starting(server) -> None:
    """Give the workers a directory for their metric files (gateway/instruments.py), emptied
    first: files left by an earlier gateway would add its old counts to ours. Set here, in
    the master before any worker exists, because prometheus-client reads the variable once,
    when a worker imports it."""
    global _own_metrics_dir
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not given:
        _own_metrics_dir = True
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="jicm-gateway-metrics-")
        return
    path = Path(given)
    path.mkdir(parents=True, exist_ok=True)
    for leftover in path.glob("*.db"):
        leftover.unlink()


def child_exit(server, worker) -> None:
    """A worker that exits takes its live gauges with it; its counters stay counted."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
