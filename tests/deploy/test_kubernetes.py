"""deploy/kubernetes/: valid objects, and consistent with the code they deploy.

Each check runs on the real manifests and, to prove it can fail, on a mutated copy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kubernetes import (
    DIRECTORY,
    Manifests,
    env_problems,
    grace_problems,
    image_problems,
    kubernetes_versions,
    liveness_problems,
    network_problems,
    probe_problems,
    reference_problems,
    scaling_problems,
    schema_problems,
    served_paths,
)
from workers.pool import stop_deadline

Check = Callable[[Manifests], list[str]]
Mutation = Callable[[Manifests], None]


@pytest.fixture(scope="module")
def manifests() -> Manifests:
    return Manifests.load()


def mutated(manifests: Manifests, mutation: Mutation) -> Manifests:
    copy = manifests.copy()
    mutation(copy)
    return copy


def test_the_kustomization_lists_every_manifest_in_the_directory() -> None:
    kustomization = yaml.safe_load((DIRECTORY / "kustomization.yaml").read_text())
    files = {path.name for path in DIRECTORY.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert kustomization["namespace"] == "shelver"
    assert {o["kind"] for o in Manifests.load().objects} == {
        "Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "ServiceMonitor",
        "PodDisruptionBudget", "ScaledObject", "TriggerAuthentication", "NetworkPolicy"}


@pytest.mark.parametrize("version", kubernetes_versions())
def test_every_object_is_valid_for_kubernetes(manifests: Manifests, version: str) -> None:
    assert [p for o in manifests.objects for p in schema_problems(o, version)] == []


def _set(kind: str, path: str, value: object) -> Mutation:
    """A mutation setting `path` (dot-separated; digits index lists) in the one `kind`."""
    def mutate(manifests: Manifests) -> None:
        target: Any = manifests.one(kind)
        *parents, last = path.split(".")
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[last] = value
    return mutate


@pytest.mark.parametrize("kind, path, value, expected", [
    ("Deployment", "spec.template.spec.terminationGracePeriod", 90, "terminationGracePeriod"),
    ("Deployment", "spec.template.spec.containers.0.resources.limits", "512Mi", "512Mi"),
    ("PodDisruptionBudget", "spec.maxUnavailabe", 1, "maxUnavailabe"),
    ("Service", "spec.ports.0.port", "http", "http"),
    ("ScaledObject", "spec.triggers.0.metadata.queueLenght", "5", "queueLenght"),
    ("ScaledObject", "spec.triggers.0.metadata.scaleOnInFlight", "yes", "yes"),
    ("ScaledObject", "spec.triggers.0.metadata.queueLength", 5, "5"),
    ("ScaledObject", "spec.maxReplicas", 5, "maxReplicas"),
    ("ScaledObject", "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.policies",
     [{"type": "Pods", "value": 1, "periodSecond": 60}], "periodSecond"),
    ("TriggerAuthentication", "spec.podIdentity.roleArn", "arn:aws:iam::123456789012:role/x",
     "should not be valid"),
    ("TriggerAuthentication", "spec.podIdentity.provider", "aws-kiam", "aws-kiam"),
    ("ServiceMonitor", "spec.endpoints", [], "should be non-empty"),
    ("ServiceMonitor", "spec.endpoints.0.intervall", "30s", "intervall"),
])
def test_schema_check_rejects_a_broken_object(manifests: Manifests, kind: str, path: str,
                                              value: object, expected: str) -> None:
    broken = mutated(manifests, _set(kind, path, value)).one(kind)
    problems = schema_problems(broken, kubernetes_versions()[-1])
    assert problems and expected in " ".join(problems), problems


def _add_env(name: str) -> Mutation:
    def mutate(manifests: Manifests) -> None:
        manifests.container.setdefault("env", []).append({"name": name, "value": "1"})
    return mutate


def _drop_config(name: str) -> Mutation:
    def mutate(manifests: Manifests) -> None:
        del manifests.config[name]
    return mutate


def _config(name: str, value: str) -> Mutation:
    def mutate(manifests: Manifests) -> None:
        manifests.config[name] = value
    return mutate


def _probe(kind: str, **http_get: object) -> Mutation:
    def mutate(manifests: Manifests) -> None:
        manifests.container[kind]["httpGet"].update(http_get)
    return mutate


def _scrape_path(path: str) -> Mutation:
    def mutate(manifests: Manifests) -> None:
        template = manifests.one("Deployment")["spec"]["template"]
        template["metadata"]["annotations"]["prometheus.io/path"] = path
    return mutate


CONTAINER = "spec.template.spec.containers.0"

# Each check, with mutations it must catch: (check, mutation, words its problem must contain).
CASES: list[tuple[Check, Mutation, str]] = [
    (env_problems, _add_env("CONSUMER_TREADS"), "CONSUMER_TREADS is set"),
    (env_problems, _config("SHELVER_LOG_LEVEL", "DEBUG"), "SHELVER_LOG_LEVEL is set"),
    (env_problems, _drop_config("QUEUE_SAMPLE_SECONDS"), "does not set QUEUE_SAMPLE_SECONDS"),
    (probe_problems, _probe("readinessProbe", path="/healthz"), "GET /healthz is not served"),
    (probe_problems, _probe("livenessProbe", port=8080), "port 8080 is 8080"),
    (probe_problems, _probe("startupProbe", port="metrics"), "port 'metrics' is None"),
    (probe_problems, _config("BIND", "0.0.0.0:9000"), "listens on 9000"),
    (probe_problems, _scrape_path("/stats"), "prometheus.io annotations: GET /stats"),
    (grace_problems, _config("CONSUMER_STOP_TIMEOUT_SECONDS", "120"), "does not exceed"),
    (grace_problems, _set("Deployment", "spec.template.spec.terminationGracePeriodSeconds", 60),
     "60 does not exceed the stop deadline 67"),
    (liveness_problems, _set("Deployment", f"{CONTAINER}.livenessProbe.failureThreshold", 3),
     "liveness fails after 30 s"),
    (scaling_problems, _config("CONSUMER_THREADS", "4"), "keep 7 replicas of 4 x 4"),
    (scaling_problems, _config("INPUT_QUEUE", "InputQueue.fifo"), "Shelver drains"),
    (scaling_problems, _config("AWS_REGION", "us-east-1"), "Shelver in us-east-1"),
    (reference_problems, _set("ScaledObject", "spec.scaleTargetRef.name", "shelve"),
     "Deployment shelve is referred to"),
    (reference_problems, _set("Service", "spec.selector", {"app": "shelver"}),
     "the Service selector"),
    (reference_problems, _set("ServiceMonitor", "spec.endpoints.0.port", "web"),
     "port 'web', which the Service lacks"),
    (reference_problems, _set("Deployment", f"{CONTAINER}.ports.0.name", "web"),
     "targets 'http', no container port"),
    (image_problems, _set("Deployment", f"{CONTAINER}.image", "shelver:latest"),
     "runs shelver:latest"),
    (network_problems, _set("NetworkPolicy", "spec.podSelector.matchLabels", {"app": "shelver"}),
     "no NetworkPolicy selects the pod"),
    (network_problems, _set("NetworkPolicy", "spec.policyTypes", ["Egress"]),
     "does not restrict ingress"),
    (network_problems, _set("NetworkPolicy", "spec.ingress.0.from", []), "admits every source"),
    (network_problems, _set("NetworkPolicy", "spec.ingress.0.ports", []), "admits ports all"),
    (network_problems, _set("NetworkPolicy", "spec.ingress.0.ports.0.port", 9090),
     "admits ports [9090], not only 8000"),
]


CHECKS = sorted({check for check, _, _ in CASES}, key=lambda check: check.__name__)


@pytest.mark.parametrize("check", CHECKS, ids=[check.__name__ for check in CHECKS])
def test_the_manifests_pass_the_check(manifests: Manifests, check: Check) -> None:
    assert check(manifests) == []


@pytest.mark.parametrize("check, mutation, expected", CASES,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_the_check_catches_a_mutation(manifests: Manifests, check: Check, mutation: Mutation,
                                      expected: str) -> None:
    problems = check(mutated(manifests, mutation))
    assert problems and expected in " ".join(problems), problems


def test_the_probes_are_the_ones_documented(manifests: Manifests) -> None:
    container = manifests.container
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert {"/health", "/health/live", "/metrics"} <= served_paths()


def test_the_grace_period_exceeds_the_stop_deadline_with_room(manifests: Manifests) -> None:
    deadline = stop_deadline(manifests.settings())
    assert deadline == 10 + 20 + 30 + 5 + 2  # graceful, long poll, stop timeout, kill grace, exit
    assert manifests.pod["terminationGracePeriodSeconds"] >= deadline + 20


def test_the_pod_runs_locked_down(manifests: Manifests) -> None:
    pod, container = manifests.pod, manifests.container
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert pod["automountServiceAccountToken"] is False
    # The only writable place: an emptyDir at /tmp, bounded, where the ConfigMap's dirs are.
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    for variable in ("SHELVER_STATE_DIR", "PROMETHEUS_MULTIPROC_DIR"):
        assert Path(manifests.config[variable]).is_relative_to("/tmp")


def test_requests_fit_within_limits(manifests: Manifests) -> None:
    resources = manifests.container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert _mebibytes(resources["requests"]["memory"]) <= _mebibytes(
        resources["limits"]["memory"])


def _mebibytes(quantity: str) -> int:
    assert quantity.endswith("Mi"), quantity
    return int(quantity[:-2])


def test_the_service_account_carries_the_irsa_role(manifests: Manifests) -> None:
    annotations = manifests.one("ServiceAccount")["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_keda_scales_on_visible_and_in_flight_messages_with_the_pods_identity(
        manifests: Manifests) -> None:
    trigger = manifests.one("ScaledObject")["spec"]["triggers"][0]
    assert trigger["type"] == "aws-sqs-queue"
    assert trigger["metadata"]["scaleOnInFlight"] == "true"
    assert {"queueLength", "activationQueueLength"} <= set(trigger["metadata"])
    auth = manifests.one("TriggerAuthentication")["spec"]
    assert auth == {"podIdentity": {"provider": "aws", "identityOwner": "workload"}}
