"""What the end-to-end switch and release tests share: `make run`'s processes with
seconds-long settings. The owner who signs up, verifies the address through the mailed
link and drives the switch API is `tests.e2e.people.Sender`.

No stand-in anywhere: accounts mails the link (through delivery), its confirmation
publishes `EmailVerified`, the scheduler arms the switch, and a switch fires only once
delivery says its overdue notice left.
"""

from __future__ import annotations

from datetime import datetime

# Switches that fire within seconds; mail that goes out within a second, and a failed
# attempt retried a second later rather than a minute.
SECONDS_LONG = {"JICM_MIN_INTERVAL": "1", "JICM_SCHEDULER_TICK": "0.2",
                "JICM_SCHEDULER_RECHECK": "1", "JICM_DELIVERY_TICK": "0.2",
                "JICM_DELIVERY_RETRY_BASE": "1", "JICM_DELIVERY_RETRY_CAP": "2"}


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)
