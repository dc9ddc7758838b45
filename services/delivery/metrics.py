"""What delivery counts (served by shared/metrics.py's endpoint): each attempt's outcome
as it is recorded, so a mail is counted once whichever delivery process sent it."""

from typing import Any

from prometheus_client import Counter

MAILS = Counter("jicm_mails", "mail attempts by kind and outcome: sent, retried, failed, "
                "suppressed", ["kind", "outcome"])
MAILS_FAILED = Counter("jicm_mails_failed", "mail that failed for good, by kind and why: "
                       "bounced, refused, gave_up, unbuildable", ["kind", "failure"])

OUTCOMES = {"sent": "sent", "retrying": "retried", "failed": "failed", "suppressed": "suppressed"}


def count_outcome(record: dict[str, Any]) -> None:
    """Count the outcome just recorded on `record` (a delivery record as written)."""
    outcome = OUTCOMES.get(record["state"])
    if outcome is None:
        return
    MAILS.labels(record["kind"], outcome).inc()
    if outcome == "failed":
        MAILS_FAILED.labels(record["kind"], record.get("failure", "unknown")).inc()
