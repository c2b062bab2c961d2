"""bench/layout_figures.py's sizes: the longest function, nested ones by their qualified name,
and the largest module, of workers/ and service/ alone."""

from __future__ import annotations

from pathlib import Path

from bench.layout_figures import sizes


def test_the_longest_function_and_the_largest_module_are_named_with_their_lines(
        tmp_path: Path) -> None:
    (tmp_path / "workers" / "lease").mkdir(parents=True)
    (tmp_path / "service").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "workers" / "lease" / "held.py").write_text(
        "class Held:\n"
        "    def hold(self):\n"
        "        def inner():\n"
        "            return 1\n"
        "        return inner()\n"
        "\n"
        "\n"
        "\n")
    (tmp_path / "service" / "app.py").write_text(
        "@decorated\n"
        "def create_app():\n"
        "    return 1\n")
    # Outside workers/ and service/: not counted, however long.
    (tmp_path / "tests" / "test_long.py").write_text(
        "def test_long():\n" + "    pass\n" * 50)

    lines = [line.strip() for line in sizes(tmp_path, top=1).splitlines()]

    assert lines[1:] == [
        "longest functions (lines):", "4  workers/lease/held.py:Held.hold",
        "largest modules (lines):", "8  workers/lease/held.py",
        "modules (.py files, __init__ included) per package of workers/:",
        "1  workers/lease/"]
