"""docker-compose.yml cannot run here (no Docker engine), so its shape is checked:
every part has a health check, a restart policy and its configuration, stateful parts
keep their data in named volumes, and app parts use the one image with their command."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_PARTS = {"accounts", "billing", "delivery", "scheduler", "vault", "gateway", "privacy"}
INFRASTRUCTURE = {"rabbitmq": "/var/lib/rabbitmq", "mongo": "/data/db", "mailpit": "/data"}
REQUIRED_APP_ENV = {"AMQP_URI", "MONGO_URI", "JICM_SECRET_KEY", "JICM_PUBLIC_URL", "SMTP_HOST"}
# Run once and exit; the parts that need them wait for them to complete.
ONE_SHOT = {"mongo-init"}


def test_the_stack_has_the_broker_the_database_the_mail_catcher_and_every_part():
    assert set(SERVICES) >= set(INFRASTRUCTURE) | APP_PARTS


@pytest.mark.parametrize("name", sorted(set(SERVICES) - ONE_SHOT))
def test_every_part_has_a_health_check_and_a_restart_policy(name):
    service = SERVICES[name]
    assert service["restart"] in ("unless-stopped", "always")
    check = service["healthcheck"]
    assert check["test"][0] == "CMD"
    assert {"interval", "timeout", "retries"} <= set(check)


@pytest.mark.parametrize("name, path", sorted(INFRASTRUCTURE.items()))
def test_stateful_parts_keep_their_data_in_named_volumes(name, path):
    mounts = SERVICES[name]["volumes"]
    volume = next(m.split(":")[0] for m in mounts if m.split(":")[1] == path)
    assert volume in COMPOSE["volumes"]


@pytest.mark.parametrize("name", sorted(APP_PARTS))
def test_app_parts_run_the_one_image_with_their_own_command_and_configuration(name):
    service = SERVICES[name]
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert service["command"]
    assert set(service["environment"]) >= REQUIRED_APP_ENV
    assert service["environment"]["JICM_ENV"] == "production"
    assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert service["depends_on"]["mongo-init"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", sorted(APP_PARTS - {"gateway"}))
def test_each_service_runs_under_the_runner_and_is_checked_over_rpc(name):
    service = SERVICES[name]
    assert service["command"] == ["python", "-m", "shared.runner", name]
    assert service["healthcheck"]["test"][1:] == ["python", "-m", "deploy.healthcheck", name]


def test_secrets_are_never_written_in_the_compose_file():
    env = SERVICES["gateway"]["environment"]
    assert env["JICM_SECRET_KEY"].startswith("${JICM_SECRET_KEY:?")


def test_the_gateway_waits_for_every_service_to_be_healthy():
    waits_for = SERVICES["gateway"]["depends_on"]
    for name in APP_PARTS - {"gateway"}:
        assert waits_for[name]["condition"] == "service_healthy"


def test_the_dockerfile_copies_every_package_installs_jicm_and_runs_unprivileged():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    for package in ("shared", "services", "gateway", "deploy", "jicm"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert "USER jicm" in dockerfile
    assert "python:3.11" in dockerfile
    assert "pip install --no-deps --no-build-isolation -e ." in dockerfile  # `jicm`


@pytest.mark.skipif(not (shutil.which("docker-compose") or shutil.which("docker")),
                    reason="neither docker-compose nor docker is installed")
def test_compose_itself_accepts_the_file():
    tool = ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]
    env = {"RABBITMQ_PASSWORD": "x", "MONGO_PASSWORD": "x", "JICM_SECRET_KEY": "x",
           "MONGO_REPLICA_KEY": "x", "STRIPE_API_KEY": "x", "STRIPE_WEBHOOK_SECRET": "x",
           "STRIPE_PRICE_MONTHLY": "x", "STRIPE_PRICE_YEARLY": "x",
           "PATH": "/usr/bin:/bin:/usr/local/bin"}
    probe = subprocess.run([*tool, "version"], capture_output=True, env=env, check=False)
    if probe.returncode != 0:
        pytest.skip("the compose plugin is not installed")
    result = subprocess.run([*tool, "-f", str(REPO / "docker-compose.yml"), "config", "--quiet"],
                            capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr


def test_stripe_secrets_are_given_to_billing_alone_and_never_written_here():
    stripe_keys = {"STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET"}
    for name in APP_PARTS - {"billing"}:
        assert not stripe_keys & set(SERVICES[name]["environment"]), name
    billing = SERVICES["billing"]["environment"]
    for key in stripe_keys | {"STRIPE_PRICE_MONTHLY", "STRIPE_PRICE_YEARLY"}:
        assert billing[key].startswith(f"${{{key}:?")


def test_mongodb_runs_as_a_replica_set_initiated_once_by_a_one_shot_part():
    mongo = " ".join(SERVICES["mongo"]["command"])
    assert "--replSet rs0" in mongo and "--keyFile" in mongo
    assert SERVICES["mongo"]["environment"]["MONGO_REPLICA_KEY"].startswith(
        "${MONGO_REPLICA_KEY:?")
    init = SERVICES["mongo-init"]
    assert init["restart"] == "on-failure"
    assert init["depends_on"]["mongo"]["condition"] == "service_healthy"
    script = " ".join(init["command"])
    assert "rs.initiate" in script and "NotYetInitialized" in script  # idempotent
    assert "isWritablePrimary" in script  # done only once there is a primary


def test_the_services_connect_to_the_replica_set_and_serve_their_metrics():
    env = SERVICES["accounts"]["environment"]
    assert "replicaSet=rs0" in env["MONGO_URI"]
    assert env["JICM_METRICS_BIND"] == "0.0.0.0:9100"
