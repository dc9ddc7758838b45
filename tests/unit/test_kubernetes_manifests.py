"""deploy/k8s renders, with `kubectl kustomize`, into objects that the Kubernetes API would
accept (every built-in object validated, strictly, against the API's schemas with
kubernetes-validate), and every workload is one an operator can run: probes, resources
sized within their limits, no root, no privilege, a disruption budget, autoscaling where
replicas share work, secrets only ever referenced. The two operators' resources (a
RabbitmqCluster, a MongoDBCommunity) have no schema in kubernetes-validate, which knows
only the built-in API: their structure is checked here instead, field by field, against
what each operator documents.

`make test` installs kubectl (deploy/local/ensure_deploy_tools.sh)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from shared.config import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("local", "production")
KUBERNETES_VERSION = "1.32.0"
SERVICES = ("accounts", "billing", "delivery", "privacy", "scheduler", "vault")
AUTOSCALED = {"jicm-gateway", "jicm-scheduler", "jicm-delivery"}
OPERATOR_KINDS = {"RabbitmqCluster", "MongoDBCommunity"}
# Secrets each service cannot start without (services/<name>/service.py).
REQUIRED_SECRETS = {
    "accounts": {"JICM_SECRET_KEY"},
    "billing": {"JICM_SECRET_KEY", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET",
                "STRIPE_PRICE_MONTHLY", "STRIPE_PRICE_YEARLY"},
    "delivery": {"JICM_SECRET_KEY"},
    "privacy": {"JICM_SECRET_KEY"},
    "scheduler": {"JICM_SECRET_KEY"},
    "vault": {"JICM_SECRET_KEY", "JICM_VAULT_KEK"},
}
# The fields of each operator's resource that these manifests may use (their CRDs' specs).
RABBITMQ_SPEC = {"replicas", "image", "resources", "persistence", "rabbitmq", "override",
                 "affinity", "tolerations", "service", "tls", "terminationGracePeriodSeconds"}
MONGODB_SPEC = {"members", "type", "version", "security", "users", "additionalMongodConfig",
                "statefulSet", "arbiters", "replicaSetHorizons", "featureCompatibilityVersion"}
MONGODB_USER = {"name", "db", "passwordSecretRef", "roles", "scramCredentialsSecretName",
                "connectionStringSecretName", "additionalConnectionStringConfig"}


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed: run deploy/local/ensure_deploy_tools.sh "
                    "(make test does)")
    return found


@functools.cache
def rendered(overlay: str) -> tuple[dict, ...]:
    result = subprocess.run([kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(overlay: str, kind: str) -> list[dict]:
    return [doc for doc in rendered(overlay) if doc["kind"] == kind]


def named(overlay: str, kind: str, name: str) -> dict:
    return next(doc for doc in of_kind(overlay, kind) if doc["metadata"]["name"] == name)


def containers(overlay: str) -> list[tuple[str, dict]]:
    return [(deployment["metadata"]["name"], container)
            for deployment in of_kind(overlay, "Deployment")
            for container in deployment["spec"]["template"]["spec"]["containers"]]


def quantity(value: str) -> float:
    """A Kubernetes quantity (CPU or memory) as a number, to compare two of the same kind."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for unit, factor in units.items():
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_built_in_object_is_valid_for_the_kubernetes_api(overlay):
    checked = 0
    for doc in rendered(overlay):
        if doc["kind"] in OPERATOR_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 20


def test_the_validator_does_refuse_what_the_api_would():
    deployment = dict(named("production", "Deployment", "jicm-vault"))
    deployment["spec"] = {**deployment["spec"], "replica": 3}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_probes_and_resources_within_their_limits(overlay):
    for name, container in containers(overlay):
        assert container.get("readinessProbe"), name
        assert container.get("livenessProbe"), name
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        for resource in ("cpu", "memory"):
            assert quantity(requests[resource]) <= quantity(limits[resource]), (name, resource)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nothing_runs_as_root_or_with_privileges(overlay):
    for deployment in of_kind(overlay, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
    namespace = of_kind(overlay, "Namespace")[0]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_a_disruption_budget_that_selects_it(overlay):
    budgets = [pdb["spec"]["selector"]["matchLabels"] for pdb in of_kind(overlay,
                                                                          "PodDisruptionBudget")]
    for deployment in of_kind(overlay, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(selector.items() <= labels.items() for selector in budgets), \
            deployment["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_scheduler_and_delivery_scale_on_their_own(overlay):
    scalers = {hpa["spec"]["scaleTargetRef"]["name"]: hpa
               for hpa in of_kind(overlay, "HorizontalPodAutoscaler")}
    assert set(scalers) == AUTOSCALED
    deployments = {d["metadata"]["name"]: d for d in of_kind(overlay, "Deployment")}
    for name, hpa in scalers.items():
        assert "replicas" not in deployments[name]["spec"], f"{name}: the HPA owns replicas"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    if overlay == "production":
        assert all(hpa["spec"]["minReplicas"] >= 2 for hpa in scalers.values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_is_reached_through_its_service_and_the_ingress(overlay):
    gateway = named(overlay, "Deployment", "jicm-gateway")
    service = named(overlay, "Service", "jicm-gateway")
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {port["name"] for port in gateway["spec"]["template"]["spec"]["containers"][0]
                  ["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    backend = named(overlay, "Ingress", "jicm-gateway")["spec"]["rules"][0]["http"]["paths"][0]
    assert backend["backend"]["service"]["name"] == "jicm-gateway"
    probes = gateway["spec"]["template"]["spec"]["containers"][0]
    assert probes["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_runs_under_the_runner_with_its_checks_and_its_secrets(overlay, service):
    deployment = named(overlay, "Deployment", f"jicm-{service}")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "shared.runner", service]
    assert container["readinessProbe"]["exec"]["command"] == [
        "python", "-m", "deploy.healthcheck", service]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    env = {item["name"]: item for item in container["env"]}
    for name in REQUIRED_SECRETS[service]:
        reference = env[name]["valueFrom"]["secretKeyRef"]
        assert reference["name"] == "jicm-app" and not reference.get("optional")
    mongo = env["MONGO_URI"]["valueFrom"]["secretKeyRef"]
    assert mongo["name"] == f"jicm-mongodb-{service}"
    assert "$(RABBITMQ_PASSWORD)" in env["AMQP_URI"]["value"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9100"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_value_is_in_the_repository(overlay):
    assert of_kind(overlay, "Secret") == []
    for name, container in containers(overlay):
        for item in container.get("env", []):
            if any(word in item["name"] for word in ("SECRET", "PASSWORD", "KEK", "KEY")):
                assert "value" not in item, (name, item["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configuration_names_only_settings_that_exist(overlay):
    known = {choice for info in Settings.model_fields.values()
             for choice in getattr(info.validation_alias, "choices", ())}
    known |= {"JICM_GATEWAY_WORKERS", "JICM_GATEWAY_THREADS", "JICM_GATEWAY_BIND"}
    config = named(overlay, "ConfigMap", "jicm-config")["data"]
    assert set(config) <= known


def test_production_runs_quorum_queues_on_three_brokers_and_three_database_members():
    assert named("production", "ConfigMap", "jicm-config")["data"]["JICM_QUEUE_TYPE"] == "quorum"
    assert named("production", "RabbitmqCluster", "jicm-rabbitmq")["spec"]["replicas"] == 3
    assert named("production", "MongoDBCommunity", "jicm-mongodb")["spec"]["members"] == 3
    images = {container["image"] for _, container in containers("production")}
    assert images == {"justincase/app:0.1.0"}


def test_locally_one_of_everything_on_classic_queues_with_mail_caught():
    assert named("local", "ConfigMap", "jicm-config")["data"]["JICM_QUEUE_TYPE"] == "classic"
    assert named("local", "RabbitmqCluster", "jicm-rabbitmq")["spec"]["replicas"] == 1
    assert named("local", "MongoDBCommunity", "jicm-mongodb")["spec"]["members"] == 1
    assert named("local", "ConfigMap", "jicm-config")["data"]["SMTP_HOST"] == "jicm-mailpit"
    assert named("local", "Service", "jicm-mailpit")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_broker_is_a_rabbitmq_cluster_as_its_operator_defines_it(overlay):
    cluster = named(overlay, "RabbitmqCluster", "jicm-rabbitmq")
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
    assert set(cluster["spec"]) <= RABBITMQ_SPEC
    assert isinstance(cluster["spec"]["replicas"], int)
    assert {"requests", "limits"} <= set(cluster["spec"]["resources"])
    assert "rabbitmq_prometheus" in cluster["spec"]["rabbitmq"]["additionalPlugins"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_a_database_user_of_its_own(overlay):
    database = named(overlay, "MongoDBCommunity", "jicm-mongodb")
    assert database["apiVersion"] == "mongodbcommunity.mongodb.com/v1"
    spec = database["spec"]
    assert set(spec) <= MONGODB_SPEC
    assert spec["type"] == "ReplicaSet"
    assert spec["security"]["authentication"]["modes"] == ["SCRAM"]
    users = {user["name"]: user for user in spec["users"]}
    assert set(users) == {f"jicm-{service}" for service in SERVICES}
    for service in SERVICES:
        user = users[f"jicm-{service}"]
        assert set(user) <= MONGODB_USER
        assert user["roles"] == [{"name": "readWrite", "db": f"jicm_{service}"}]
        assert user["passwordSecretRef"] == {"name": "jicm-mongodb-passwords", "key": service}
        assert user["connectionStringSecretName"] == f"jicm-mongodb-{service}"
