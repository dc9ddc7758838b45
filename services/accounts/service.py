"""The accounts service: nameko entrypoints only; the rules live in `accounts.py`."""

from __future__ import annotations

from nameko.rpc import rpc

from services.accounts.accounts import Accounts
from services.accounts.passwords import password_hasher
from services.accounts.schemas import ClientContext, LogIn, SignUp
from services.accounts.storage import INDEXES, USERS, AccountsRepository
from shared.dependencies import Clock, Config, LogContext
from shared.errors import ServiceError
from shared.events import OutboxRelay
from shared.health import health_report
from shared.logging import request_id
from shared.storage.provider import Storage


class AccountsService:
    name = "accounts"

    log_context = LogContext()
    settings = Config()
    clock = Clock()
    store = Storage(INDEXES, repository=AccountsRepository)
    outbox = OutboxRelay(USERS)

    def _accounts(self) -> Accounts:
        return Accounts(
            self.store,
            password_hasher(self.settings.password_hash),
            self.clock.now(),
            policy_version=self.settings.policy_version,
            session_ttl=self.settings.session_ttl,
            request_id=request_id.get(),
        )

    @rpc(expected_exceptions=ServiceError)
    def sign_up(self, request: dict, client: dict) -> dict:
        account = self._accounts().sign_up(
            SignUp.model_validate(request), ClientContext.model_validate(client)
        )
        return account.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def log_in(self, request: dict, client: dict) -> dict:
        session = self._accounts().log_in(
            LogIn.model_validate(request), ClientContext.model_validate(client)
        )
        return session.model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def authenticate(self, token: str) -> dict:
        return self._accounts().authenticate(token).model_dump(mode="json")

    @rpc(expected_exceptions=ServiceError)
    def log_out(self, token: str) -> None:
        self._accounts().log_out(token)

    @rpc
    def health(self) -> dict:
        return health_report(self.name, self.store.users)
