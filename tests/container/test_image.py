"""What the image is: its configuration, its contents and its size."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import orjson

from scripts.container import Engine

REPO = Path(__file__).resolve().parents[2]
SIZE_GOAL_BYTES = 160_000_000
# The botocore models the Dockerfile keeps: what our clients and the credential chain create.
BOTOCORE_SERVICES = {"s3", "sqs", "sts", "sso", "sso-oidc", "signin"}


def config(engine: Engine, image: str) -> dict[str, Any]:
    out = engine.run("image", "inspect", image, capture=True).stdout
    info = orjson.loads(out)[0]
    cfg: dict[str, Any] = info["Config"]
    # docker keeps the HEALTHCHECK in Config; podman lists it beside Config.
    cfg.setdefault("Healthcheck", info.get("Healthcheck"))
    return cfg


def run_python(engine: Engine, image: str, code: str) -> str:
    result = engine.run("run", "--rm", "--read-only", image, "python", "-c", code, capture=True)
    return result.stdout.decode()


def pinned(requirements: Path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in requirements.read_text().splitlines())
    return {normalise(line) for line in lines if line}


def normalise(requirement: str) -> str:
    name, _, version = requirement.partition("==")
    return f"{name.lower().replace('_', '-')}=={version}"


def test_the_image_runs_gunicorn_as_uid_10001_on_port_8000(engine: Engine, image: str):
    cfg = config(engine, image)

    assert cfg["User"] == "10001:10001"
    assert cfg["Cmd"] == ["gunicorn", "-c", "gunicorn.conf.py"]
    assert "8000/tcp" in cfg["ExposedPorts"]
    env = dict(item.split("=", 1) for item in cfg["Env"])
    assert env["BIND"] == "0.0.0.0:8000"
    assert env["PYTHONUNBUFFERED"] == "1"
    # The writable state lives under /tmp: a tmpfs or an emptyDir with a read-only root.
    assert env["SHELVER_STATE_DIR"].startswith("/tmp/")
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")


def test_the_healthcheck_probes_liveness_with_python_not_curl(engine: Engine, image: str):
    healthcheck = config(engine, image)["Healthcheck"]

    assert healthcheck["Test"] == ["CMD", "python", "-m", "service.probe", "/health/live"]
    assert run_python(engine, image, "import shutil; print(shutil.which('curl'))").strip() \
        == "None"


def test_the_image_holds_exactly_the_pinned_runtime_requirements_and_shelver(engine: Engine,
                                                                              image: str):
    listed = run_python(engine, image, (
        "import importlib.metadata as m\n"
        "for d in m.distributions(): print(f\"{d.metadata['Name']}=={d.version}\")"))

    installed = {normalise(line) for line in listed.split()}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert installed == pinned(REPO / "requirements" / "app.txt") | {
        normalise(f"{project['name']}=={project['version']}")}


def test_the_shelver_command_is_in_the_image(engine: Engine, image: str):
    result = engine.run("run", "--rm", "--read-only", image, "shelver", "--help", capture=True)

    assert b"dlq" in result.stdout and b"check" in result.stdout


def test_the_final_stage_has_no_compiler_and_no_package_installer(engine: Engine, image: str):
    found = engine.run("run", "--rm", image, "sh", "-c",
                       "command -v gcc cc c++ make pip pip3 || true", capture=True)

    assert found.stdout.decode().split() == []


def test_botocore_keeps_the_models_shelver_and_the_credential_chain_use(engine: Engine,
                                                                         image: str):
    services = run_python(engine, image, (
        "import boto3\n"
        "session = boto3.session.Session(region_name='us-east-1')\n"
        "names = session.get_available_services()\n"
        "for name in names: session.client(name)\n"
        "print(' '.join(names))"))

    assert set(services.split()) == BOTOCORE_SERVICES


def test_the_image_meets_its_size_goal(engine: Engine, image: str):
    size = engine.image_size(image)

    print(f"\n{image}: {size / 1e6:.1f} MB uncompressed")
    assert size <= SIZE_GOAL_BYTES, f"{size / 1e6:.1f} MB, the goal is 160 MB"
