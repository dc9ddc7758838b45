"""Talking SMTP: one connection per batch, every failure sorted into temporary or permanent.

Only the server's verdict on a message (its reply to MAIL, RCPT or DATA) can fail a mail
for good, and only with a 5xx code. Everything else is temporary and retried: 4xx replies,
refused or dropped connections, timeouts, TLS trouble, and even a refused login or an
unsupported STARTTLS, which are our configuration's fault, not the mail's, and must not
turn into lost mail while an operator fixes them.

A permanent failure is a *bounce* only when the recipient's side refused the address: a
5xx to RCPT, or a 5xx to DATA whose enhanced status names the mailbox (5.1.x, 5.2.x).
Any other 5xx (to MAIL, or a policy refusal of our message) is a *refusal* of what we
sent, which an operator can fix: a reminder that was refused has not reached its owner.

One attempt never outlives its `deadline`: every socket operation is bounded by
SMTP_TIMEOUT, and a watchdog shuts the connection down when the attempt as a whole
(however many replies a slow server drips out) reaches the deadline, so that the
sender's claim on the mail always outlives the conversation it covers.

The connection is opened on the first mail of a batch and reused for the next ones; a
connection error fails only the mail it touched and drops the connection, so the next
mail of the batch opens a new one.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.delivery.message import OutgoingMail
from shared.config import Settings, SmtpTls

log = logging.getLogger(__name__)

ACCEPTED, TEMPORARY, PERMANENT = "accepted", "temporary", "permanent"
DETAIL_MAX = 500
# RFC 3463 enhanced status codes about the addressee or its mailbox.
_MAILBOX_STATUS = re.compile(r"^5\.[12]\.\d{1,3}\b")


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: `accepted`, `temporary` (retry later) or `permanent` (give up).

    A permanent outcome is a `bounced` one when the recipient's side refused the address.
    """

    result: str
    detail: str = ""
    bounced: bool = False

    @classmethod
    def from_reply(cls, code: int, text: bytes | str, stage: str) -> Outcome:
        """Sort an SMTP reply: 5xx is permanent, anything else temporary."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        detail = f"{stage}: {code} {text}".strip()[:DETAIL_MAX]
        # RFC 5321 4.5.3.1.10: a 552 to RCPT ("too much mail") is to be taken as 452.
        permanent = 500 <= code < 600 and not (stage == "RCPT" and code == 552)
        if not permanent:
            return cls(TEMPORARY, detail)
        bounced = stage == "RCPT" or (stage == "DATA" and bool(_MAILBOX_STATUS.match(text)))
        return cls(PERMANENT, detail, bounced=bounced)

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

    def connect(self, opening: Callable[[smtplib.SMTP], None] = lambda conn: None
                ) -> smtplib.SMTP:
        """An open, greeted, (if configured) encrypted and authenticated connection.

        `opening` sees the connection once the server's greeting is in (connecting and
        the greeting are bounded by SMTP_TIMEOUT), before EHLO, STARTTLS and the login,
        so that a watchdog can cut those short too.
        """
        if self.tls is SmtpTls.TLS:
            conn: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout,
                local_hostname=self.local_hostname, context=self._tls_context(),
            )
        else:
            conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout,
                                local_hostname=self.local_hostname)
        try:
            opening(conn)
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
        # The connection being talked to, from before its greeting: what the watchdog cuts.
        self._talking: smtplib.SMTP | None = None
        self._aborted = threading.Event()

    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, message: OutgoingMail, sender: str, recipient: str,
             deadline: float | None = None) -> Outcome:
        """Offer one message for one recipient and report the server's verdict.

        `deadline` (a `time.monotonic()` value) bounds the whole attempt, connecting
        included: past it, the connection is shut down and the outcome is temporary.
        """
        if deadline is None:
            return self._send(message, sender, recipient)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Outcome.temporary("no time left for this attempt")
        self._aborted.clear()
        watchdog = threading.Timer(remaining, self._abort)
        watchdog.daemon = True
        watchdog.start()
        try:
            outcome = self._send(message, sender, recipient)
        finally:
            watchdog.cancel()
        if self._aborted.is_set():
            self._drop()
            if outcome.result == ACCEPTED:
                return outcome  # the server's yes came in before the cut
            return Outcome.temporary(f"sending to {self._where()}: the attempt ran past its "
                                     "deadline and was cut off")
        return outcome

    def _abort(self) -> None:
        """The watchdog: wake whatever the conversation is blocked on, by ending it."""
        self._aborted.set()
        sock = getattr(self._talking, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _send(self, message: OutgoingMail, sender: str, recipient: str) -> Outcome:
        try:
            conn = self._connection()
        except smtplib.SMTPAuthenticationError as exc:
            log.error("SMTP login refused (%s): check SMTP_USER and SMTP_PASSWORD", exc.smtp_code)
            return Outcome.temporary(f"login refused: {exc.smtp_code} {_text(exc.smtp_error)}")
        except (smtplib.SMTPException, OSError) as exc:
            return Outcome.temporary(f"connecting to {self._where()}: {_describe(exc)}")
        options = []
        if message.smtputf8:
            if not conn.has_extn("smtputf8"):
                return Outcome.temporary(f"{self._where()} does not take SMTPUTF8, which "
                                         "an address outside ASCII needs")
            options = ["SMTPUTF8", "BODY=8BITMIME"]
        try:
            conn.sendmail(sender, [recipient], message.data, mail_options=options)
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
            self._conn = self.transport.connect(opening=self._opening)
        return self._conn

    def _opening(self, conn: smtplib.SMTP) -> None:
        self._talking = conn
        if self._aborted.is_set():
            self._abort()  # the deadline passed while the server was greeting us

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
