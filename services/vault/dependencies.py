"""The vault's own nameko dependencies: its keyring, and the loop that hands released
messages to delivery."""

from __future__ import annotations

import logging

import eventlet
from eventlet.event import Event as GreenEvent
from nameko.extensions import DependencyProvider

from services.vault.keys import DataKeyCache, DataKeys, Keyring, keyring_from_settings
from services.vault.release import DISPATCH_BATCH, Release
from services.vault.storage import VaultRepository
from shared.clock import CLOCK_CONFIG_KEY, SystemClock
from shared.config import settings_of
from shared.events.publisher import EventPublisher
from shared.events.topology import Topology
from shared.storage.provider import database_of

log = logging.getLogger(__name__)

SWEEP_INTERVAL_SECONDS = 1.0


class VaultKeys(DependencyProvider):
    """The keyring from configuration (checked at start-up) and the data-key cache."""

    def setup(self) -> None:
        self.keyring: Keyring = keyring_from_settings(settings_of(self.container))
        self.cache = DataKeyCache()
        log.info("vault keys: current KEK %s; can unwrap %s",
                 self.keyring.current_id, ", ".join(self.keyring.known_ids))

    def get_dependency(self, worker_ctx) -> VaultKeys:
        return self

    def data_keys(self, repo: VaultRepository) -> DataKeys:
        return DataKeys(repo.data_keys, self.keyring, self.cache)


def keys_of(container) -> VaultKeys:
    for provider in container.dependencies:
        if isinstance(provider, VaultKeys):
            return provider
    raise RuntimeError("the vault service has no VaultKeys dependency")


class ReleaseDispatcher(DependencyProvider):
    """Publishes MessageReleased for released messages whose time has come.

    Runs every second, and at once when a worker calls `wake()` (after marking a switch's
    messages released), so a release leaves within moments of the switch firing.
    Several vault processes may run it together: each message is claimed by one.
    """

    topology = Topology()

    def __init__(self) -> None:
        self._wake = GreenEvent()
        self._running = False

    def setup(self) -> None:
        self.publisher = EventPublisher(settings_of(self.container).amqp_uri)
        self.clock = self.container.config.get(CLOCK_CONFIG_KEY) or SystemClock()

    def start(self) -> None:
        self._running = True
        self.container.spawn_managed_thread(self._loop, identifier="vault.dispatcher")

    def stop(self) -> None:
        self._running = False
        self.wake()
        self.publisher.close()

    def kill(self) -> None:
        self.stop()

    def get_dependency(self, worker_ctx) -> ReleaseDispatcher:
        return self

    def wake(self) -> None:
        if not self._wake.ready():
            self._wake.send(True)

    def dispatch_now(self) -> int:
        """Hand every due release to delivery once (also used by tests)."""
        repo = VaultRepository(database_of(self.container))
        keys = keys_of(self.container).data_keys(repo)
        release = Release(repo, keys, self.clock.now())
        return release.dispatch_due(self.publisher)

    def _loop(self) -> None:
        while self._running:
            try:
                # A full batch means more may be due: go on at once.
                while self._running and self.dispatch_now() >= DISPATCH_BATCH:
                    pass
            except Exception:
                log.exception("release dispatch sweep failed")
            with eventlet.Timeout(SWEEP_INTERVAL_SECONDS, False):
                self._wake.wait()
            self._wake = GreenEvent()
