"""What services are told about the HTTP client behind a request."""

from __future__ import annotations

from flask import request

USER_AGENT_MAX = 512


def client_context() -> dict:
    """The client's address (as seen through trusted proxies) and user agent."""
    return {
        "ip": request.remote_addr,
        "user_agent": (request.headers.get("User-Agent") or "")[:USER_AGENT_MAX] or None,
    }


def privacy_signals() -> dict:
    """The browser's privacy signals: Global Privacy Control (`Sec-GPC: 1`) and Do Not
    Track (`DNT: 1`). Both mean "do not sell or share, no tracking"; we honour both."""
    return {
        "gpc": request.headers.get("Sec-GPC", "").strip() == "1",
        "dnt": request.headers.get("DNT", "").strip() == "1",
    }


def consent_context(via: str = "api") -> dict:
    """`client_context()` with the privacy signals, for the privacy service; `via` says
    whether a program (`api`) or a person on the web site (`web`) made the choice."""
    return {**client_context(), **privacy_signals(), "via": via}
