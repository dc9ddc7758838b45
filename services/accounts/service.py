"""The accounts service: nameko entrypoints only; the rules live in `accounts.py`."""

from __future__ import annotations

import logging
from datetime import timedelta

from services.accounts import privacy
from services.accounts.accounts import Accounts
from services.accounts.links import EmailLinks
from services.accounts.metrics import LOG_INS
from services.accounts.passwords import password_hasher
from services.accounts.schemas import (
    ClientContext,
    LogIn,
    PasswordChange,
    PasswordReset,
    PasswordResetRequest,
    ProfileChanges,
    SecondStep,
    SignUp,
    TotpConfirm,
    TotpDisable,
    VerifyEmail,
)
from services.accounts.storage import INDEXES, USERS, AccountsRepository
from services.accounts.tokens import LinkSettings
from services.accounts.totp import TotpKeys
from shared.dependencies import Clock, Config, LogContext
from shared.errors import ServiceError
from shared.events import Event, OutboxRelay, event_handler
from shared.health import health_report
from shared.logging import request_id
from shared.metrics import ServiceMetrics, counted
from shared.privacy import Erasures
from shared.retention import retention
from shared.rpc.entrypoint import rpc
from shared.storage.provider import Storage

log = logging.getLogger(__name__)

# Links in mail (verification, password reset) and two-factor secrets are keyed from the
# secret key.
REQUIRED_SETTINGS = ("JICM_SECRET_KEY",)


class AccountsService:
    name = "accounts"

    log_context = LogContext()
    settings = Config()
    clock = Clock()
    store = Storage(INDEXES, repository=AccountsRepository)
    metrics = ServiceMetrics()
    outbox = OutboxRelay(USERS)

    def _accounts(self) -> Accounts:
        return Accounts(
            self.store,
            password_hasher(self.settings.password_hash),
            self.clock.now(),
            policy_version=self.settings.policy_version,
            session_ttl=self.settings.session_ttl,
            links=LinkSettings.from_settings(self.settings),
            totp_keys=TotpKeys.from_settings(self.settings),
            request_id=request_id.get(),
        )

    def _links(self) -> EmailLinks:
        return self._accounts().links

    def _announce_now(self) -> None:
        """Relay the outbox before answering: a session ended by this call is forgotten
        by every gateway worker (AccountChanged) before its caller hears "done"."""
        try:
            self.outbox.relay_now()
        except Exception:
            log.warning("relaying at once failed; the relay's next sweep sends it",
                        exc_info=True)

    @rpc(expected_exceptions=ServiceError)
    def sign_up(self, request: dict, client: dict) -> dict:
        account = self._accounts().sign_up(
            SignUp.model_validate(request), ClientContext.model_validate(client)
        )
        return account.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def log_in(self, request: dict, client: dict) -> dict:
        with counted(LOG_INS):
            session = self._accounts().log_in(
                LogIn.model_validate(request), ClientContext.model_validate(client)
            )
        return session.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def log_in_second_step(self, request: dict, client: dict) -> dict:
        session = self._accounts().log_in_second_step(
            SecondStep.model_validate(request), ClientContext.model_validate(client)
        )
        return session.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def totp_status(self, user_id: str) -> dict:
        return self._accounts().totp_status(user_id).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def start_totp(self, user_id: str) -> dict:
        return self._accounts().start_totp(user_id).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def totp_set_up(self, user_id: str) -> dict | None:
        setup = self._accounts().totp_set_up(user_id)
        return setup.model_dump(mode="json") if setup else None

    @rpc(expected_exceptions=ServiceError)
    def confirm_totp(self, user_id: str, request: dict) -> dict:
        codes = self._accounts().confirm_totp(user_id, TotpConfirm.model_validate(request))
        return codes.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def disable_totp(self, user_id: str, request: dict) -> dict:
        status = self._accounts().disable_totp(user_id, TotpDisable.model_validate(request))
        return status.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def authenticate(self, token: str) -> dict:
        return self._accounts().authenticate(token).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def resolve_session(self, token: str) -> dict:
        return self._accounts().resolve_session(token).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def log_out(self, token: str) -> None:
        self._accounts().log_out(token)
        self._announce_now()

    @rpc(expected_exceptions=ServiceError)
    def list_sessions(self, token: str) -> dict:
        return self._accounts().list_sessions(token).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def end_sessions(self, user_id: str) -> dict:
        ended = self._accounts().end_sessions(user_id)
        self._announce_now()
        return ended.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def change_password(self, token: str, request: dict, client: dict) -> dict:
        session = self._accounts().change_password(
            token, PasswordChange.model_validate(request), ClientContext.model_validate(client)
        )
        self._announce_now()
        return session.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def update_profile(self, user_id: str, changes: dict) -> dict:
        profile = self._accounts().update_profile(user_id, ProfileChanges.model_validate(changes))
        self._announce_now()
        return profile.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def verify_email(self, request: dict) -> dict:
        account = self._links().verify_email(VerifyEmail.model_validate(request))
        self._announce_now()
        return account.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def resend_verification(self, user_id: str) -> dict:
        return self._links().resend_verification(user_id).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def request_password_reset(self, request: dict, client: dict) -> dict:
        queued = self._links().request_password_reset(
            PasswordResetRequest.model_validate(request), ClientContext.model_validate(client)
        )
        return queued.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def reset_password(self, request: dict) -> dict:
        changed = self._links().reset_password(PasswordReset.model_validate(request))
        self._announce_now()
        return changed.model_dump(mode="json")

    @rpc
    def health(self) -> dict:
        return health_report(self.name, self.store.users)

    # Privacy (services/accounts/privacy.py) -------------------------------------------------

    @rpc
    def verify_password(self, user_id: str, password: str) -> dict:
        return privacy.verify_password(self.store, password_hasher(self.settings.password_hash),
                                       user_id, password, self.clock.now())

    @rpc
    def close_account(self, user_id: str) -> bool:
        closed = privacy.close_account(self.store, user_id, self.clock.now())
        self._announce_now()
        return closed

    @rpc
    def find_user(self, email_or_id: str) -> dict | None:
        return privacy.find_user(self.store, email_or_id)

    @rpc
    def export_user(self, user_id: str) -> dict:
        return privacy.export_user(self.store, user_id)

    erasures = Erasures()

    @event_handler("ErasureRequested")
    def on_erasure_requested(self, event: Event) -> None:
        data = event.data
        self.erasures.answer(data, lambda: self._erase(data.user_id, data.email))

    def _erase(self, user_id: str, email: str | None) -> dict[str, int]:
        # Every gateway forgets the user before the document whose outbox would carry the
        # news is deleted. The account was normally closed, and that announced, already;
        # this covers a closing that failed.
        privacy.announce_erasure(self.store, user_id, self.clock.now())
        self._announce_now()
        return privacy.erase_user(self.store, user_id, email)

    @retention
    def purge(self) -> None:
        privacy.expire_unverified(self.store, self.clock.now(),
                                  timedelta(days=self.settings.retention_unverified_days))
