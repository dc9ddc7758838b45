"""Talking SMTP: one connection per batch, every failure sorted into temporary or permanent.

Only the server's verdict on a message (its reply to MAIL, RCPT or DATA) can fail a mail
for good, and only with a 5xx code. Everything else is temporary and retried: 4xx replies,
refused or dropped connections, timeouts, TLS trouble, and even a refused login or an
unsupported STARTTLS, which are our configuration's fault, not the mail's, and must not
turn into lost mail while an operator fixes them.

The connection is opened on the first mail of a batch and reused for the next ones; a
connection error fails only the mail it touched and drops the connection, so the next
mail of the batch opens a new one.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from shared.config import Settings, SmtpTls

log = logging.getLogger(__name__)

ACCEPTED, TEMPORARY, PERMANENT = "accepted", "temporary", "permanent"
DETAIL_MAX = 500


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: `accepted`, `temporary` (retry later) or `permanent` (give up)."""

    result: str
    detail: str = ""

    @classmethod
    def from_reply(cls, code: int, text: bytes | str, stage: str) -> Outcome:
        """Sort an SMTP reply: 5xx is permanent, anything else temporary."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        detail = f"{stage}: {code} {text}".strip()[:DETAIL_MAX]
        # RFC 5321 4.5.3.1.10: a 552 to RCPT ("too much mail") is to be taken as 452.
        permanent = 500 <= code < 600 and not (stage == "RCPT" and code == 552)
        return cls(PERMANENT if permanent else TEMPORARY, detail)

    @classmethod
    def temporary(cls, detail: str) -> Outcome:
        return cls(TEMPORARY, detail[:DETAIL_MAX])


@dataclass(frozen=True)
class SmtpTransport:
    """Where and how to connect (SMTP_HOST, SMTP_PORT, SMTP_TLS, SMTP_USER/SMTP_PASSWORD)."""

    host: str
    port: int
    tls: SmtpTls
    user: str | None
    password: str | None
    timeout: float
    ca_file: Path | None
    local_hostname: str

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpTransport:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            tls=settings.smtp_tls,
            user=settings.smtp_user,
            password=settings.smtp_password,
            timeout=settings.smtp_timeout,
            ca_file=settings.smtp_ca_file,
            # A fixed EHLO name: smtplib's default asks DNS for our FQDN, which can stall.
            local_hostname=settings.mail_from_address.rpartition("@")[2] or "localhost",
        )

    def connect(self) -> smtplib.SMTP:
        """An open, greeted, (if configured) encrypted and authenticated connection."""
        if self.tls is SmtpTls.TLS:
            conn: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout,
                local_hostname=self.local_hostname, context=self._tls_context(),
            )
        else:
            conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout,
                                local_hostname=self.local_hostname)
        try:
            conn.ehlo()
            if self.tls is SmtpTls.STARTTLS:
                conn.starttls(context=self._tls_context())
                conn.ehlo()
            if self.user is not None:
                conn.login(self.user, self.password or "")
        except BaseException:
            _close_quietly(conn)
            raise
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        # Certificates are always verified; SMTP_CA_FILE replaces the system's trust store
        # (a private relay, or the test sink's self-signed certificate).
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)


class SmtpSession:
    """Sends messages over one lazily opened connection; use as a context manager."""

    def __init__(self, transport: SmtpTransport) -> None:
        self.transport = transport
        self._conn: smtplib.SMTP | None = None

    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, message: EmailMessage, sender: str, recipient: str) -> Outcome:
        """Offer one message for one recipient and report the server's verdict."""
        try:
            conn = self._connection()
        except smtplib.SMTPAuthenticationError as exc:
            log.error("SMTP login refused (%s): check SMTP_USER and SMTP_PASSWORD", exc.smtp_code)
            return Outcome.temporary(f"login refused: {exc.smtp_code} {_text(exc.smtp_error)}")
        except (smtplib.SMTPException, OSError) as exc:
            return Outcome.temporary(f"connecting to {self._where()}: {_describe(exc)}")
        try:
            conn.send_message(message, from_addr=sender, to_addrs=[recipient])
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients.get(recipient, (451, b"recipient refused"))
            return Outcome.from_reply(code, text, "RCPT")
        except smtplib.SMTPSenderRefused as exc:
            return Outcome.from_reply(exc.smtp_code, exc.smtp_error, "MAIL")
        except smtplib.SMTPDataError as exc:
            return Outcome.from_reply(exc.smtp_code, exc.smtp_error, "DATA")
        except (smtplib.SMTPException, OSError) as exc:
            # The connection broke mid-conversation: whatever was said is unknown.
            self._drop()
            return Outcome.temporary(f"sending to {self._where()}: {_describe(exc)}")
        except Exception as exc:
            # Anything else (say, an address the server cannot take without SMTPUTF8)
            # leaves the conversation in an unknown state too; the mail waits and retries.
            log.exception("unexpected error while sending through %s", self._where())
            self._drop()
            return Outcome.temporary(f"sending to {self._where()}: {_describe(exc)}")
        return Outcome(ACCEPTED, "accepted")

    def close(self) -> None:
        """Say QUIT and forget the connection (a server that already hung up is fine)."""
        if self._conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._conn.quit()
            _close_quietly(self._conn)
            self._conn = None

    def _connection(self) -> smtplib.SMTP:
        if self._conn is None:
            self._conn = self.transport.connect()
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            _close_quietly(self._conn)
            self._conn = None

    def _where(self) -> str:
        return f"{self.transport.host}:{self.transport.port}"


def _close_quietly(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        conn.close()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
