"""Without wrk the load generator says how to get it, instead of failing obscurely."""

from __future__ import annotations

import re

import pytest

from bench import load
from bench.load import LoadError, drive


def test_a_missing_wrk_names_the_script_that_installs_it(monkeypatch):
    monkeypatch.setattr(load.shutil, "which", lambda name: None)
    with pytest.raises(LoadError, match=re.escape("deploy/local/ensure_wrk.sh")):
        drive("checkins", "http://127.0.0.1:9/api/v1/checkins", connections=1, seconds=1)
