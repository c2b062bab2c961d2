"""`python -m bench.dashboard_picture` (`make dashboard-picture`): a picture of the Grafana
dashboard, drawn with matplotlib from the dashboard's own queries, for docs/operations.md.

Grafana is not installable here (not in Debian, no image registry), so this draws what it would:
the same run as the dashboard test (tests/support/workday.py: an S3 outage, a drain with poison,
a consumer killed, against LocalStack, a real gunicorn Shelver and a real Prometheus with the
rules loaded), then every panel of deploy/grafana/shelver.json from its queries' answers, laid
out on the dashboard's grid. Exits 1 if a query returns no data, like the test.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from scripts.emulator import FAKE_AWS_ENV, LocalStack, deploy, free_port
from tests.support import dashboard, workday
from tests.support.aws import Aws
from tests.support.prometheus import Prometheus
from tests.support.proxy import FaultProxy
from tests.support.shelver import REPO, Shelver

OUT = REPO / "docs" / "dashboard.png"
STEP_SECONDS = 2
GRID_COLUMNS = 24
INCHES_PER_COLUMN = 0.75
INCHES_PER_ROW = 0.3  # Grafana's grid unit is 30 px high for a column of about 50 px
TITLE_INCHES = 0.5
MARGIN_INCHES = 0.35


@contextlib.contextmanager
def observed_day(run_dir: Path, books: int, quiet_seconds: float
                 ) -> Iterator[tuple[Prometheus, workday.Day]]:
    """Everything the dashboard test runs; Prometheus stays up for the queries."""
    with LocalStack(port=free_port(), data_dir=run_dir / "localstack") as localstack:
        deploy("local", localstack.port)
        aws_env = {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": localstack.endpoint}
        aws = Aws(aws_env)
        stack = aws.clone_stack(visibility_timeout=workday.VISIBILITY_TIMEOUT)
        with FaultProxy(localstack.endpoint) as s3_proxy:
            shelver = Shelver(env={**aws_env, **stack.shelver_env(),
                                   "AWS_ENDPOINT_URL_S3": s3_proxy.url}, run_dir=run_dir)
            try:
                shelver.start().wait_healthy()
                with Prometheus(run_dir, [shelver.port]) as prometheus:
                    yield prometheus, workday.live_through(
                        aws, stack, shelver, s3_proxy, prometheus, outage_books=books // 20,
                        books=books, quiet_seconds=quiet_seconds)
            finally:
                shelver.stop()


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) \
        or ", ".join(f"{k}={v}" for k, v in labels.items())


def formatted(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"
    return f"{value:g}" if value == int(value) else f"{value:.2f}"


def draw_stat(ax: Axes, panel: dict[str, Any], answers: list[dashboard.Answer]) -> None:
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    if panel["options"].get("textMode") == "name":
        texts = [legend(a.query.legend, labels) for a in answers for labels, _ in a.series]
    else:
        texts = [formatted(points[-1][1], unit) for a in answers for _, points in a.series]
    text = " / ".join(texts) or panel["fieldConfig"]["defaults"].get("noValue", "-")
    ax.text(0.5, 0.42, text, ha="center", va="center", fontsize=15 if len(text) < 12 else 8,
            weight="bold", color="#1f7a3a", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def with_gaps(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Times and values with a NaN where steps are missing, so the line breaks there as
    Grafana's does (no data is not a straight line between two points)."""
    times: list[float] = []
    values: list[float] = []
    for t, v in points:
        if times and t - times[-1] > 1.5 * STEP_SECONDS:
            times.append(times[-1] + STEP_SECONDS)
            values.append(math.nan)
        times.append(t)
        values.append(v)
    return times, values


def draw_timeseries(ax: Axes, panel: dict[str, Any], answers: list[dashboard.Answer],
                    start: float) -> None:
    for answer in answers:
        for labels, points in sorted(answer.series, key=lambda s: sorted(s[0].items())):
            times, values = with_gaps(points)
            ax.plot([t - start for t in times], values, linewidth=1.2, marker="o",
                    markersize=1.5, label=legend(answer.query.legend, labels))
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    ax.set_ylabel({"s": "seconds", "ops": "per second", "reqps": "calls / s"}.get(unit, ""),
                  fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", ncol=3, frameon=False)


def draw(board: dict[str, Any], answers: list[dashboard.Answer], day: workday.Day) -> Figure:
    layout = [*board["panels"], *(p for row in board["panels"] for p in row.get("panels", []))]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in layout)
    width, height = GRID_COLUMNS * INCHES_PER_COLUMN, rows * INCHES_PER_ROW + TITLE_INCHES
    figure = Figure(figsize=(width, height))
    figure.suptitle(
        f"Shelver dashboard (deploy/grafana/shelver.json) drawn from its queries to a real "
        f"Prometheus: {day.end - day.start:.0f} s with an S3 outage, {day.books} books, "
        f"{day.poison} poison messages, a consumer killed (x axis: seconds)",
        fontsize=11, y=1 - 0.15 / height)
    by_panel: dict[str, list[dashboard.Answer]] = {}
    for answer in answers:
        by_panel.setdefault(answer.query.panel, []).append(answer)

    def box(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        """Grid units (from the top left) to figure fractions (from the bottom left)."""
        usable = width - 2 * MARGIN_INCHES
        left = MARGIN_INCHES + x / GRID_COLUMNS * usable
        top = TITLE_INCHES + y * INCHES_PER_ROW
        return (left / width, 1 - (top + h * INCHES_PER_ROW) / height,
                w / GRID_COLUMNS * usable / width, h * INCHES_PER_ROW / height)

    for panel in layout:
        grid = panel["gridPos"]
        if panel["type"] == "row":
            left, bottom, _, _ = box(grid["x"], grid["y"], grid["w"], grid["h"])
            figure.text(left, bottom, panel["title"], fontsize=12, weight="bold")
            continue
        # Room inside the panel's cell for its title above and tick labels below.
        ax = figure.add_axes(box(grid["x"] + 0.15, grid["y"] + 1.0, grid["w"] - 0.6,
                                 grid["h"] - 1.9))
        ax.set_title(panel["title"], fontsize=9, loc="left")
        if panel["type"] == "stat":
            draw_stat(ax, panel, by_panel.get(panel["title"], []))
        else:
            draw_timeseries(ax, panel, by_panel.get(panel["title"], []), day.start)
    return figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default {OUT})")
    parser.add_argument("--books", type=int, default=2000, help="books in the drain")
    parser.add_argument("--quiet-seconds", type=float, default=15,
                        help="idle time around the outage and the drain, to read the graphs")
    options = parser.parse_args(argv)
    board = dashboard.load()
    run_dir = Path(tempfile.mkdtemp(prefix="shelver-dashboard-"))
    print(f"dashboard-picture: work files in {run_dir}", flush=True)
    with observed_day(run_dir, options.books, options.quiet_seconds) as (prometheus, day):
        answers = dashboard.run(prometheus, dashboard.queries(board), day.start, day.end,
                                STEP_SECONDS)
    problems = [a.problem for a in answers if a.problem]
    draw(board, answers, day).savefig(options.out, dpi=80)
    print(f"dashboard-picture: {len(answers)} queries, {day.end - day.start:.0f} s of data, "
          f"written to {options.out}")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
