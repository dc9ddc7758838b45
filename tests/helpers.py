"""Small helpers shared by tests: polling with a deadline instead of sleeping, and a look
into a dead-letter queue."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             what: str = "") -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def dead_letters(amqp_uri: str, queue: str) -> list:
    """What waits in the dead-letter queue `queue` (left there), up to 100 messages."""
    from shared.events.deadletters import connect, peek

    connection = connect(amqp_uri)
    try:
        return list(peek(connection.channel(), queue, 100))
    finally:
        connection.close()
