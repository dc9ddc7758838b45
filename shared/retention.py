"""`@retention`: a service's scheduled purge, every `JICM_RETENTION_INTERVAL` seconds.

Each service purges its own data (the windows are settings: docs/configuration.md and
docs/privacy.md say which):
accounts hands accounts never verified to the erasure saga, delivery reduces old mail
records to counts, billing drops pseudonymised invoices past the tax window. Data with a
fixed lifetime (sessions, link tokens, processed-event ids, exports, the ledger, erasure
records, check-in history) carries an expiry date on a TTL index instead, which the
storage layer purges every minute.

Like any nameko timer it fires in every replica; each purge is a set of conditional
deletes and updates, so two replicas purging at once do each thing once. It fires at
start-up too, so a service restarted more often than the interval still purges. No purge
anywhere touches an armed switch: a silent owner is what the switch waits for.
"""

from __future__ import annotations

from nameko.timer import Timer

from shared.config import settings_of


class RetentionTimer(Timer):
    """A timer with the configured retention interval, firing at start-up first."""

    def __init__(self, **kwargs) -> None:
        super().__init__(interval=3600.0, eager=True, **kwargs)

    def setup(self) -> None:
        self.interval = settings_of(self.container).retention_interval


retention = RetentionTimer.decorator
