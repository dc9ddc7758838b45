"""The development SMTP sink: a real SMTP server on loopback that keeps every mail as a file.

`python -m deploy.local.smtp_sink --host 127.0.0.1 --port 1025 --maildir var/mail` accepts mail
(aiosmtpd) and stores each message, once per message whatever the number of recipients, as
`<maildir>/<utc yyyymmddThhmmss.ffffff>-<seq>-<uuid8>.eml`: the message exactly as received,
preceded by `X-Sink-*` headers carrying what only the SMTP conversation knows (envelope sender
and recipients, TLS mode, authenticated user). Files are written under a temporary name and
renamed, so a reader never sees half a message, and sorting the names gives arrival order.

Faults can be injected for tests of the delivery service: temporary failures for the first N
messages (`--tempfail-first`), per-recipient permanent or temporary refusals
(`--reject-recipient`, `--tempfail-recipient`), refusing every connection with 421
(`--refuse-all-temporarily`), a slow DATA phase (`--slow-data SECONDS`: the sink waits before
storing, and a client that hangs up meanwhile stores nothing, so a test can kill a sender
mid-conversation), and a `--control` JSON file re-read on every connection and command,
so a running test can switch modes without restarting the sink:
`{"tempfail": true}` answers 451 to MAIL, RCPT and DATA; `{"refuse": true}` answers 421 on connect.

`--auth-user/--auth-password` require AUTH (PLAIN or LOGIN, allowed without TLS because this only
ever listens on loopback); `--tls-cert/--tls-key` offer STARTTLS, and with `--implicit-tls` the
whole connection is TLS instead (SMTPS).

Readers: `read_mail(maildir)` and `wait_for_mail(maildir, count, timeout)` return the stored mail
as `email.message.EmailMessage` objects, oldest first; `envelope_of(message)` gives the envelope.
"""

from __future__ import annotations

import argparse
import asyncio
import email.policy
import itertools
import json
import logging
import os
import re
import signal
import ssl
import sys
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger("smtp-sink")

TEMPFAIL = "451 4.3.0 try again later"
REJECT = "550 5.1.1 mailbox unavailable"
REFUSE = b"421 4.3.2 service not available, try again later\r\n"
OK = "250 OK"

HEADER_FROM = "X-Sink-Envelope-From"
HEADER_TO = "X-Sink-Envelope-To"
HEADER_TLS = "X-Sink-TLS"
HEADER_AUTH = "X-Sink-Auth-User"

MAIL_SUFFIX = ".eml"
POLL_INTERVAL = 0.05


# --- configuration -------------------------------------------------------------------------


@dataclass
class SinkOptions:
    """Everything the command line can say; defaults give a plain, always-accepting sink."""

    host: str = "127.0.0.1"
    port: int = 1025
    maildir: Path = Path("var/mail")
    tempfail_first: int = 0
    reject_recipients: list[re.Pattern[str]] = field(default_factory=list)
    tempfail_recipients: list[re.Pattern[str]] = field(default_factory=list)
    refuse_all: bool = False
    control: Path | None = None
    auth_user: str | None = None
    auth_password: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    implicit_tls: bool = False
    slow_data: float = 0.0


def _pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"bad regular expression {text!r}: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m deploy.local.smtp_sink`."""
    p = argparse.ArgumentParser(
        prog="python -m deploy.local.smtp_sink",
        description="Development SMTP sink: stores every accepted message as an .eml file.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1025, help="0 picks a free port (printed)")
    p.add_argument("--maildir", type=Path, default=Path("var/mail"))
    faults = p.add_argument_group("fault injection")
    faults.add_argument(
        "--tempfail-first",
        type=int,
        default=0,
        metavar="N",
        help="answer the first N DATA commands with 451, then accept",
    )
    faults.add_argument(
        "--reject-recipient",
        action="append",
        type=_pattern,
        default=[],
        metavar="REGEX",
        help="550 for recipients matching REGEX (re.search, case-insensitive; repeatable)",
    )
    faults.add_argument(
        "--tempfail-recipient",
        action="append",
        type=_pattern,
        default=[],
        metavar="REGEX",
        help="451 for recipients matching REGEX, always (repeatable)",
    )
    faults.add_argument(
        "--refuse-all-temporarily",
        action="store_true",
        help="answer every connection with 421 and close it",
    )
    faults.add_argument(
        "--slow-data",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait SECONDS after a message's data arrived before storing it and answering; "
        "a client that hangs up meanwhile stores nothing",
    )
    faults.add_argument(
        "--control",
        type=Path,
        metavar="FILE",
        help='JSON file re-read on every command: {"tempfail": true} or {"refuse": true}',
    )
    sec = p.add_argument_group("authentication and TLS")
    sec.add_argument("--auth-user", help="require AUTH PLAIN/LOGIN with this user")
    sec.add_argument("--auth-password", help="the password for --auth-user")
    sec.add_argument("--tls-cert", type=Path, help="PEM certificate; offers STARTTLS")
    sec.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    sec.add_argument(
        "--implicit-tls",
        action="store_true",
        help="TLS from the first byte (SMTPS) instead of STARTTLS",
    )
    return p


def parse_options(argv: Sequence[str] | None = None) -> SinkOptions:
    """Parse and cross-check the command line."""
    parser = build_parser()
    a = parser.parse_args(argv)
    if (a.auth_user is None) != (a.auth_password is None):
        parser.error("--auth-user and --auth-password go together")
    if (a.tls_cert is None) != (a.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if a.implicit_tls and a.tls_cert is None:
        parser.error("--implicit-tls needs --tls-cert and --tls-key")
    if a.tempfail_first < 0:
        parser.error("--tempfail-first must not be negative")
    if a.slow_data < 0:
        parser.error("--slow-data must not be negative")
    return SinkOptions(
        host=a.host,
        port=a.port,
        maildir=a.maildir,
        tempfail_first=a.tempfail_first,
        reject_recipients=a.reject_recipient,
        tempfail_recipients=a.tempfail_recipient,
        refuse_all=a.refuse_all_temporarily,
        control=a.control,
        auth_user=a.auth_user,
        auth_password=a.auth_password,
        tls_cert=a.tls_cert,
        tls_key=a.tls_key,
        implicit_tls=a.implicit_tls,
        slow_data=a.slow_data,
    )


# --- runtime control file ------------------------------------------------------------------


class ControlFile:
    """The `--control` JSON file, re-read every time it is asked (it is tiny).

    A file that cannot be parsed (a test caught writing it) keeps the last good settings, so a
    half-written file never flips the mode by accident. A missing file means normal operation.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self._last: dict[str, Any] = {}

    def settings(self) -> dict[str, Any]:
        """The current settings; `{}` when there is no control file."""
        if self.path is None:
            return {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._last = {}
            return self._last
        except OSError as exc:
            log.warning("cannot read control file %s: %s", self.path, exc)
            return self._last
        return self._parse(text)

    def _parse(self, text: str) -> dict[str, Any]:
        if not text.strip():
            self._last = {}
            return self._last
        try:
            value = json.loads(text)
        except ValueError:
            log.warning("control file %s is not JSON yet; keeping %r", self.path, self._last)
            return self._last
        self._last = value if isinstance(value, dict) else {}
        return self._last

    def tempfail(self) -> bool:
        """True while the file says every transaction is to fail temporarily."""
        return bool(self.settings().get("tempfail"))

    def refuse(self) -> bool:
        """True while the file says every connection is to be refused with 421."""
        return bool(self.settings().get("refuse"))


# --- storage -------------------------------------------------------------------------------


class Maildir:
    """One `.eml` file per message, written atomically, named in arrival order."""

    def __init__(self, path: Path):
        self.path = path
        self._seq = itertools.count(1)
        path.mkdir(parents=True, exist_ok=True)

    def next_name(self) -> str:
        """`<utc timestamp>-<seq>-<uuid8>.eml`: sorts by arrival, never collides."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
        return f"{stamp}-{next(self._seq):06d}-{uuid.uuid4().hex[:8]}{MAIL_SUFFIX}"

    def store(self, data: bytes) -> Path:
        """Write `data` under a hidden temporary name, fsync, then rename into place."""
        name = self.next_name()
        final = self.path / name
        tmp = self.path / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        return final


def _sink_headers(mail_from: str, rcpt_tos: Sequence[str], tls: str, user: str | None) -> bytes:
    lines = [
        f"{HEADER_FROM}: {mail_from or '<>'}",
        f"{HEADER_TO}: {', '.join(rcpt_tos)}",
        f"{HEADER_TLS}: {tls}",
    ]
    if user:
        lines.append(f"{HEADER_AUTH}: {user}")
    return "".join(line + "\r\n" for line in lines).encode("utf-8")


# --- SMTP behaviour ------------------------------------------------------------------------


class SinkHandler:
    """aiosmtpd handler hooks: fault injection on MAIL/RCPT/DATA, storage on DATA."""

    def __init__(self, options: SinkOptions, maildir: Maildir, control: ControlFile):
        self.options = options
        self.maildir = maildir
        self.control = control
        self._tempfails_left = options.tempfail_first

    async def handle_MAIL(  # noqa: N802 (aiosmtpd's hook name)
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        """Refuse the transaction while the control file says tempfail."""
        if self.control.tempfail():
            return TEMPFAIL
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return OK

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        """Apply the per-recipient faults, then accept."""
        verdict = self._recipient_verdict(address)
        if verdict is not None:
            return verdict
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return OK

    def _recipient_verdict(self, address: str) -> str | None:
        if self.control.tempfail():
            return TEMPFAIL
        if any(p.search(address) for p in self.options.reject_recipients):
            return REJECT
        if any(p.search(address) for p in self.options.tempfail_recipients):
            return TEMPFAIL
        return None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        """Store the message unless a temporary failure is due."""
        if self.control.tempfail():
            return TEMPFAIL
        if self._tempfails_left > 0:
            self._tempfails_left -= 1
            return TEMPFAIL
        if self.options.slow_data:
            # aiosmtpd cancels this coroutine if the client hangs up meanwhile: like a server
            # that had not committed the message yet, the sink then stores nothing.
            await asyncio.sleep(self.options.slow_data)
        header = _sink_headers(
            envelope.mail_from,
            envelope.rcpt_tos,
            self._tls_mode(server, session),
            _auth_user(session),
        )
        # In a thread: the sync to disk must not hold up the other conversations, as it
        # would not on a real server.
        path = await asyncio.to_thread(self.maildir.store, header + envelope.original_content)
        log.info(
            "stored %s from %s to %s", path.name, envelope.mail_from, ", ".join(envelope.rcpt_tos)
        )
        return "250 2.0.0 OK stored as " + path.name

    def _tls_mode(self, server: Any, session: Any) -> str:
        # Names match the delivery service's SMTP_TLS values, so a test can compare them.
        if self.options.implicit_tls:
            return "tls"
        return "starttls" if session.ssl is not None else "none"


def _auth_user(session: Any) -> str | None:
    if not session.authenticated:
        return None
    login = getattr(session.auth_data, "login", None)
    return login.decode("utf-8", "replace") if isinstance(login, bytes) else login


def make_authenticator(user: str, password: str) -> Any:
    """An aiosmtpd authenticator accepting exactly one user and password."""
    from aiosmtpd.smtp import AuthResult, LoginPassword

    expected = (user.encode("utf-8"), password.encode("utf-8"))

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = (
            mechanism in ("PLAIN", "LOGIN")
            and isinstance(data, LoginPassword)
            and (data.login, data.password) == expected
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    return authenticate


class _Refuser(asyncio.Protocol):
    """What a connection gets while the sink refuses everything: 421 and goodbye."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(REFUSE)  # type: ignore[attr-defined]
        transport.close()


def _tls_context(options: SinkOptions) -> ssl.SSLContext | None:
    if options.tls_cert is None or options.tls_key is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(options.tls_cert), str(options.tls_key))
    return ctx


def protocol_factory(
    options: SinkOptions, handler: SinkHandler, control: ControlFile, tls: ssl.SSLContext | None
) -> Any:
    """A factory giving each connection an aiosmtpd `SMTP` protocol (or a 421 when refusing)."""
    from aiosmtpd.smtp import SMTP

    auth = options.auth_user is not None
    authenticator = (
        make_authenticator(options.auth_user, options.auth_password or "")
        if options.auth_user is not None
        else None
    )

    def factory() -> asyncio.Protocol:
        if options.refuse_all or control.refuse():
            return _Refuser()
        return SMTP(
            handler,
            hostname="smtp-sink",  # a fixed name: getfqdn() can stall on DNS
            enable_SMTPUTF8=True,
            # STARTTLS is offered on a plain listener; with implicit TLS the socket already is.
            tls_context=None if options.implicit_tls else tls,
            authenticator=authenticator,
            auth_required=auth,
            # Loopback only: plaintext AUTH lets tests cover the credentials path without TLS.
            auth_require_tls=False,
        )

    return factory


# --- running -------------------------------------------------------------------------------


async def serve(options: SinkOptions) -> None:
    """Run the sink until SIGTERM or SIGINT."""
    maildir = Maildir(options.maildir)
    control = ControlFile(options.control)
    handler = SinkHandler(options, maildir, control)
    tls = _tls_context(options)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        protocol_factory(options, handler, control, tls),
        host=options.host,
        port=options.port,
        ssl=tls if options.implicit_tls else None,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = server.sockets[0].getsockname()[1]
    # Printed only now that the socket is bound: supervisors and tests wait for this line.
    print(f"smtp-sink listening on {options.host}:{port}, mail in {options.maildir}", flush=True)
    await stop.wait()
    log.info("stopping")
    server.close()
    await server.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m deploy.local.smtp_sink`."""
    options = parse_options(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s"
    )
    # aiosmtpd narrates every command at INFO; its warnings are all we want to see.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    # aiosmtpd warns that AUTH without TLS is unsafe: intended here (loopback, tests).
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    try:
        asyncio.run(serve(options))
    except OSError as exc:
        # Port taken, address not local, maildir not writable: one line, no traceback.
        print(f"smtp-sink: cannot start on {options.host}:{options.port}: {exc}", file=sys.stderr)
        return 1
    return 0


# --- reading the mail ----------------------------------------------------------------------


class Envelope(NamedTuple):
    """The SMTP envelope of a stored message."""

    mail_from: str
    rcpt_tos: list[str]


def mail_files(maildir: Path) -> list[Path]:
    """The stored `.eml` files, oldest first (temporary files are never listed)."""
    maildir = Path(maildir)
    if not maildir.is_dir():
        return []
    return sorted(maildir.glob("*" + MAIL_SUFFIX))


def read_message(path: Path) -> EmailMessage:
    """Parse one stored file."""
    with open(path, "rb") as fh:
        msg = BytesParser(policy=email.policy.default).parse(fh)
    assert isinstance(msg, EmailMessage)
    return msg


def read_mail(maildir: Path) -> list[EmailMessage]:
    """Every stored message, in arrival order."""
    return [read_message(p) for p in mail_files(maildir)]


def wait_for_mail(maildir: Path, count: int = 1, timeout: float = 10.0) -> list[EmailMessage]:
    """Poll until at least `count` messages are stored, then return all of them.

    Raises `TimeoutError` (saying how many arrived) when the deadline passes first.
    """
    deadline = time.monotonic() + timeout
    while True:
        files = mail_files(maildir)
        if len(files) >= count:
            return [read_message(p) for p in files]
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"expected {count} mail(s) in {maildir} within {timeout} s, found {len(files)}"
            )
        time.sleep(POLL_INTERVAL)


def envelope_of(message: EmailMessage) -> Envelope:
    """The envelope the sink recorded in its `X-Sink-Envelope-*` headers."""
    mail_from = str(message.get(HEADER_FROM, ""))
    to = str(message.get(HEADER_TO, ""))
    return Envelope(
        mail_from="" if mail_from == "<>" else mail_from,
        rcpt_tos=[a.strip() for a in to.split(",") if a.strip()],
    )


if __name__ == "__main__":
    sys.exit(main())
