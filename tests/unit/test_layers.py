"""The packages' layering, as docs/architecture.md states it, holds for every import in the code:
each package imports only the packages its row names (lazy imports and TYPE_CHECKING ones
included), and only workers.aws and workers.cli import the AWS SDKs' clients; exceptions are
not clients. A package added without a row fails here too, so the table cannot rot."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARCHITECTURE = REPO / "docs" / "architecture.md"
# The modules at the top of workers/, which every package may import: `workers` in the table.
TOP = "workers"
_ROW = re.compile(r"^\| `(?P<package>[\w.]+)`(?P<rest>.*)$")
# What only the AWS plumbing and the operator's command may import: the SDKs' clients.
AWS_SDK = ("boto3", "awscrt", "botocore")
AWS_SDK_ALLOWED = ("workers.aws", "workers.cli")
AWS_EXCEPTIONS = "botocore.exceptions"


def rules() -> dict[str, set[str]]:
    """package -> the packages it may import, from the table of docs/architecture.md."""
    table = ARCHITECTURE.read_text().split("## The packages", 1)[1].split("\n## ", 1)[0]
    found: dict[str, set[str]] = {}
    for line in table.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        cells = match["rest"].split("|")
        found[match["package"]] = set(re.findall(r"`([\w.]+)`", cells[-2]))
    return found


def package_of(module: str, packages: set[str]) -> str:
    """The longest package of the table `module` belongs to."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in packages:
            return candidate
    return TOP if parts[0] == "workers" else parts[0]


def modules() -> dict[str, Path]:
    found = {}
    for root in ("workers", "service"):
        for path in sorted((REPO / root).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module `path` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from workers import metrics` imports workers.metrics.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_every_package_has_a_row() -> None:
    table = rules()
    packages = {package_of(module, set(table)) for module in modules()}
    assert packages - set(table) == set()
    assert TOP in table and "workers.aws" in table


def test_each_package_imports_only_what_its_row_allows() -> None:
    table = rules()
    wrong = []
    for module, path in modules().items():
        own = package_of(module, set(table))
        for imported in imports(path):
            if imported.split(".")[0] not in ("workers", "service"):
                continue
            target = package_of(imported, set(table))
            if target not in table[own] | {own}:
                wrong.append(f"{module} imports {imported} ({target})")
    assert wrong == []


def test_only_the_aws_plumbing_and_the_command_use_the_aws_sdks() -> None:
    table = rules()
    wrong = []
    for module, path in modules().items():
        if package_of(module, set(table)).startswith(AWS_SDK_ALLOWED):
            continue
        wrong += [f"{module} imports {imported}" for imported in imports(path)
                  if imported.split(".")[0] in AWS_SDK and not imported.startswith(AWS_EXCEPTIONS)]
    assert wrong == []


def test_the_check_sees_lazy_imports_and_names_imported_from_a_package(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("from workers import metrics\nfrom workers.aws import AWS_ERRORS\n"
                    "def f():\n    from workers.pool import ConsumerPool\n")
    packages = {"workers", "workers.aws", "workers.pool"}

    assert {package_of(name, packages) for name in imports(path)} == {
        "workers", "workers.aws", "workers.pool"}


def test_the_lifecycle_table_is_the_settle_module_s() -> None:
    import workers.lease.settle

    docstring = workers.lease.settle.__doc__ or ""
    start = docstring.index("    what became of it")
    table = docstring[start:docstring.index("\n\n", start)]
    assert table.count("\n") > 10
    assert f"```\n{table}\n```" in ARCHITECTURE.read_text()


def test_only_the_settle_module_ends_a_hold() -> None:
    # Deletes, dead letters and visibility changes of a consumer's messages: workers.lease.settle
    # alone, but for the extensions of the held set (workers.lease.held). A call on `self` is a
    # part's own method (the group runner's dead_letter is settle.dead_letter, handed to it).
    allowed = {"workers.lease.settle": {"delete", "change_visibility", "dead_letter"},
               "workers.lease.held": {"change_visibility"}}
    calls = []
    for module, path in modules().items():
        if module.startswith(("workers.aws", "workers.cli")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "self")
                    and node.func.attr in {"delete", "change_visibility", "dead_letter"}
                    and node.func.attr not in allowed.get(module, set())):
                calls.append(f"{module}:{node.lineno} {node.func.attr}")
    assert calls == []
