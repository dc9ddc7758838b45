"""Privacy's calls to the other services, every one bounded in time.

nameko's RpcProxy waits for ever for a reply, and a request to a service that is down
waits in its queue until the service returns. Here each call gives up after its deadline,
and its request message expires in the queue after the same time (so a service that comes
back late never runs a question nobody waits for any more).

- `accounts`: `verify_password`, `close_account`, `find_user` (a few seconds: a person or
  an operator is waiting);
- every service's `export_user(user_id)`, asked of all of them at once and waited for
  together, within `JICM_EXPORT_TIMEOUT`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from nameko.rpc import RpcProxy, RpcReply, ServiceProxy

from services.privacy.exports import PartAnswer
from shared.config import settings_of
from shared.errors import RateLimited, Unavailable
from shared.rpc.bounded import reply_within
from shared.rpc.bounded import send as send_bounded
from shared.rpc.errors import RemoteError, RpcTimeout, ServiceUnavailable

log = logging.getLogger(__name__)

ACCOUNTS_TIMEOUT = 5.0


class BoundedCalls:
    """A worker's bounded calls to any service."""

    def __init__(self, worker_ctx, listener, export_timeout: float) -> None:
        self.worker_ctx = worker_ctx
        self.listener = listener
        self.export_timeout = export_timeout

    def send(self, service: str, method: str, *args: Any, timeout: float) -> RpcReply:
        proxy = ServiceProxy(self.worker_ctx, service, self.listener, expiration=timeout)
        return send_bounded(getattr(proxy, method), *args, what=f"{service}.{method}")

    def wait(self, reply: RpcReply, timeout: float, what: str) -> Any:
        """The reply's result; RpcTimeout when none comes in time."""
        return reply_within(self.listener, reply, timeout, what)

    # Accounts --------------------------------------------------------------------------------

    def ask_accounts(self, method: str, *args: Any) -> Any:
        """`accounts.<method>(*args)`, or Unavailable (503) when accounts does not answer."""
        try:
            return self.wait(self.send("accounts", method, *args, timeout=ACCOUNTS_TIMEOUT),
                             ACCOUNTS_TIMEOUT, f"accounts.{method}")
        except RpcTimeout:
            log.warning("accounts.%s did not answer within %ss", method, ACCOUNTS_TIMEOUT)
        except ServiceUnavailable:
            log.warning("accounts.%s: no accounts service is running", method)
        except RemoteError as exc:
            log.error("accounts.%s failed: %s", method, exc)
        raise Unavailable("the accounts service is unavailable; try again shortly",
                          code="accounts_unavailable")

    def verify_password(self, user_id: str, password: str) -> bool:
        answer = self.ask_accounts("verify_password", user_id, password)
        retry_after = answer.get("retry_after_seconds")
        if retry_after:
            raise RateLimited("too many attempts; try again later",
                              details={"retry_after_seconds": retry_after})
        return answer.get("verified") is True

    def close_account(self, user_id: str) -> None:
        self.ask_accounts("close_account", user_id)

    def find_user(self, email_or_id: str) -> dict[str, str] | None:
        return self.ask_accounts("find_user", email_or_id)

    # Export parts ------------------------------------------------------------------------------

    def export_user(self, user_id: str, services: tuple[str, ...]) -> dict[str, PartAnswer]:
        """Every service's part, asked at once and awaited within one deadline."""
        sent: dict[str, RpcReply] = {}
        answers: dict[str, PartAnswer] = {}
        for service in services:
            try:
                sent[service] = self.send(service, "export_user", user_id,
                                          timeout=self.export_timeout)
            except ServiceUnavailable:
                answers[service] = PartAnswer(problem=f"the {service} service is not running")
        # One deadline for all: a silent service costs its wait once, and the answers that
        # arrived meanwhile are still collected.
        deadline = time.monotonic() + self.export_timeout
        for service, reply in sent.items():
            remaining = max(deadline - time.monotonic(), 0.001)
            answers[service] = self._part(service, reply, remaining)
        return answers

    def _part(self, service: str, reply: RpcReply, timeout: float) -> PartAnswer:
        try:
            data = self.wait(reply, timeout, f"{service}.export_user")
        except RpcTimeout:
            return PartAnswer(problem=f"no answer within {self.export_timeout:g} s")
        except RemoteError as exc:
            log.error("%s.export_user failed: %s", service, exc)
            return PartAnswer(problem=f"the {service} service failed: {exc.exc_type}",
                              failed=True)
        if not isinstance(data, dict):
            return PartAnswer(problem=f"the {service} service answered no part", failed=True)
        return PartAnswer(data=data)


class Services(RpcProxy):
    """Gives workers `BoundedCalls` to every other service."""

    def __init__(self) -> None:
        super().__init__("")  # the target is chosen per call

    def setup(self) -> None:
        self.export_timeout = settings_of(self.container).export_timeout

    def get_dependency(self, worker_ctx) -> BoundedCalls:
        return BoundedCalls(worker_ctx, self.rpc_reply_listener, self.export_timeout)
