"""The vault service: nameko entrypoints only; the rules live in `messages.py`,
`release.py`, `test_release.py`, `limits.py` and `erasure.py`."""

from __future__ import annotations

from nameko.timer import timer

from services.vault import privacy
from services.vault.dependencies import ReleaseDispatcher, VaultKeys
from services.vault.erasure import erase_user
from services.vault.keys import keyring_from_settings
from services.vault.messages import Messages
from services.vault.metrics import RELEASES_STARTED
from services.vault.release import Release
from services.vault.scheduler_client import SCHEDULER_TIMEOUT_SECONDS, SchedulerSwitches
from services.vault.schemas import MessageChanges, NewMessage, TestReleaseOwner
from services.vault.storage import INDEXES, VaultRepository
from services.vault.test_release import DELIVERY_TIMEOUT_SECONDS, DeliveryTestMail, TestReleases
from shared.config import Settings
from shared.dependencies import Clock, Config, LogContext
from shared.entitlements import billing_rpc, limits_for
from shared.errors import ServiceError
from shared.events import DeadLetter, Event, event_handler
from shared.health import health_report
from shared.metrics import ServiceMetrics
from shared.privacy import Erasures
from shared.rpc.bounded import BoundedRpcProxy
from shared.rpc.entrypoint import rpc
from shared.storage.provider import Storage

# The key-encryption key, inline or as a key file; the secret key names erased users'
# pseudonyms in the erasure records.
REQUIRED_SETTINGS = ("JICM_SECRET_KEY", "JICM_VAULT_KEK|JICM_VAULT_KEK_FILE")

# Seconds between two looks for fired switches whose release the scheduler must hear of.
NOTIFY_INTERVAL_SECONDS = 1.0


def check_settings(settings: Settings) -> None:
    """Read the keyring once before starting: a bad key file stops the process cleanly."""
    keyring_from_settings(settings)


class VaultService:
    name = "vault"

    log_context = LogContext()
    settings = Config()
    clock = Clock()
    store = Storage(INDEXES, repository=VaultRepository)
    metrics = ServiceMetrics()
    keys = VaultKeys()
    dispatcher = ReleaseDispatcher()
    # Bounded calls whose requests expire in the queue: a scheduler that comes back late
    # never runs stale ones.
    scheduler = BoundedRpcProxy("scheduler", timeout=SCHEDULER_TIMEOUT_SECONDS)
    # Asked for a user's plan when the vault's own copy says "free" or nothing.
    billing = billing_rpc()
    # Takes a test release's mails (the real release goes through MessageReleased).
    delivery = BoundedRpcProxy("delivery", timeout=DELIVERY_TIMEOUT_SECONDS)

    def _data_keys(self):
        return self.keys.data_keys(self.store)

    def _messages(self) -> Messages:
        return Messages(
            self.store,
            self._data_keys(),
            SchedulerSwitches(self.scheduler),
            lambda user_id: limits_for(user_id, self.store.entitlements, self.billing),
            self.clock.now(),
        )

    def _release(self) -> Release:
        return Release(self.store, self._data_keys(), self.clock.now())

    def _test_releases(self) -> TestReleases:
        return TestReleases(self.store, self._data_keys(), SchedulerSwitches(self.scheduler),
                            self.clock.now(), public_url=self.settings.public_url)

    # The author's messages ---------------------------------------------------------------

    @rpc(expected_exceptions=ServiceError)
    def create_message(self, user_id: str, sender_email: str, request: dict) -> dict:
        created = self._messages().create(user_id, sender_email, NewMessage.model_validate(request))
        return created.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def list_messages(self, user_id: str) -> dict:
        return self._messages().list(user_id).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def get_message(self, user_id: str, message_id: str) -> dict:
        return self._messages().get(user_id, message_id).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def update_message(self, user_id: str, sender_email: str, message_id: str,
                       changes: dict) -> dict:
        message = self._messages().update(
            user_id, sender_email, message_id, MessageChanges.model_validate(changes)
        )
        return message.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def delete_message(self, user_id: str, message_id: str) -> None:
        self._messages().delete(user_id, message_id)

    # The release ---------------------------------------------------------------------------

    # An author erased here asked for nothing to be released: no release record either.
    @event_handler("CheckInMissed", unless_erased=True)
    def on_check_in_missed(self, event: Event) -> None:
        if self._release().release_switch(event.data):
            self.dispatcher.wake()
        RELEASES_STARTED.inc()

    @timer(interval=NOTIFY_INTERVAL_SECONDS)
    def notify_released_switches(self) -> None:
        """Tell the scheduler about each fired switch whose messages were all handed over."""
        self._release().notify_due(SchedulerSwitches(self.scheduler))

    @rpc(expected_exceptions=ServiceError)
    def release_status(self, switch_id: str) -> dict:
        return self._release().release_status(switch_id)

    @rpc(expected_exceptions=ServiceError)
    def released_content(self, message_id: str, recipient_id: str) -> dict:
        return self._release().released_content(message_id, recipient_id).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def read_released(self, token: str, client: dict) -> dict:
        content = self._release().read_released(token, client.get("ip"))
        return content.model_dump(mode="json")

    # Test releases to the owner (services/vault/test_release.py) ---------------------------

    @rpc(expected_exceptions=ServiceError)
    def test_release(self, user_id: str, switch_id: str, owner: dict) -> dict:
        started = self._test_releases().start(user_id, switch_id,
                                              TestReleaseOwner.model_validate(owner),
                                              DeliveryTestMail(self.delivery))
        return started.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def test_release_content(self, test_release_id: str, message_id: str,
                             recipient_id: str) -> dict:
        content = self._test_releases().content(test_release_id, message_id, recipient_id)
        return content.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def read_test_release(self, token: str, client: dict) -> dict:
        return self._test_releases().read(token, client.get("ip")).model_dump(mode="json")

    # Plans and erasure -----------------------------------------------------------------------

    @event_handler("PlanChanged", unless_erased=True)
    def on_plan_changed(self, event: Event) -> None:
        self.store.entitlements.record(event.data, self.clock.now())

    @rpc
    def health(self) -> dict:
        return health_report(self.name, self.store.messages)

    # Privacy (services/vault/privacy.py) --------------------------------------------------

    # The erasure saga's answers, through their own outbox (release.py says why the
    # vault's other events do not use one).
    erasures = Erasures()

    @rpc
    def export_user(self, user_id: str) -> dict:
        return privacy.export_user(self.store, self._data_keys(), user_id)

    @event_handler("ErasureRequested")
    def on_erasure_requested(self, event: Event) -> None:
        data = event.data
        if data.reason == "retention":
            # Agree with the scheduler: it keeps an armed switch, so its messages stay too.
            refusal = SchedulerSwitches(self.scheduler).retention_refusal(data.user_id)
            if refusal:
                raise DeadLetter(refusal)
        self.erasures.answer(data, lambda: erase_user(self.store, self._data_keys(),
                                                      data.user_id))
