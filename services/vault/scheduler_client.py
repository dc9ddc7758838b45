"""Which switch a message belongs to, and telling the scheduler a release is done: the
scheduler owns switches, the vault asks it.

The vault cannot read the scheduler's data, so it asks over RPC:
`scheduler.default_switch_id(user_id) -> str` and
`scheduler.owns_switch(user_id, switch_id) -> bool`, which is False for another user's
switch, an unknown one, and one that has already fired (a message written to it would
stay sealed for ever). Only when the answer is no does the vault ask `get_switch` why,
so that the refusal names the switch's state. nameko's RPC proxy has no timeout of its
own; every call here is bounded (and its request expires in the queue), so a scheduler
that is down makes writing a message fail fast with a 503, never hang.

Once every message of a fired switch was handed to delivery, the vault calls
`scheduler.mark_released([{switch_id, cycle}, ...])` (idempotent), which moves each switch
`fired -> released`, all the switches the vault found complete in one question.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from shared.errors import Conflict, NotFound, Unavailable
from shared.rpc.bounded import BoundedClient
from shared.rpc.errors import RemoteError, RpcTimeout, ServiceUnavailable

log = logging.getLogger(__name__)

# Below the gateway's default RPC deadline, so the caller learns why rather than timing out.
SCHEDULER_TIMEOUT_SECONDS = 3.0

# The scheduler's states in which a switch no longer takes messages.
FIRED_STATES = ("fired", "released")


class SwitchDirectory(Protocol):
    def default_switch_id(self, user_id: str) -> str: ...

    def owns_switch(self, user_id: str, switch_id: str) -> bool: ...

    def switch_state(self, user_id: str, switch_id: str) -> str | None: ...


def resolve_switch(switches: SwitchDirectory, user_id: str, switch_id: str | None) -> str:
    """The switch a message goes to: the one named, else the default, if it takes messages."""
    chosen = switch_id if switch_id is not None else switches.default_switch_id(user_id)
    if switches.owns_switch(user_id, chosen):
        return chosen
    raise refusal(switches.switch_state(user_id, chosen), chosen, default=switch_id is None)


def refusal(state: str | None, switch_id: str, *, default: bool) -> NotFound | Conflict:
    """Why a message cannot go to `switch_id`, given the state the scheduler reports."""
    if state is None and default:
        # Right after sign-up, the scheduler may not have created the default switch yet.
        return NotFound("your switch is still being set up; try again in a moment",
                        code="switch_not_found", details={"field": "switch_id"})
    if state is None:
        # Another user's switch is answered like a switch that does not exist.
        return NotFound(f"you have no switch {switch_id}", code="switch_not_found",
                        details={"field": "switch_id"})
    if state in FIRED_STATES:
        return switch_fired(switch_id, state)
    # The scheduler said no and then described a live switch: it changed in between.
    return Conflict("the switch changed while the message was being written; try again",
                    code="busy", details={"switch_id": switch_id, "state": state})


def switch_fired(switch_id: str, state: str) -> Conflict:
    return Conflict(
        f"switch {switch_id} has fired (state: {state}): its messages are being released, "
        "and a message written to it now would never be delivered",
        code="switch_fired", details={"field": "switch_id", "switch_id": switch_id,
                                      "state": state},
    )


class SchedulerSwitches:
    """The scheduler's answers through a bounded RPC client (`shared.rpc.bounded`)."""

    def __init__(self, client: BoundedClient) -> None:
        self.client = client

    def default_switch_id(self, user_id: str) -> str:
        return str(self._ask("default_switch_id", user_id))

    def owns_switch(self, user_id: str, switch_id: str) -> bool:
        return self._ask("owns_switch", user_id, switch_id) is True

    def switch_state(self, user_id: str, switch_id: str) -> str | None:
        """The switch's state as its owner sees it; None if `user_id` has no such switch."""
        switch = self._ask("get_switch", user_id, switch_id, missing=None)
        return None if switch is None else str(switch["state"])

    def retention_refusal(self, user_id: str) -> str | None:
        """Why the scheduler refuses to let retention erase this user, or None;
        Unavailable if it cannot be asked now (the erasure is retried)."""
        answer = self._ask("retention_refusal", user_id)
        return None if answer is None else str(answer)

    def mark_released(self, releases: list[tuple[str, int]]) -> dict[str, str | None]:
        """Tell the scheduler these switches are released: by switch id, None if it marked
        it, or why it refused (it did not fire in that cycle); Unavailable if the
        scheduler cannot be reached now (try again later)."""
        answers = self._ask("mark_released", [{"switch_id": switch_id, "cycle": cycle}
                                              for switch_id, cycle in releases])
        return {str(switch_id): None if refusal is None else str(refusal)
                for switch_id, refusal in answers.items()}

    def _ask(self, method: str, *args: Any, **fallback: Any) -> Any:
        try:
            return self.client.call(method, *args)
        except RpcTimeout as exc:
            log.warning("%s", exc)
        except ServiceUnavailable:
            log.warning("scheduler.%s: no scheduler is running", method)
        except RemoteError as exc:
            if exc.exc_type == "NotFound" and "missing" in fallback:
                return fallback["missing"]
            log.error("scheduler.%s failed: %s", method, exc)
        raise Unavailable("the scheduler is unavailable, so the switch cannot be checked; "
                          "try again shortly", code="scheduler_unavailable")
