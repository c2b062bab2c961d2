"""deploy/kubernetes/ as the tests see it: the objects its kustomization lists, and the checks.

Each check returns the problems it finds (an empty list when the manifests are right), so a test
can run it on the real manifests and on a mutated copy, and show that it can fail.
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from kubernetes_validate import utils as kubernetes_schemas

from service import create_app
from tests.deploy.crds import CUSTOM_SCHEMAS, custom_problems
from workers.pool import stop_deadline
from workers.pool.supervisor import MAX_RESPAWN_DELAY
from workers.settings import ENVIRONMENT_VARIABLES, Settings, is_read

REPO = Path(__file__).resolve().parents[2]
DIRECTORY = REPO / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests must be valid for, up to the newest kubernetes-validate
# knows: 1.29 is the oldest minor still under any major provider's extended support here.
OLDEST_KUBERNETES = (1, 29)
# Kubernetes' default when a pod spec does not say.
DEFAULT_GRACE_SECONDS = 30
ACTIVE_GROUPS_ANNOTATION = "shelver-active-message-groups"

Object = dict[str, Any]


@dataclass
class Manifests:
    objects: list[Object]

    @classmethod
    def load(cls, directory: Path = DIRECTORY) -> Manifests:
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        objects = [doc for resource in kustomization["resources"]
                   for doc in yaml.safe_load_all((directory / resource).read_text()) if doc]
        return cls(objects)

    def copy(self) -> Manifests:
        return Manifests(copy.deepcopy(self.objects))

    def one(self, kind: str) -> Object:
        found = [o for o in self.objects if o["kind"] == kind]
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]

    @property
    def pod(self) -> Object:
        spec: Object = self.one("Deployment")["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> Object:
        containers: list[Object] = self.pod["containers"]
        assert len(containers) == 1, "Shelver runs as one container per pod"
        return containers[0]

    @property
    def config(self) -> dict[str, str]:
        data: dict[str, str] = self.one("ConfigMap").get("data", {})
        return data

    def settings(self) -> Settings:
        """What Shelver makes of the ConfigMap: its start-up validation, run on the manifest."""
        return Settings.from_env(self.config)

    def bind_port(self) -> int:
        port = urlsplit("//" + self.config["BIND"]).port
        assert port is not None, f"BIND={self.config['BIND']!r} names no port"
        return port


def kubernetes_versions() -> list[str]:
    versions = {tuple(int(x) for x in v.split(".")[:2])
                for v in kubernetes_schemas.all_versions()}
    return [f"{major}.{minor}" for major, minor in sorted(versions)
            if (major, minor) >= OLDEST_KUBERNETES]


def schema_problems(obj: Object, version: str) -> list[str]:
    """Kubernetes' own schema (strict: unknown fields are errors), or our CRD schema."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if obj.get("apiVersion") in CUSTOM_SCHEMAS:
        return [f"{name}: {p}" for p in custom_problems(obj)]
    try:
        kubernetes_schemas.validate(obj, version, strict=True)
    except kubernetes_schemas.ValidationError as error:
        return [f"{name} (Kubernetes {version}): {error.message} at "
                f"{'/'.join(str(p) for p in error.absolute_path)}"]
    except kubernetes_schemas.SchemaNotFoundError as error:
        return [f"{name}: {error.message}"]
    return []


def _env_names(manifests: Manifests) -> Iterator[str]:
    container = manifests.container
    for variable in container.get("env", []):
        yield variable["name"]
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            config = next(o for o in manifests.objects
                          if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)
            yield from config.get("data", {})


def env_problems(manifests: Manifests) -> list[str]:
    """Every variable the pod gets is one Shelver reads; the ConfigMap sets every one of them."""
    problems = [f"{name} is set, but Shelver does not read it (workers.settings.is_read)"
                for name in _env_names(manifests) if not is_read(name)]
    problems += [f"the ConfigMap does not set {name}"
                 for name in sorted(ENVIRONMENT_VARIABLES - set(manifests.config))]
    return problems


def served_paths() -> set[str]:
    """The paths Shelver's Flask app answers GET on."""
    app = create_app({"SHELVER_SETTINGS": Settings()})
    return {rule.rule for rule in app.url_map.iter_rules() if "GET" in (rule.methods or ())}


def _container_port(manifests: Manifests, port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    return next((p["containerPort"] for p in manifests.container.get("ports", [])
                 if p.get("name") == port), None)


def probe_problems(manifests: Manifests) -> list[str]:
    """Every probe and the scrape annotations name a path the app serves, on the BIND port."""
    paths, bind_port = served_paths(), manifests.bind_port()
    problems = []
    targets: dict[str, Object] = {kind: manifests.container[kind]["httpGet"]
               for kind in ("startupProbe", "readinessProbe", "livenessProbe")
               if kind in manifests.container}
    annotations = manifests.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    targets["prometheus.io annotations"] = {"path": annotations["prometheus.io/path"],
                                            "port": int(annotations["prometheus.io/port"])}
    for what, target in targets.items():
        if target["path"] not in paths:
            problems.append(f"{what}: GET {target['path']} is not served ({sorted(paths)})")
        port = _container_port(manifests, target["port"])
        if port != bind_port:
            problems.append(f"{what}: port {target['port']!r} is {port}, but gunicorn listens "
                            f"on {bind_port} (BIND)")
    return problems


def grace_problems(manifests: Manifests) -> list[str]:
    grace = manifests.pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
    deadline = stop_deadline(manifests.settings())
    if grace <= deadline:
        return [f"terminationGracePeriodSeconds {grace} does not exceed the stop deadline "
                f"{deadline:g} s (workers.pool.stop_deadline of the ConfigMap's values)"]
    return []


def liveness_problems(manifests: Manifests) -> list[str]:
    probe = manifests.container["livenessProbe"]
    tolerated = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    if tolerated <= MAX_RESPAWN_DELAY:
        return [f"liveness fails after {tolerated} s, before the pool's own respawn back-off "
                f"({MAX_RESPAWN_DELAY:g} s) is over: the kubelet would restart what the pool "
                "repairs"]
    return []


def scaling_problems(manifests: Manifests) -> list[str]:
    """The ScaledObject watches the queue Shelver drains, and caps replicas where more idle."""
    scaled = manifests.one("ScaledObject")
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    settings = manifests.settings()
    problems = []
    if trigger["queueURL"] != settings.input_queue:
        problems.append(f"KEDA watches {trigger['queueURL']}, Shelver drains "
                        f"{settings.input_queue}")
    if trigger["awsRegion"] != manifests.config["AWS_REGION"]:
        problems.append(f"KEDA looks in {trigger['awsRegion']}, Shelver in "
                        f"{manifests.config['AWS_REGION']}")
    groups = int(scaled["metadata"]["annotations"][ACTIVE_GROUPS_ANNOTATION])
    useful = math.ceil(groups / (settings.consumers * settings.consumer_threads))
    if scaled["spec"]["maxReplicaCount"] != useful:
        problems.append(f"maxReplicaCount {scaled['spec']['maxReplicaCount']}: {groups} active "
                        f"groups keep {useful} replicas of {settings.consumers} x "
                        f"{settings.consumer_threads} busy")
    return problems


def project_version() -> str:
    version: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return version


def image_problems(manifests: Manifests) -> list[str]:
    """The pod runs the project's version (pyproject.toml's, the image built from this tree),
    never a tag that moves, such as latest."""
    image = manifests.container["image"]
    if image != f"shelver:{project_version()}":
        return [f"the Deployment runs {image}, not shelver:{project_version()} (pyproject.toml)"]
    return []


def network_problems(manifests: Manifests) -> list[str]:
    """A NetworkPolicy selects the pod and admits only named sources, only on the port the
    probes and the scrape use (the kubelet's probes come from the node: always allowed)."""
    pod_labels = manifests.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    policies = [o for o in manifests.objects if o["kind"] == "NetworkPolicy"
                and o["spec"]["podSelector"].get("matchLabels", {}).items() <= pod_labels.items()]
    if not policies:
        return ["no NetworkPolicy selects the pod: whoever reaches it may connect"]
    problems, bind_port = [], manifests.bind_port()
    for policy in policies:
        name, spec = policy["metadata"]["name"], policy["spec"]
        if "Ingress" not in spec.get("policyTypes", ["Ingress"]):
            problems.append(f"NetworkPolicy {name} does not restrict ingress")
        for rule in spec.get("ingress", []):
            if not rule.get("from"):
                problems.append(f"NetworkPolicy {name} admits every source")
            ports = [_container_port(manifests, p["port"]) for p in rule.get("ports", [])]
            if ports != [bind_port]:
                problems.append(f"NetworkPolicy {name} admits ports {ports or 'all'}, not only "
                                f"{bind_port} (BIND)")
    return problems


def reference_problems(manifests: Manifests) -> list[str]:
    """Names and label selectors that must meet: each reference finds its object."""
    names = {(o["kind"], o["metadata"]["name"]) for o in manifests.objects}
    deployment = manifests.one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = manifests.one("Service")
    port_names = {p.get("name") for p in manifests.container.get("ports", [])}
    wanted = {
        ("ServiceAccount", manifests.pod.get("serviceAccountName", "default")),
        ("Deployment", manifests.one("ScaledObject")["spec"]["scaleTargetRef"]["name"]),
        *(("TriggerAuthentication", t["authenticationRef"]["name"])
          for t in manifests.one("ScaledObject")["spec"]["triggers"]),
        *(("ConfigMap", s["configMapRef"]["name"]) for s in manifests.container["envFrom"]),
    }
    problems = [f"{kind} {name} is referred to but not defined" for kind, name in
                sorted(wanted - names)]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": service["spec"]["selector"],
        "PodDisruptionBudget": manifests.one("PodDisruptionBudget")["spec"]["selector"][
            "matchLabels"],
    }
    problems += [f"the {kind} selector {selector} does not match the pod labels {pod_labels}"
                 for kind, selector in selectors.items()
                 if not selector.items() <= pod_labels.items()]
    monitor = manifests.one("ServiceMonitor")["spec"]
    if not monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items():
        problems.append("the ServiceMonitor does not select the Service")
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    problems += [f"the ServiceMonitor scrapes port {e['port']!r}, which the Service lacks"
                 for e in monitor["endpoints"] if e["port"] not in service_ports]
    problems += [f"Service port {name} targets {p['targetPort']!r}, no container port"
                 for name, p in service_ports.items() if p["targetPort"] not in port_names]
    return problems
