"""workers.settings.ENVIRONMENT_VARIABLES is the one list of what Shelver reads: the code reads
nothing else, and README's Configuration table documents exactly that list."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from workers.settings import AWS_VARIABLE_PREFIX, ENVIRONMENT_VARIABLES, is_read

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "gunicorn.conf.py", *sorted((REPO / "workers").rglob("*.py")),
           *sorted((REPO / "service").rglob("*.py"))]
_ENVIRONMENT_NAMES = {"env", "environ"}


def _is_environment(node: ast.expr) -> bool:
    """os.environ, environ, or a mapping named env (Settings.from_env's parameter)."""
    return ((isinstance(node, ast.Attribute) and node.attr == "environ")
            or (isinstance(node, ast.Name) and node.id in _ENVIRONMENT_NAMES))


def _literal(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def variables_read(source: str) -> set[str]:
    """Names read with a literal key: os.environ.get("X"), os.getenv("X"), env["X"], ...
    Names starting with "_" are private markers the code sets for itself."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        name = None
        if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
            environment_method = (node.func.attr in {"get", "pop", "setdefault"}
                                  and _is_environment(node.func.value))
            if environment_method or node.func.attr == "getenv":
                name = _literal(node.args[0])
        elif isinstance(node, ast.Subscript) and _is_environment(node.value):
            name = _literal(node.slice)
        if name is not None and not name.startswith("_"):
            found.add(name)
    return found


def test_the_scan_finds_a_read_in_every_form() -> None:
    source = ('import os\nos.environ.get("A")\nos.getenv("B")\nenv["C"]\nos.environ["D"]\n'
              'env.get("E", "x")\nos.environ.setdefault("F", "1")\nos.environ.get("_PRIVATE")\n'
              'other.get("G")\n')
    assert variables_read(source) == {"A", "B", "C", "D", "E", "F"}


def test_the_code_reads_no_variable_outside_the_list() -> None:
    read = set().union(*(variables_read(path.read_text()) for path in SOURCES))
    assert {"BIND", "WEB_CONCURRENCY", "SHELVER_STATE_DIR", "AWS_REGION"} <= read  # scan works
    assert sorted(name for name in read if not is_read(name)) == []


def test_aws_sdk_variables_are_read_and_others_are_not() -> None:
    assert is_read("AWS_WEB_IDENTITY_TOKEN_FILE") and is_read("CONSUMERS")
    assert AWS_VARIABLE_PREFIX == "AWS_"
    assert not is_read("CONSUMER") and not is_read("SHELVER_CONSUMERS")


def documented_variables(readme: str) -> set[str]:
    """The backticked names in the first column of README's Configuration table."""
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z0-9_]+)`", row.split("|")[1])}


def test_the_readme_documents_exactly_the_list() -> None:
    readme = (REPO / "README.md").read_text()
    assert documented_variables(readme) == ENVIRONMENT_VARIABLES
    without_a_row = readme.replace("| `QUEUE_SAMPLE_SECONDS` |", "| QUEUE_SAMPLE_SECONDS |")
    assert documented_variables(without_a_row) == ENVIRONMENT_VARIABLES - {"QUEUE_SAMPLE_SECONDS"}
