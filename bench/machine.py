"""Facts about the machine and the code a run measured, so figures can be compared fairly."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.broker import rabbitmq_version

REPO_ROOT = Path(__file__).resolve().parents[1]
# Versions of the libraries whose speed the figures depend on.
PACKAGES = ("nameko", "eventlet", "pika", "kombu", "gunicorn", "flask", "pynacl", "mongomock")


def machine_facts() -> dict[str, Any]:
    """CPU, Python, SQLite, RabbitMQ and library versions, and the git commit."""
    return {
        "cpu_count": os.cpu_count(),
        # Containers often grant fewer CPUs than the host has; this is what we may use.
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": _load_average(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "sqlite_version": sqlite3.sqlite_version,
        "rabbitmq_version": rabbitmq_version(),
        "packages": _package_versions(),
        "git": _git(),
        "executable": sys.executable,
    }


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git() -> dict[str, Any]:
    commit = _git_output("rev-parse", "HEAD")
    status = _git_output("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "branch": _git_output("rev-parse", "--abbrev-ref", "HEAD"),
        # Uncommitted changes to tracked files mean the commit alone does not say what ran.
        "dirty": bool(status) if status is not None else None,
    }


def _git_output(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()
