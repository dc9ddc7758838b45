"""How delivery talks to a real SMTP server (the dev sink on loopback): plain, STARTTLS,
implicit TLS, with credentials; and what a misconfiguration does (it never loses mail)."""

from __future__ import annotations

import email
import email.policy
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deploy.local.smtp_sink import HEADER_TO, mail_files
from services.delivery.message import OutgoingMail, build_message
from services.delivery.render import RenderedMail
from services.delivery.smtp import ACCEPTED, TEMPORARY, SmtpSession, SmtpTransport
from shared.config import load_settings
from tests.sink import start_sink


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl command-line tool)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command-line tool is not installed: cannot make a test cert")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-nodes", "-days", "1", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def sink(tmp_path):
    started = []

    def start(*options: str):
        s = start_sink(tmp_path / f"sink{len(started)}", *options)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def transport(tmp_path: Path, port: int, **env: str) -> SmtpTransport:
    settings = load_settings({"JICM_ENV": "test", "JICM_DATA_DIR": str(tmp_path / "data"),
                              "SMTP_PORT": str(port), "SMTP_TIMEOUT": "5", **env})
    return SmtpTransport.from_settings(settings)


def message(to: str = "bob@example.org") -> OutgoingMail:
    return build_message(record_id="r1", mail_from="no-reply@jic.example",
                         mail_from_address="no-reply@jic.example", to=to, to_name=None,
                         rendered=RenderedMail(subject="Grüße", text="hello ✓\n",
                                               html="<p>hello ✓</p>\n"),
                         created_at=datetime.now(UTC))


def send(t: SmtpTransport):
    with SmtpSession(t) as smtp:
        return smtp.send(message(), "no-reply@jic.example", "bob@example.org")


@pytest.mark.parametrize("mode, options", [("starttls", ()), ("tls", ("--implicit-tls",))])
def test_mail_goes_out_encrypted_and_authenticated_when_configured(tmp_path, sink, cert, mode,
                                                                   options):
    s = sink("--tls-cert", str(cert[0]), "--tls-key", str(cert[1]), *options,
             "--auth-user", "mailer", "--auth-password", "s3cret")
    t = transport(tmp_path, s.port, SMTP_TLS=mode, SMTP_CA_FILE=str(cert[0]),
                  SMTP_USER="mailer", SMTP_PASSWORD="s3cret")
    assert send(t).result == ACCEPTED
    [mail] = s.wait_for_mail(1)
    assert mail["X-Sink-TLS"] == mode
    assert mail["X-Sink-Auth-User"] == "mailer"
    assert mail.get_body(("plain",)).get_content() == "hello ✓\n"


def test_a_mail_to_an_address_outside_ascii_goes_with_smtputf8_and_arrives_intact(tmp_path,
                                                                                  sink):
    s = sink()
    with SmtpSession(transport(tmp_path, s.port)) as smtp:
        outcome = smtp.send(message("zoë@exämple.org"), "no-reply@jic.example",
                            "zoë@exämple.org")
    assert outcome.result == ACCEPTED
    s.wait_for_mail(1)
    [path] = mail_files(s.maildir)
    # Raw UTF-8 in the headers (SMTPUTF8) is read as text, as RFC 6532 readers do.
    mail = email.message_from_string(path.read_bytes().decode(), policy=email.policy.default)
    assert mail[HEADER_TO] == "zoë@exämple.org", "the envelope's recipient"
    assert mail["To"].addresses[0].addr_spec == "zoë@exämple.org"
    assert mail.get_body(("plain",)).get_content().replace("\r\n", "\n") == "hello ✓\n"


def test_an_untrusted_certificate_is_refused_and_the_mail_waits(tmp_path, sink, cert):
    s = sink("--tls-cert", str(cert[0]), "--tls-key", str(cert[1]))
    outcome = send(transport(tmp_path, s.port, SMTP_TLS="starttls"))
    assert outcome.result == TEMPORARY
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.detail
    assert s.mail() == []


def test_wrong_credentials_keep_the_mail_waiting_rather_than_failing_it(tmp_path, sink):
    s = sink("--auth-user", "mailer", "--auth-password", "s3cret")
    outcome = send(transport(tmp_path, s.port, SMTP_USER="mailer", SMTP_PASSWORD="wrong"))
    assert outcome.result == TEMPORARY
    assert outcome.detail.startswith("login refused: 535")


def test_a_server_that_offers_no_starttls_is_not_spoken_to_in_clear(tmp_path, sink):
    s = sink()
    outcome = send(transport(tmp_path, s.port, SMTP_TLS="starttls"))
    assert outcome.result == TEMPORARY
    assert "STARTTLS" in outcome.detail
    assert s.mail() == []


def test_a_server_too_slow_to_answer_is_a_temporary_failure_and_keeps_nothing(tmp_path, sink):
    s = sink("--slow-data", "1.5")
    outcome = send(transport(tmp_path, s.port, SMTP_TIMEOUT="0.5"))
    assert outcome.result == TEMPORARY
    assert "timed out" in outcome.detail
    # A patient client's mail, sent after, is answered after the first one would have been
    # stored: by then the abandoned conversation has left nothing behind.
    assert send(transport(tmp_path, s.port, SMTP_TIMEOUT="5")).result == ACCEPTED
    assert len(s.mail()) == 1
