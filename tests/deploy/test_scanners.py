"""Security scanners on what a deploy ships, clean: checkov on deploy/kubernetes (built through its
kustomization), on the Dockerfile and on the CloudFormation `osls package --stage prod` makes;
hadolint on the Dockerfile. A check a file does not follow is skipped in that file, with its
reason: a checkov.io/skip annotation in a manifest, a template resource's Metadata (from
serverless.yml), a `# hadolint ignore=` comment. Each scan is also run on a copy with a finding
put in, to show it fails.

The tools, pinned in requirements/scanners.txt, live in their own venv (.venv-scanners), made here
on first use and again whenever that file changes. They run offline.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import CREATE_TEMPLATE, REPO, UPDATE_TEMPLATE
from tests.deploy.kubernetes import DIRECTORY

VENV = REPO / ".venv-scanners"
REQUIREMENTS = REPO / "requirements" / "scanners.txt"
INSTALLED = VENV / "installed-requirements.txt"  # what the venv was made from
DOCKERFILE = REPO / "Dockerfile"


@dataclass
class CheckovReport:
    """One checkov run: findings as "CHECK_ID resource", skips as "CHECK_ID resource: reason"."""

    passed: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    parsing_errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scanners:
    bin: Path

    def _env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
                # Offline: no guidelines from Prisma Cloud, no look for a newer checkov.
                "BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "TRUE"}

    def checkov(self, framework: str, target: Path) -> CheckovReport:
        where = ["-d", str(target)] if target.is_dir() else ["-f", str(target)]
        result = subprocess.run(
            [str(self.bin / "checkov"), "--skip-download", "--framework", framework, *where,
             "--output", "json"],
            cwd=target if target.is_dir() else target.parent, env=self._env(),
            capture_output=True, text=True, timeout=600)
        assert result.returncode in (0, 1), result.stderr[-3000:]
        runs = json.loads(result.stdout)
        report = CheckovReport()
        for run in runs if isinstance(runs, list) else [runs]:
            results = run.get("results", {})
            report.passed += len(results.get("passed_checks", []))
            report.failed += [f"{c['check_id']} {c['resource']}"
                              for c in results.get("failed_checks", [])]
            report.skipped.update({f"{c['check_id']} {c['resource']}":
                                   (c.get("check_result", {}).get("suppress_comment") or "")
                                   for c in results.get("skipped_checks", [])})
            report.parsing_errors += results.get("parsing_errors", [])
        assert report.passed or report.failed or report.skipped, f"nothing scanned: {runs}"
        return report

    def hadolint(self, dockerfile: Path) -> list[str]:
        result = subprocess.run(
            [str(self.bin / "hadolint"), "--no-color", "--format", "json", str(dockerfile)],
            env=self._env(), capture_output=True, text=True, timeout=120)
        assert result.returncode in (0, 1), result.stderr
        return [f"{f['code']} line {f['line']}: {f['message']}" for f in json.loads(result.stdout)]


def install(venv: Path = VENV) -> None:
    """The venv from requirements/scanners.txt, unless it already is just that."""
    wanted = REQUIREMENTS.read_text()
    if INSTALLED.is_file() and INSTALLED.read_text() == wanted:
        return
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
                   check=True, timeout=1800)
    INSTALLED.write_text(wanted)


@pytest.fixture(scope="session")
def scanners() -> Scanners:
    install()
    return Scanners(VENV / "bin")


def _clean(report: CheckovReport) -> None:
    assert report.parsing_errors == []
    assert report.failed == []
    # A check not followed says why, in the file that does not follow it.
    assert [name for name, reason in report.skipped.items() if not reason.strip()] == []


# -- deploy/kubernetes ---------------------------------------------------------------------------

def _manifests_copy(tmp_path: Path, edit: Callable[[list[dict[str, Any]]], None]) -> Path:
    """deploy/kubernetes copied, with `edit` applied to the Deployment file's objects."""
    directory = tmp_path / "kubernetes"
    shutil.copytree(DIRECTORY, directory)
    path = directory / "deployment.yaml"
    objects = list(yaml.safe_load_all(path.read_text()))
    edit(objects)
    path.write_text(yaml.safe_dump_all(objects))
    return directory


def test_checkov_finds_nothing_in_the_kubernetes_manifests(scanners: Scanners) -> None:
    report = scanners.checkov("kustomize", DIRECTORY)
    _clean(report)
    assert {name.split()[0] for name in report.skipped} == {"CKV_K8S_43", "CKV_K8S_15"}


@pytest.mark.parametrize(("edit", "finding"), [
    (lambda objects: objects[0]["spec"]["template"]["spec"]["containers"][0].update(
        image="shelver:latest"), "CKV_K8S_14"),
    (lambda objects: objects[0]["metadata"].pop("annotations"), "CKV_K8S_43"),
    (lambda objects: objects[0]["spec"]["template"]["spec"]["containers"][0]["securityContext"]
     .update(allowPrivilegeEscalation=True), "CKV_K8S_20"),
], ids=["latest tag", "skip removed", "privilege escalation"])
def test_checkov_fails_a_finding_in_the_manifests(
        scanners: Scanners, tmp_path: Path, edit: Callable[[list[dict[str, Any]]], None],
        finding: str) -> None:
    report = scanners.checkov("kustomize", _manifests_copy(tmp_path, edit))
    assert finding in {name.split()[0] for name in report.failed}, report.failed


def test_checkov_fails_manifests_without_the_network_policy(scanners: Scanners,
                                                            tmp_path: Path) -> None:
    directory = _manifests_copy(tmp_path, lambda objects: None)
    (directory / "networkpolicy.yaml").unlink()
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    kustomization["resources"].remove("networkpolicy.yaml")
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))

    assert "CKV2_K8S_6" in {name.split()[0] for name in scanners.checkov("kustomize",
                                                                         directory).failed}


# -- the Dockerfile ------------------------------------------------------------------------------

def test_checkov_and_hadolint_find_nothing_in_the_dockerfile(scanners: Scanners) -> None:
    _clean(scanners.checkov("dockerfile", DOCKERFILE))
    assert scanners.hadolint(DOCKERFILE) == []


def test_the_scanners_fail_a_finding_in_the_dockerfile(scanners: Scanners,
                                                       tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    text = DOCKERFILE.read_text()
    text = text.replace("FROM debian:bookworm-slim\n", "FROM debian:latest\n")
    text = text.replace("# hadolint ignore=DL3008\n", "")
    broken.write_text(text)

    assert "CKV_DOCKER_7" in {name.split()[0]
                              for name in scanners.checkov("dockerfile", broken).failed}
    assert {finding.split()[0] for finding in scanners.hadolint(broken)} >= {"DL3007", "DL3008"}


# -- the CloudFormation of `osls package --stage prod` -------------------------------------------

def _resources_but_metadata(template: dict[str, Any]) -> dict[str, Any]:
    return {name: {k: v for k, v in resource.items() if k != "Metadata"}
            for name, resource in template["Resources"].items()}


def test_checkov_finds_nothing_in_the_packaged_stack(scanners: Scanners, package: Path) -> None:
    report = scanners.checkov("cloudformation", package / UPDATE_TEMPLATE)
    _clean(report)
    assert sorted(report.skipped) == [
        "CKV_AWS_18 AWS::S3::Bucket.PayloadBucket",
        "CKV_AWS_18 AWS::S3::Bucket.RomanceBucket", "CKV_AWS_18 AWS::S3::Bucket.ScifiBucket",
        "CKV_AWS_18 AWS::S3::Bucket.ServerlessDeploymentBucket",
        "CKV_AWS_21 AWS::S3::Bucket.PayloadBucket",
        "CKV_AWS_21 AWS::S3::Bucket.RomanceBucket", "CKV_AWS_21 AWS::S3::Bucket.ScifiBucket",
        "CKV_AWS_27 AWS::SQS::Queue.InputQueue", "CKV_AWS_27 AWS::SQS::Queue.InputQueueDLQ"]


def test_the_first_stack_is_part_of_the_scanned_one(package: Path) -> None:
    # osls creates a stack of its deployment bucket alone, then updates it to the whole stack.
    # serverless.yml cannot give that first template the bucket's Metadata (the skip of its
    # access logs), so the whole stack is what checkov judges: the first one's resources must be
    # in it, the same but for Metadata.
    first = _resources_but_metadata(json.loads((package / CREATE_TEMPLATE).read_text()))
    whole = _resources_but_metadata(json.loads((package / UPDATE_TEMPLATE).read_text()))
    assert set(first) == {"ServerlessDeploymentBucket", "ServerlessDeploymentBucketPolicy"}
    assert {name: whole.get(name) for name in first} == first


def test_checkov_fails_a_finding_in_the_packaged_stack(scanners: Scanners, package: Path,
                                                       tmp_path: Path) -> None:
    template = json.loads((package / UPDATE_TEMPLATE).read_text())
    broken = copy.deepcopy(template)
    del broken["Resources"]["InputQueue"]["Metadata"]  # the queue's SSE-SQS no longer explained
    del broken["Resources"]["ServerlessDeploymentBucket"]["Properties"][
        "PublicAccessBlockConfiguration"]
    path = tmp_path / "template.json"
    path.write_text(json.dumps(broken))

    failed = scanners.checkov("cloudformation", path).failed
    assert {"CKV_AWS_27 AWS::SQS::Queue.InputQueue",
            "CKV_AWS_53 AWS::S3::Bucket.ServerlessDeploymentBucket"} <= set(failed), failed
