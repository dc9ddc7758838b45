"""A real SMTP server for tests that send mail: the dev sink in a subprocess, on a free port.

`start_sink(directory, *options)` starts `python -m deploy.local.smtp_sink` with a maildir and
a control file under `directory` and the given fault options (`--tempfail-first 1`,
`--reject-recipient REGEX`, `--slow-data 0.5`...); the returned `Sink` reads what arrived and
switches modes at runtime (`sink.control({"refuse": True})`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from deploy.local.smtp_sink import read_mail, wait_for_mail
from tests.local.helpers import Output

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Sink:
    proc: subprocess.Popen[str]
    output: Output
    port: int
    maildir: Path
    control_file: Path

    def mail(self) -> list[EmailMessage]:
        return read_mail(self.maildir)

    def wait_for_mail(self, count: int = 1, timeout: float = 30.0) -> list[EmailMessage]:
        return wait_for_mail(self.maildir, count=count, timeout=timeout)

    def control(self, mode: dict) -> None:
        """Switch the running sink's mode (written aside and renamed: never half-read)."""
        tmp = self.control_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(mode))
        tmp.replace(self.control_file)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)


def start_sink(directory: Path, *options: str) -> Sink:
    """Start a sink with `options`; it listens on 127.0.0.1 on a port of its choosing."""
    directory.mkdir(parents=True, exist_ok=True)
    maildir, control = directory / "mail", directory / "control.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.local.smtp_sink", "--host", "127.0.0.1", "--port", "0",
         "--maildir", str(maildir), "--control", str(control), *options],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = Output(proc)
    ready = output.wait_for(r"^smtp-sink listening on 127\.0\.0\.1:(\d+)", timeout=20)
    return Sink(proc, output, int(ready[1]), maildir, control)
