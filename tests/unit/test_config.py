"""Configuration: validated at start-up, one clear line per problem."""

import stat

import pytest

from shared.config import ConfigError, Mode, load_settings


def test_it_names_every_malformed_value_at_once():
    with pytest.raises(ConfigError) as refused:
        load_settings({"AMQP_URI": "http://broker", "SMTP_PORT": "lots", "JICM_PUBLIC_URL": "x"})
    problems = "\n".join(refused.value.problems)
    assert "AMQP_URI" in problems
    assert "SMTP_PORT" in problems
    assert "JICM_PUBLIC_URL" in problems


def test_production_refuses_to_start_without_its_secrets():
    with pytest.raises(ConfigError) as refused:
        load_settings({}, require=("JICM_SECRET_KEY",))
    assert refused.value.problems == ["JICM_SECRET_KEY: missing (required by this process)"]


def test_a_short_secret_key_is_refused():
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load_settings({"JICM_SECRET_KEY": "c2hvcnQ="})


def test_mongodb_srv_uris_are_refused_because_they_break_under_eventlet():
    with pytest.raises(ConfigError, match="mongodb\\+srv"):
        load_settings({"MONGO_URI": "mongodb+srv://cluster.example.org/db"})


def test_the_test_password_cost_is_refused_in_production():
    with pytest.raises(ConfigError, match="tests only"):
        load_settings({"JICM_PASSWORD_HASH": "min"})


def test_local_mode_generates_secrets_once_and_every_process_reads_the_same(tmp_path):
    env = {"JICM_ENV": "local", "JICM_DATA_DIR": str(tmp_path / "data")}
    first = load_settings(env, require=("JICM_SECRET_KEY", "JICM_VAULT_KEK"))
    second = load_settings(env)
    assert first.env is Mode.LOCAL
    assert first.secret_key == second.secret_key
    assert len(first.secret_key_bytes) == 32
    secrets_file = tmp_path / "secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600


def test_local_mode_keeps_a_secret_given_in_the_environment(tmp_path):
    given = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="
    settings = load_settings(
        {"JICM_ENV": "local", "JICM_DATA_DIR": str(tmp_path / "d"), "JICM_SECRET_KEY": given}
    )
    assert settings.secret_key == given


def test_unrelated_environment_variables_are_ignored():
    settings = load_settings({"HOME": "/root", "PATH": "/bin", "JICM_SERVICES": "accounts, vault"})
    assert settings.service_names == ["accounts", "vault"]


def test_production_sends_the_stripe_key_only_over_https():
    with pytest.raises(ConfigError, match="STRIPE_API_BASE must be https"):
        load_settings({"STRIPE_API_BASE": "http://stripe.internal"})
    assert load_settings({}).stripe_api_base == "https://api.stripe.com"


def test_billing_cannot_start_in_production_without_stripe_keys_and_prices():
    with pytest.raises(ConfigError) as refused:
        load_settings({}, require=("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET",
                                   "STRIPE_PRICE_MONTHLY", "STRIPE_PRICE_YEARLY"))
    assert len(refused.value.problems) == 4


def test_local_mode_invents_a_webhook_signing_secret(tmp_path):
    settings = load_settings({"JICM_ENV": "local", "JICM_DATA_DIR": str(tmp_path / "data")})
    assert settings.stripe_webhook_secret.startswith("whsec_")
