"""The storage port as a nameko dependency: one database per service, opened once.

`MONGO_URI` set means MongoDB through pymongo; unset means the embedded SQLite file
`var/data/<service>.sqlite3`. Which one is announced in the start-up log. Declared
indexes are created at start-up, and a background loop deletes expired documents
(MongoDB's TTL monitor does the same on its side; doing it here too keeps both
backends behaving alike).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import eventlet
from nameko.extensions import DependencyProvider

from shared.clock import CLOCK_CONFIG_KEY, SystemClock
from shared.config import Settings, settings_of
from shared.storage import Database, Index, open_database

log = logging.getLogger(__name__)

PURGE_INTERVAL_SECONDS = 60.0

# Collections the platform itself keeps in every service's database.
PROCESSED_EVENTS = "processed_events"
# Each service's answers in the erasure saga (shared/privacy.py).
ERASURES = "erasures"
PLATFORM_INDEXES: dict[str, list[Index]] = {
    PROCESSED_EVENTS: [Index.on("expires_at", expire_after_seconds=0)],
    ERASURES: [Index.on("expires_at", expire_after_seconds=0), Index.on("subject")],
}


def open_service_database(service: str, indexes: Mapping[str, list[Index]],
                          settings: Settings) -> Database:
    """`service`'s own database (MongoDB or the embedded file), its indexes ensured.

    What the `Storage` dependency opens at start-up, and what an operator command opens
    to read or repair the same store while the service runs.
    """
    return open_store(service, indexes, mongo_uri=settings.mongo_uri,
                      data_dir=settings.data_dir)


def open_store(service: str, indexes: Mapping[str, list[Index]], *, data_dir: Path,
               mongo_uri: str | None = None, mongo_client: Any = None) -> Database:
    """A database named for `service` with the platform's and `indexes`' indexes ensured
    (`open_service_database` without settings: tests and tools give the place)."""
    db = open_database(service, mongo_uri=mongo_uri, data_dir=data_dir,
                       mongo_client=mongo_client)
    for name, declared in {**PLATFORM_INDEXES, **indexes}.items():
        db.ensure_indexes(name, declared)
    return db


class Storage(DependencyProvider):
    """Hands each worker a repository built on the service's own database."""

    def __init__(
        self,
        indexes: Mapping[str, list[Index]],
        repository: Callable[[Database], Any] | None = None,
    ) -> None:
        self.indexes = dict(indexes)
        self.repository = repository
        self.db: Database | None = None
        self._running = False

    def setup(self) -> None:
        self.db = open_service_database(self.container.service_name, self.indexes,
                                        settings_of(self.container))
        log.info("storage: %s", self.db.describe())

    def start(self) -> None:
        self._running = True
        self.container.spawn_managed_thread(self._purge_loop, identifier="storage.purge")

    def stop(self) -> None:
        self._running = False
        self._close()

    def kill(self) -> None:
        self._running = False
        self._close()

    def get_dependency(self, worker_ctx) -> Any:
        return self.repository(self.db) if self.repository else self.db

    def _close(self) -> None:
        if self.db is not None:
            self.db.close()

    def _purge_loop(self) -> None:
        clock = self.container.config.get(CLOCK_CONFIG_KEY) or SystemClock()
        expiring = [
            name
            for name, indexes in {**PLATFORM_INDEXES, **self.indexes}.items()
            if any(index.expire_after_seconds is not None for index in indexes)
        ]
        while self._running:
            eventlet.sleep(PURGE_INTERVAL_SECONDS)
            for name in expiring:
                if not self._running:
                    return
                try:
                    removed = self.db.collection(name).purge_expired(clock.now())
                except Exception:
                    log.exception("purging expired documents of %s failed", name)
                    continue
                if removed:
                    log.info("purged %d expired documents from %s", removed, name)


def database_of(container) -> Database:
    """The database of the container's Storage dependency (for other platform parts)."""
    for provider in container.dependencies:
        if isinstance(provider, Storage):
            if provider.db is None:
                raise RuntimeError("Storage is not set up yet")
            return provider.db
    raise RuntimeError(
        f"service {container.service_name!r} has no Storage dependency; "
        "event handlers and outboxes need one"
    )
