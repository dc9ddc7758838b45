"""A stand-in for the services behind the web site: answers the RPCs the pages make, from
a small in-memory world, so the site's own behaviour (forms, cookies, CSRF, errors,
words) is tested fast. The services' rules have their own tests."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.app import create_app
from shared.config import load_settings
from shared.errors import AuthenticationFailed, NotFound, ServiceError

TOKEN = "t" * 43
OTHER_TOKEN = "o" * 43
USER_ID = "11111111-1111-4111-8111-111111111111"
SWITCH_ID = "22222222-2222-4222-8222-222222222222"
MESSAGE_ID = "33333333-3333-4333-8333-333333333333"
NOW = datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def switch(state: str = "armed", **changes: Any) -> dict[str, Any]:
    view = {
        "id": SWITCH_ID, "state": state, "cycle": 1, "interval_seconds": 30 * 86_400,
        "grace_seconds": 7 * 86_400, "reminders_seconds": [259_200, 86_400, 3600],
        "paused_until": None, "deadline": iso(NOW + timedelta(days=12)),
        "grace_ends_at": None, "last_checkin_at": iso(NOW - timedelta(days=18)),
        "fired_at": None, "created_at": iso(NOW - timedelta(days=40)),
    }
    return {**view, **changes}


class FakeServices:
    """`RpcClientPool.call` over handlers: `world.answer("vault", "get_message", fn)`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, tuple]] = []
        self.profile = {"id": USER_ID, "email": "ada@example.org", "email_verified": True,
                        "created_at": iso(NOW), "policy_version": "2024-04-29",
                        "time_zone": "Europe/Paris"}
        self.switches = [switch()]
        self.contacts: list[dict[str, Any]] = []
        self.handlers: dict[tuple[str, str], Callable[..., Any]] = {
            ("accounts", "authenticate"): self._authenticate,
            ("accounts", "resolve_session"): self._resolve_session,
            ("accounts", "log_in"): lambda body, client: {
                "token": TOKEN, "expires_at": iso(NOW + timedelta(days=14))},
            ("accounts", "list_sessions"): lambda token: {"sessions": []},
            ("accounts", "totp_status"): lambda user_id: {
                "enabled": False, "enabled_at": None, "recovery_codes_left": 0},
            ("scheduler", "list_switches"): lambda user_id: {"switches": self.switches},
            ("scheduler", "get_switch"): self._get_switch,
            ("scheduler", "list_trusted_contacts"): lambda user_id, switch_id: {
                "trusted_contacts": self.contacts, "limit": 3},
            ("vault", "list_messages"): lambda user_id: {"messages": []},
            ("vault", "get_message"): self._get_message,
            ("billing", "overview"): lambda user_id: self.overview,
            ("privacy", "get_consent"): lambda user_id, client: self._consent(client),
            ("privacy", "update_consent"): self._update_consent,
            ("privacy", "list_receipts"): lambda user_id: {"receipts": self.receipts},
            ("privacy", "list_requests"): lambda user_id: {"requests": self.requests},
            ("privacy", "choose_visitor_cookies"): self._choose_visitor_cookies,
        }
        self.overview = {
            "plan": "free", "plan_title": "Free", "status": "none",
            "entitlements": {"switches": 1, "messages_per_switch": 3,
                             "recipients_per_message": 3, "body_bytes": 10_240},
            "renews_at": None, "ends_at": None, "can_manage": False}
        self.marketing = dict.fromkeys(("email", "postal", "phone", "sms"), False)
        self.cookies = {"analytics": False, "marketing": False}
        self.receipts: list[dict] = []
        self.requests: list[dict] = []

    def answer(self, service: str, method: str, handler: Callable[..., Any]) -> None:
        self.handlers[(service, method)] = handler

    def call(self, service: str, method: str, *args: Any, timeout: float | None = None,
             context: dict | None = None) -> Any:
        self.calls.append((service, method, args))
        handler = self.handlers.get((service, method))
        if handler is None:
            raise AssertionError(f"the page asked {service}.{method}, which this test "
                                 "did not expect")
        return handler(*args)

    def asked(self, service: str, method: str) -> list[tuple]:
        return [args for s, m, args in self.calls if (s, m) == (service, method)]

    def _authenticate(self, token: str) -> dict:
        if token != TOKEN:
            raise AuthenticationFailed("the session token is invalid or has expired",
                                       code="invalid_token")
        return self.profile

    def _resolve_session(self, token: str) -> dict:
        return {"profile": self._authenticate(token),
                "expires_at": iso(NOW + timedelta(days=14))}

    def _get_switch(self, user_id: str, switch_id: str) -> dict:
        for found in self.switches:
            if found["id"] == switch_id:
                return found
        raise NotFound("there is no such switch", code="switch_not_found")

    def _consent(self, client: dict, kept_off: list | None = None) -> dict:
        signal = "gpc" if client.get("gpc") else ("dnt" if client.get("dnt") else None)
        return {"marketing": dict(self.marketing), "cookies": dict(self.cookies),
                "policy_version": "2024-04-29", "policy_accepted_at": iso(NOW),
                "sale_and_sharing": "opted_out", "signal": signal,
                "kept_off": kept_off or [], "updated_at": iso(NOW)}

    def _update_consent(self, user_id: str, changes: dict, client: dict) -> dict:
        """Privacy's rule, as far as the pages need it: a signal keeps everything off."""
        signal = client.get("gpc") or client.get("dnt")
        kept_off = []
        for group, store in (("marketing", self.marketing), ("cookies", self.cookies)):
            for name, wanted in changes.get(group, {}).items():
                if wanted and signal:
                    kept_off.append(f"{group}.{name}")
                store[name] = wanted and not signal
                self.receipts.append({
                    "id": f"r{len(self.receipts)}", "at": iso(NOW),
                    "method": "gpc" if signal else client.get("via", "api"),
                    "changes": [{"purpose": f"{group}.{name}", "choice": store[name]}],
                    "notice_version": "2024-04-29", "notice_sha256": "ab" * 32,
                    "ip_truncated": "127.0.0.0/24", "user_agent": None})
        return self._consent(client, kept_off)

    def _choose_visitor_cookies(self, token: str, choices: dict, client: dict) -> dict:
        signal = client.get("gpc") or client.get("dnt")
        kept = {name: bool(on) and not signal for name, on in choices.items()}
        return {"cookies": kept, "signal": "gpc" if client.get("gpc") else None,
                "kept_off": [], "expires_at": iso(NOW + timedelta(days=180))}

    def _get_message(self, user_id: str, message_id: str) -> dict:
        if message_id != MESSAGE_ID:
            raise NotFound(f"you have no message {message_id}", code="message_not_found")
        return {"id": MESSAGE_ID, "switch_id": SWITCH_ID, "subject": "For Grace",
                "body": "The keys are in the blue box.", "sender_name": None, "inline": False,
                "release_delay_seconds": 0, "state": "sealed", "created_at": iso(NOW),
                "updated_at": iso(NOW),
                "recipients": [{"id": "r1", "name": "Grace", "email": "grace@example.org"}]}


def site_app(tmp_path, world: FakeServices, public_url: str = "http://127.0.0.1:8000",
             **environ: str):
    settings = load_settings({"JICM_ENV": "test", "JICM_DATA_DIR": str(tmp_path / "data"),
                              "JICM_PUBLIC_URL": public_url, **environ})
    return create_app(settings, rpc=world)


def csrf_token(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page)[1]


def refuse(exc: ServiceError) -> Callable[..., Any]:
    def handler(*args: Any) -> Any:
        raise exc

    return handler
