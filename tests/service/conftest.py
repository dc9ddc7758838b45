"""Fixtures for service tests: real RabbitMQ (a fresh vhost per test), real storage."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config import SETTINGS_CONFIG_KEY, Settings, load_settings


@pytest.fixture
def settings(rabbit_config: dict[str, Any], tmp_path) -> Settings:
    return load_settings(
        {
            "JICM_ENV": "test",
            "AMQP_URI": rabbit_config["AMQP_URI"],
            "JICM_DATA_DIR": str(tmp_path / "var" / "data"),
            "JICM_PASSWORD_HASH": "min",
        }
    )


@pytest.fixture
def service_config(rabbit_config: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A nameko container config for the test's vhost and data directory."""
    return {**rabbit_config, SETTINGS_CONFIG_KEY: settings, "max_workers": 4}
