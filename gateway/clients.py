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
