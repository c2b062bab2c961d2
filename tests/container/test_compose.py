"""compose.yaml: validated by a real compose implementation (podman-compose), and its Shelver
service run here. The rest of the stack needs registry images (python, node, prom/prometheus)
this machine cannot pull; their files are checked instead: Prometheus's config by promtool,
every Dockerfile's COPY sources against .dockerignore."""

from __future__ import annotations

import fnmatch
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import yaml

from scripts.container import Engine
from scripts.emulator import free_port
from tests.support.aws import Aws, Stack, book, wait_until
from tests.support.shelver import Endpoint
from workers.pool import stop_deadline
from workers.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PODMAN_COMPOSE = REPO / ".venv" / "bin" / "podman-compose"
SERVICES = {"localstack", "deploy", "shelver", "prometheus", "grafana", "otel-collector"}


def compose(engine: Engine, *args: str, files: tuple[Path, ...] = (REPO / "compose.yaml",),
            check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [str(PODMAN_COMPOSE)]
    for file in files:
        command += ["-f", str(file)]
    result = subprocess.run([*command, *args], cwd=REPO, env=engine.env(), capture_output=True,
                            text=True, timeout=300, check=False)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def rendered(engine: Engine) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(compose(engine, "config").stdout)
    return config


def duration_seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]]


def test_compose_renders_the_whole_stack(rendered: dict[str, Any]):
    assert set(rendered["services"]) == SERVICES


def test_compose_runs_shelver_as_the_orchestrator_manifests_do(rendered: dict[str, Any]):
    shelver = rendered["services"]["shelver"]
    env = {k: str(v) for k, v in shelver["environment"].items()}

    assert shelver["read_only"] is True
    assert shelver["user"] == "10001:10001"
    assert shelver["tmpfs"] == ["/tmp"]
    assert shelver["depends_on"]["deploy"]["condition"] == "service_completed_successfully"
    assert env["AWS_ENDPOINT_URL"] == "http://localstack:4566"
    deadline = stop_deadline(Settings.from_env(env))
    assert duration_seconds(shelver["stop_grace_period"]) > deadline


def test_the_deploy_reaches_localstack_by_its_service_name(rendered: dict[str, Any]):
    services = rendered["services"]
    deploy_env = services["deploy"]["environment"]

    assert deploy_env["LOCALSTACK_ENDPOINT_HOST"] == "http://localstack"
    assert services["deploy"]["depends_on"]["localstack"]["condition"] == "service_healthy"
    assert "localstack" in services


def test_shelver_in_compose_sends_its_traces_to_the_collector_s_otlp_receiver(
        rendered: dict[str, Any]):
    services = rendered["services"]
    endpoint = urlsplit(services["shelver"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
    collector = services["otel-collector"]
    [mount] = collector["volumes"]
    source, target = (mount["source"], mount["target"]) if isinstance(mount, dict) else (
        mount.split(":")[0], mount.split(":")[1])
    config = yaml.safe_load((REPO / source).read_text())

    assert endpoint.hostname == "otel-collector" and endpoint.port == 4318
    assert f"--config={target}" in collector["command"]
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    assert config["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]


def test_prometheus_scrapes_shelver_and_its_config_is_valid():
    config_file = REPO / "deploy" / "prometheus" / "prometheus.yml"
    checked = subprocess.run(["promtool", "check", "config", str(config_file)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(config_file.read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    assert targets == ["shelver:8000"]


def host_path(service: dict[str, Any], inside: str) -> Path:
    """The host file or directory a path inside the service's container comes from, through
    its bind mounts (`./host:/container[:ro]`, as compose renders them)."""
    path = PurePosixPath(inside)
    volumes: list[str] = service.get("volumes", [])
    for volume in volumes:
        host, container = volume.split(":")[:2]
        mount = PurePosixPath(container)
        if path == mount or mount in path.parents:
            return (REPO / host / path.relative_to(mount)).resolve()
    raise AssertionError(f"{inside} is not mounted into the container")


def test_prometheus_in_compose_loads_the_rule_files_from_its_mount(rendered: dict[str, Any]):
    prometheus = rendered["services"]["prometheus"]
    [config_flag] = [a for a in prometheus["command"] if a.startswith("--config.file=")]
    config_path = config_flag.split("=", 1)[1]
    config = yaml.safe_load(host_path(prometheus, config_path).read_text())

    rule_files = [host_path(prometheus, str(PurePosixPath(config_path).parent / name))
                  for name in config["rule_files"]]
    assert rule_files == [REPO / "deploy" / "prometheus" / "shelver.rules.yml"]


def test_grafana_in_compose_gets_the_prometheus_datasource_and_the_dashboard(
        rendered: dict[str, Any]):
    services = rendered["services"]
    grafana = services["grafana"]
    image, _, tag = grafana["image"].rpartition(":")
    assert image == "grafana/grafana" and tag[:1].isdigit(), "pin Grafana's version"
    assert "prometheus" in grafana["depends_on"]
    provisioning = host_path(grafana, "/etc/grafana/provisioning")

    [datasource] = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    url = urlsplit(datasource["url"])
    assert (url.hostname, url.port) == ("prometheus", 9090)  # the service, its listening port
    assert "127.0.0.1:9090:9090" in services["prometheus"]["ports"]
    prometheus_config = yaml.safe_load(
        (REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    # $__rate_interval is computed from it: it must be the real scrape interval.
    assert datasource["jsonData"]["timeInterval"] == prometheus_config["global"]["scrape_interval"]

    [provider] = yaml.safe_load(
        (provisioning / "dashboards" / "shelver.yml").read_text())["providers"]
    dashboard_file = host_path(grafana, provider["options"]["path"] + "/shelver.json")
    assert dashboard_file == REPO / "deploy" / "grafana" / "shelver.json"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(grafana, home) == dashboard_file
    assert orjson.loads(dashboard_file.read_bytes())["uid"] == "shelver"


def dockerignore_allows(path: str) -> bool:
    """Whether .dockerignore (exclude-all, then `!` allowlist) lets `path` into the context."""
    allowed = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            allowed = negated
    return allowed


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "deploy/compose/localstack.Dockerfile",
                                        "deploy/compose/deploy.Dockerfile"])
def test_every_file_a_dockerfile_copies_is_in_the_build_context(dockerfile: str):
    sources = []
    for line in (REPO / dockerfile).read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += words[1:-1]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert dockerignore_allows(source), f"{source} is excluded by .dockerignore"


@pytest.fixture
def override(tmp_path: Path, image: str, aws_env: dict[str, str], stack: Stack
             ) -> tuple[Path, Endpoint]:
    """What this machine changes: the tested image, host networking (so no published port and
    no dependencies to start), the session's emulator and a fresh stack."""
    endpoint = Endpoint(port=free_port())
    env = {**aws_env, **stack.shelver_env(), "BIND": f"127.0.0.1:{endpoint.port}",
           "WAIT_TIME_SECONDS": "1"}
    path = tmp_path / "compose.override.yaml"
    path.write_text("services:\n"
                    "  shelver:\n"
                    f"    image: {image}\n"
                    "    network_mode: host\n"
                    "    ports: !reset []\n"
                    "    depends_on: !reset {}\n"
                    f"    environment: {orjson.dumps(env).decode()}\n")
    return path, endpoint


def test_compose_runs_shelver_from_the_image(engine: Engine, aws: Aws, stack: Stack,
                                             override: tuple[Path, Endpoint]):
    path, endpoint = override
    files = (REPO / "compose.yaml", path)
    project = f"shelvertest{endpoint.port}"
    compose(engine, "-p", project, "up", "-d", "--no-deps", "--no-build", "shelver", files=files)
    try:
        endpoint.wait_healthy(120)
        books = [book(f"compose-{n}", f"Compose {n}", "romance") for n in range(6)]
        aws.send(stack.input_url, [("compose", b) for b in books])
        wait_until(lambda: aws.drained(stack.input_url), 120, 0.5, "the input queue to drain")
        for b in books:
            assert aws.get(stack.buckets["romance"], f"{b['title']}.json")[0] == orjson.dumps(b)
    finally:
        compose(engine, "-p", project, "down", "--timeout", "60", files=files, check=False)
    assert endpoint.get("/health/live").status == 0  # stopped and gone
