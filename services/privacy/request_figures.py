"""The data subject requests privacy holds, read from its store when /metrics is scraped:
what an operator is alerted on before a request outlives its due date."""

from collections.abc import Iterable
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily

from services.privacy.records import ERASURE, EXPORT, OPEN
from services.privacy.storage import REQUESTS
from shared.metrics import gauge
from shared.storage import Database


def request_figures(db: Database, now: datetime) -> Iterable[GaugeMetricFamily]:
    """Open and overdue (past their due date, not complete) requests by type."""
    requests = db.collection(REQUESTS)
    still_open = gauge("jicm_privacy_requests_open", "requests not complete yet", labels=["type"])
    overdue = gauge("jicm_privacy_requests_overdue",
                    "requests past their due date and not complete", labels=["type"])
    for kind in (EXPORT, ERASURE):
        waiting = {"type": kind, "status": {"$in": list(OPEN)}}
        still_open.add_metric([kind], requests.count(waiting))
        overdue.add_metric([kind], requests.count({**waiting, "due_at": {"$lt": now}}))
    return [still_open, overdue]
