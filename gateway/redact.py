"""Access-log lines without the secrets that some URLs carry.

A read link (`/r/<token>`) opens a released message, a test release's link
(`/r/test/<token>`) the same page as a test; a check-in link (`/c/<token>`) checks a
switch in; verification and reset links carry `?token=`. Whoever reads the access log
must not be able to use any of them, so gunicorn logs these URLs with the token cut out.
"""

from __future__ import annotations

import re

from gunicorn.glogging import Logger

_TOKEN_PATHS = re.compile(r"(/(?:r/test|r|c|u)/)[^/?#\s]+")
_TOKEN_QUERY = re.compile(r"((?:^|[?&])token=)[^&#\s]+")
REDACTED = "[redacted]"


def redact_url(text: str) -> str:
    """`GET /r/abc?x=1&token=def HTTP/1.1` -> `GET /r/[redacted]?x=1&token=[redacted] HTTP/1.1`."""
    text = _TOKEN_PATHS.sub(rf"\1{REDACTED}", text)
    return _TOKEN_QUERY.sub(rf"\1{REDACTED}", text)


class RedactingLogger(Logger):
    """gunicorn's logger, with tokens removed from the request line, path and query."""

    def atoms(self, resp, req, environ, request_time) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        for key in ("r", "U", "q", "{raw_uri}e", "{path_info}e", "{query_string}e"):
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_url(atoms[key])
        return atoms
