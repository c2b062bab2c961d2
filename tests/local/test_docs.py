"""README's claims about the configuration file and the make targets, held to the code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.local.conftest import REPO
from workers.settings import ENVIRONMENT_VARIABLES, ConfigError, read_config_file

README = (REPO / "README.md").read_text()


def configuration_rows() -> list[str]:
    """The variables of README's Configuration table, in its order."""
    section = README.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return [name for line in section.splitlines() if line.startswith("| `")
            for name in re.findall(r"`([A-Z0-9_]+)`", line.split("|")[1])]


def accepted_in_the_file(variable: str, tmp_path: Path) -> bool:
    path = tmp_path / f"{variable}.conf"
    path.write_text(f"{variable}=\n")  # blank: the default
    try:
        read_config_file(str(path))
    except ConfigError:
        return False
    return True


def test_the_config_file_takes_exactly_the_range_readme_gives(tmp_path: Path) -> None:
    claim = re.search(r"It holds the variables of the table from `([A-Z_]+)` to `([A-Z_]+)`",
                      README)
    assert claim is not None
    rows = configuration_rows()
    documented = rows[rows.index(claim[1]):rows.index(claim[2]) + 1]
    accepted = [v for v in rows if accepted_in_the_file(v, tmp_path)]
    assert accepted == documented
    assert set(rows) == ENVIRONMENT_VARIABLES  # every variable was tried


@pytest.mark.parametrize("target", ["run", "run-fresh", "infra", "reload", "shelver", "emulator",
                                    "emulator-down", "install", "test", "lint"])
def test_every_make_target_readme_names_exists(target: str) -> None:
    assert f"make {target}" in README
    result = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr

