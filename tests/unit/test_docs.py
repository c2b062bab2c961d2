"""The repository is self-contained: no file points a reader outside it (at a "shared" directory
beside the clone, which no clone has), and every relative link of its Markdown files leads to a
file that exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_SKIPPED = {".git", ".venv", ".venv-localstack", ".venv-scanners", "node_modules", ".run",
            ".stamps", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
            ".serverless", "__pycache__"}
_TEXT = {".py", ".md", ".yml", ".yaml", ".toml", ".txt", ".conf", ".json", ".sh", ".cfg", ""}
_LINK = re.compile(r"\]\((?!https?://|#|mailto:)([^)#\s]+)(?:#[^)]*)?\)")


def files() -> list[Path]:
    found = []
    for path in REPO.rglob("*"):
        parts = path.relative_to(REPO).parts
        if path.is_file() and not _SKIPPED & set(parts) and path.suffix in _TEXT:
            found.append(path)
    return found


def test_no_file_points_outside_the_repository() -> None:
    outside = "../" + "shared"  # spelled apart, so that this file does not match itself
    assert [str(p.relative_to(REPO)) for p in files() if outside in p.read_text(errors="ignore")
            ] == []


def test_every_relative_link_of_the_docs_leads_to_a_file() -> None:
    broken = []
    for path in files():
        if path.suffix != ".md":
            continue
        for target in _LINK.findall(path.read_text()):
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(REPO)}: {target}")
    assert broken == []
