"""serverless.yml's genre buckets come from one list, the `genres` param (serverless-genres.js):
a genre added there gets its bucket, with the same protections, its grants in both policies and
its output; a genre's bucket outlives its removal from the list."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import REPO, UPDATE_TEMPLATE
from tests.deploy.test_iam import (
    LEAST_PRIVILEGE,
    OPERATOR_PRIVILEGE,
    Template,
    cfn_lint,
    grants,
    stack_buckets,
)

THREE_GENRES = ("--param=genres=scifi,romance,horror", "--param=horrorBucket=acme-horror",
                "--param=horrorKeyPrefix=books/horror/")


def genre_buckets(template: Template) -> Iterator[tuple[str, dict[str, Any]]]:
    return ((name, properties) for name, properties in stack_buckets(template)
            if name != "PayloadBucket")


def osls_package(out: Path, *params: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(["npx", "--no", "osls", "package", "--stage", "prod", "--package",
                           str(out), *params], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def three_genres(tmp_path_factory: pytest.TempPathFactory) -> Template:
    out = tmp_path_factory.mktemp("three-genres")
    result = osls_package(out, *THREE_GENRES)
    assert result.returncode == 0, result.stdout + result.stderr
    loaded: Template = json.loads((out / UPDATE_TEMPLATE).read_text())
    return loaded


def test_a_genre_added_to_the_list_gets_its_bucket_grants_and_output(
        three_genres: Template) -> None:
    buckets = dict(genre_buckets(three_genres))
    assert sorted(buckets) == ["HorrorBucket", "RomanceBucket", "ScifiBucket"]
    names = {name: properties["BucketName"] for name, properties in buckets.items()}
    assert names == {"ScifiBucket": "shelver-prod-scifi", "RomanceBucket": "shelver-prod-romance",
                     "HorrorBucket": "acme-horror"}
    # Every bucket as protected as the others: the same properties but for its name.
    unnamed = [{k: v for k, v in properties.items() if k != "BucketName"}
               for properties in buckets.values()]
    assert unnamed[0] == unnamed[1] == unnamed[2]
    # Its grants under its key prefix, as issue 18 has them for the others.
    assert grants(three_genres, "ConsumerPolicy") == LEAST_PRIVILEGE | {
        ("${HorrorBucket.Arn}/books/horror/*", "s3:PutObject"),
        ("${HorrorBucket.Arn}/books/horror/*", "s3:GetObject")}
    assert grants(three_genres, "OperatorPolicy") == OPERATOR_PRIVILEGE | {
        ("${HorrorBucket.Arn}/books/horror/.shelver-check/*", "s3:PutObject"),
        ("${HorrorBucket.Arn}/books/horror/.shelver-check/*", "s3:DeleteObject"),
        ("HorrorBucket.Arn", "s3:ListBucket"),
        ("${HorrorBucket.Arn}/books/horror/*", "s3:GetObject")}
    assert three_genres["Outputs"]["HorrorBucketName"] == {"Value": {"Ref": "HorrorBucket"}}


def test_the_template_with_an_added_genre_passes_cfn_lint(three_genres: Template,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "template.json"
    path.write_text(json.dumps(three_genres))
    result = cfn_lint(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_genre_bucket_is_kept_when_its_genre_leaves_the_list(package: Path) -> None:
    template: Template = json.loads((package / UPDATE_TEMPLATE).read_text())
    resources: dict[str, Any] = template["Resources"]
    for name, _ in genre_buckets(template):
        assert resources[name]["DeletionPolicy"] == "Retain"
        assert resources[name]["UpdateReplacePolicy"] == "Retain"


@pytest.mark.parametrize(("params", "message"), [
    (("--param=genres=scifi,sci-fi",),
     '"sci-fi" is not a genre serverless.yml can make a bucket for'),
    (("--param=genres=scifi,romance,scifi",), "a genre is given more than once"),
    (("--param=genres=scifi,romance", "--param=romanceBucket=shelver-prod-scifi"),
     "two genres name the bucket shelver-prod-scifi"),
    (("--param=romanceKeyPrefix=books",), "romanceKeyPrefix=books: a key prefix ends in '/'"),
])
def test_a_genre_list_that_cannot_be_deployed_is_refused(tmp_path: Path, params: tuple[str, ...],
                                                         message: str) -> None:
    result = osls_package(tmp_path, *params)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
