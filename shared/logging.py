"""Structured logging: one JSON object per line, carrying the request and event ids.

The ids live in context variables. The gateway sets `request_id` per HTTP request and
sends it along with every RPC call; services restore it (and `event_id` while handling
an event) for each worker through `shared.dependencies.LogContext`, so one grep follows
a request through every process. Greenlets each get their own context, so concurrent
workers never see each other's ids.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pythonjsonlogger.json import JsonFormatter

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(service)s %(name)s: %(message)s"


class ContextFilter(logging.Filter):
    """Adds the service name and the current request and event ids to every record."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = request_id.get()
        record.event_id = event_id.get()
        return True


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Send every log record of this process to stderr, as JSON lines or as text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter(service))
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(service)s %(name)s %(message)s "
                "%(request_id)s %(event_id)s",
                rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # amqp and pika narrate every connection at INFO.
    for chatty in ("amqp", "pika"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


@contextmanager
def bound(request: str | None = None, event: str | None = None) -> Iterator[None]:
    """Set the request and/or event id for the duration of a block."""
    tokens = []
    if request is not None:
        tokens.append((request_id, request_id.set(request)))
    if event is not None:
        tokens.append((event_id, event_id.set(event)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
