"""The dev SMTP sink, run as a real server in a subprocess and spoken to with smtplib."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest

from deploy.local.smtp_sink import envelope_of, mail_files, read_mail, wait_for_mail
from tests.local.helpers import Output

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
SENDER = "switch@jic.example"
NAME_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}-\d{6}-[0-9a-f]{8}\.eml$")


@dataclass
class Sink:
    proc: subprocess.Popen[str]
    output: Output
    port: int
    maildir: Path


StartSink = Callable[..., Sink]


@pytest.fixture
def start_sink(tmp_path: Path) -> Iterator[StartSink]:
    """Start `python -m deploy.local.smtp_sink --port 0 ...`; stopped after the test."""
    started: list[Sink] = []

    def start(*args: str) -> Sink:
        maildir = tmp_path / f"mail{len(started)}"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "deploy.local.smtp_sink",
                "--host",
                HOST,
                "--port",
                "0",
                "--maildir",
                str(maildir),
                *args,
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        output = Output(proc)
        ready = output.wait_for(r"^smtp-sink listening on 127\.0\.0\.1:(\d+), mail in (.+)$")
        assert ready[2] == str(maildir)
        sink = Sink(proc, output, int(ready[1]), maildir)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        if sink.proc.poll() is None:
            sink.proc.terminate()
        sink.proc.wait(timeout=10)


def message(
    subject: str = "Grüße ☃ from the switch", body: str = "Héllo wörld ✓\n"
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = "alice@example.org"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def send(sink: Sink, msg: EmailMessage, to: list[str] | None = None) -> dict:
    with smtplib.SMTP(HOST, sink.port, timeout=10) as smtp:
        return smtp.send_message(msg, from_addr=SENDER, to_addrs=to or ["alice@example.org"])


def test_stores_one_file_per_message_with_envelope_headers_and_body(start_sink: StartSink):
    sink = start_sink()
    msg = message()
    msg["X-Custom"] = "kept as sent"

    refused = send(sink, msg, to=["alice@example.org", "bob@example.org"])

    assert refused == {}
    files = mail_files(sink.maildir)
    assert len(files) == 1, "one file per message, not per recipient"
    assert NAME_RE.match(files[0].name), files[0].name
    assert sorted(p.name for p in sink.maildir.iterdir()) == [files[0].name], "no temp file left"
    [stored] = read_mail(sink.maildir)
    assert envelope_of(stored).mail_from == SENDER
    assert envelope_of(stored).rcpt_tos == ["alice@example.org", "bob@example.org"]
    assert stored["X-Sink-TLS"] == "none"
    assert stored["Subject"] == "Grüße ☃ from the switch"
    assert stored["X-Custom"] == "kept as sent"
    assert stored.get_content() == "Héllo wörld ✓\n"


def test_file_names_sort_in_arrival_order(start_sink: StartSink):
    sink = start_sink()
    subjects = [f"message {i}" for i in range(5)]
    with smtplib.SMTP(HOST, sink.port, timeout=10) as smtp:
        for subject in subjects:
            smtp.send_message(message(subject=subject))

    assert [m["Subject"] for m in wait_for_mail(sink.maildir, 5, timeout=5)] == subjects


def test_tempfail_first_refuses_the_first_data_then_accepts(start_sink: StartSink):
    sink = start_sink("--tempfail-first", "1")

    with pytest.raises(smtplib.SMTPDataError) as failed:
        send(sink, message(subject="first try"))
    assert failed.value.smtp_code == 451
    assert mail_files(sink.maildir) == []

    send(sink, message(subject="second try"))
    assert [m["Subject"] for m in read_mail(sink.maildir)] == ["second try"]


def test_reject_recipient_answers_550_for_matching_addresses_only(start_sink: StartSink):
    sink = start_sink("--reject-recipient", r"^gone@", "--reject-recipient", "nobody")

    refused = send(sink, message(), to=["gone@example.org", "alice@example.org"])
    assert refused["gone@example.org"][0] == 550
    assert envelope_of(read_mail(sink.maildir)[0]).rcpt_tos == ["alice@example.org"]

    with pytest.raises(smtplib.SMTPRecipientsRefused) as failed:
        send(sink, message(), to=["nobody@example.org"])
    assert failed.value.recipients["nobody@example.org"][0] == 550
    assert len(mail_files(sink.maildir)) == 1


def test_tempfail_recipient_answers_451_every_time(start_sink: StartSink):
    sink = start_sink("--tempfail-recipient", "busy@")

    for _ in range(2):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as failed:
            send(sink, message(), to=["busy@example.org"])
        assert failed.value.recipients["busy@example.org"][0] == 451
    assert mail_files(sink.maildir) == []


def test_control_file_switches_modes_at_runtime(start_sink: StartSink, tmp_path: Path):
    control = tmp_path / "control.json"
    sink = start_sink("--control", str(control))

    def set_mode(mode: dict) -> None:
        tmp = control.with_suffix(".tmp")
        tmp.write_text(json.dumps(mode))
        tmp.replace(control)

    send(sink, message(subject="before"))
    set_mode({"tempfail": True})
    with pytest.raises(smtplib.SMTPSenderRefused) as failed:
        send(sink, message(subject="during"))
    assert failed.value.smtp_code == 451
    set_mode({"refuse": True})
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        send(sink, message(subject="refused"))
    assert refused.value.smtp_code == 421
    set_mode({"tempfail": False})
    send(sink, message(subject="after"))
    control.unlink()
    send(sink, message(subject="no file"))

    assert [m["Subject"] for m in read_mail(sink.maildir)] == ["before", "after", "no file"]


def test_refuse_all_temporarily_answers_421_on_connect(start_sink: StartSink):
    sink = start_sink("--refuse-all-temporarily")

    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP(HOST, sink.port, timeout=10)
    assert refused.value.smtp_code == 421


def test_slow_data_stores_nothing_for_a_client_that_hangs_up_before_the_answer(
    start_sink: StartSink,
):
    sink = start_sink("--slow-data", "1")
    with socket.create_connection((HOST, sink.port), timeout=10) as raw, \
            raw.makefile("rb") as replies:
        replies.readline()  # greeting
        for command in (b"HELO test", f"MAIL FROM:<{SENDER}>".encode(),
                        b"RCPT TO:<alice@example.org>", b"DATA"):
            raw.sendall(command + b"\r\n")
            replies.readline()
        raw.sendall(b"Subject: abandoned\r\n\r\nbody\r\n.\r\n")
    # Hung up before the answer. A patient client's message comes back only after the
    # abandoned one would have been stored.
    send(sink, message(subject="patient"))
    assert [m["Subject"] for m in read_mail(sink.maildir)] == ["patient"]


def test_auth_accepts_only_the_configured_credentials(start_sink: StartSink):
    sink = start_sink("--auth-user", "mailer", "--auth-password", "s3cret")

    with smtplib.SMTP(HOST, sink.port, timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
            smtp.login("mailer", "guess")
        assert wrong.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPSenderRefused) as anonymous:
            smtp.send_message(message(subject="anonymous"))
        assert anonymous.value.smtp_code == 530
    for mechanism in ("PLAIN", "LOGIN"):
        with smtplib.SMTP(HOST, sink.port, timeout=10) as smtp:
            smtp.ehlo()
            smtp.user, smtp.password = "mailer", "s3cret"
            smtp.auth(mechanism, getattr(smtp, f"auth_{mechanism.lower()}"))
            smtp.send_message(message(subject=mechanism))

    stored = read_mail(sink.maildir)
    assert [m["Subject"] for m in stored] == ["PLAIN", "LOGIN"]
    assert {m["X-Sink-Auth-User"] for m in stored} == {"mailer"}


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command-line tool."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command-line tool is not installed: cannot make a test cert")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            openssl,
            *["req", "-x509", "-nodes", "-days", "1", "-newkey", "ec"],
            *["-pkeyopt", "ec_paramgen_curve:prime256v1", "-subj", "/CN=127.0.0.1"],
            *["-addext", "subjectAltName=IP:127.0.0.1"],
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def client_context(cert: Path) -> ssl.SSLContext:
    """Trusts exactly the test certificate, so the test proves TLS really was negotiated."""
    return ssl.create_default_context(cafile=str(cert))


def test_starttls(start_sink: StartSink, cert: tuple[Path, Path]):
    sink = start_sink("--tls-cert", str(cert[0]), "--tls-key", str(cert[1]))

    with smtplib.SMTP(HOST, sink.port, timeout=10) as smtp:
        smtp.starttls(context=client_context(cert[0]))
        smtp.send_message(message(subject="over starttls"))

    [stored] = read_mail(sink.maildir)
    assert stored["Subject"] == "over starttls"
    assert stored["X-Sink-TLS"] == "starttls"


def test_implicit_tls(start_sink: StartSink, cert: tuple[Path, Path]):
    sink = start_sink("--tls-cert", str(cert[0]), "--tls-key", str(cert[1]), "--implicit-tls")

    with smtplib.SMTP_SSL(HOST, sink.port, timeout=10, context=client_context(cert[0])) as smtp:
        smtp.send_message(message(subject="over tls"))

    [stored] = read_mail(sink.maildir)
    assert stored["Subject"] == "over tls"
    assert stored["X-Sink-TLS"] == "tls"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_it_cleanly_and_frees_the_port(start_sink: StartSink, sig: signal.Signals):
    sink = start_sink()

    sink.proc.send_signal(sig)

    assert sink.proc.wait(timeout=10) == 0
    with socket.socket() as s:
        assert s.connect_ex((HOST, sink.port)) != 0, "nothing listens any more"
    assert "Traceback" not in sink.output.finish()


def test_readers_ignore_temporary_files_and_a_missing_maildir(tmp_path: Path):
    assert read_mail(tmp_path / "absent") == []
    (tmp_path / ".20260101T000000.000000-000001-abcdef01.eml.tmp").write_bytes(b"Subject: x\r\n")
    assert read_mail(tmp_path) == []
    with pytest.raises(TimeoutError, match="found 0"):
        wait_for_mail(tmp_path, 1, timeout=0.2)


def test_a_taken_port_is_reported_without_a_traceback(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "deploy.local.smtp_sink",
                "--port",
                str(port),
                "--maildir",
                str(tmp_path / "mail"),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert f"smtp-sink: cannot start on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_option_combination_is_refused():
    done = subprocess.run(
        [sys.executable, "-m", "deploy.local.smtp_sink", "--implicit-tls"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 2
    assert "--implicit-tls needs --tls-cert" in done.stderr
