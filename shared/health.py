"""What a service answers to the gateway's readiness probe."""

from __future__ import annotations

import os
import socket

from shared.storage import Collection

HEALTH_PROBE_ID = "__health_probe__"


def health_report(service: str, collection: Collection) -> dict:
    """Prove the service is consuming RPC and can reach its database."""
    collection.get(HEALTH_PROBE_ID)  # raises if the database is unreachable
    return {"service": service, "status": "ok", "host": socket.gethostname(), "pid": os.getpid()}
