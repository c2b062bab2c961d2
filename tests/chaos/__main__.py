"""The full-size chaos suite: every scenario, then the soak, and one table of figures.

    python -m tests.chaos                          # what `make chaos` runs
    python -m tests.chaos --scenarios deploy,poison --books 500
    python -m tests.chaos --soak 0                 # no soak
    python -m tests.chaos --endpoint http://127.0.0.1:4566   # reuse a deployed emulator

Without --endpoint it starts its own LocalStack on a free loopback port and deploys
serverless.yml into it, as the test session does. Exits 1 if any invariant broke.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from scripts.emulator import FAKE_AWS_ENV, LocalStack, deploy, free_port
from tests.chaos.engine import FULL, REDUCED, Row, Size, run_scenario, table
from tests.chaos.scenarios import BY_NAME, SCENARIOS, SOAK
from tests.support.aws import Aws

SOAK_BOOKS = 20_000
# The soak's consumers must hold steady: RSS may grow this much past its warmed-up value.
SOAK_GROWTH_LIMIT_MIB = 30.0

def soak_report(row: Row) -> str:
    """RSS of the consumers at start, warmed up (10% done) and at the end; a problem if the
    end is more than SOAK_GROWTH_LIMIT_MIB above the warmed-up value."""
    samples = row.samples
    if not samples:
        row.problems.append("no RSS sample was taken")
        return "soak: no RSS sample"

    def largest(sample: dict[str, Any]) -> float:
        return max(sample["rss"], default=0.0)

    warm = next((s for s in samples if s["progress"] >= 0.1), samples[0])
    start, end = samples[0], samples[-1]
    peak = max(largest(s) for s in samples)
    if largest(end) - largest(warm) > SOAK_GROWTH_LIMIT_MIB:
        row.problems.append(f"consumer RSS grew from {largest(warm):.1f} MiB (warm) to "
                            f"{largest(end):.1f} MiB")
    return (f"soak: {row.sent} messages; largest consumer RSS {largest(start):.1f} MiB at start, "
            f"{largest(warm):.1f} MiB warmed up (10% done), {largest(end):.1f} MiB at the end, "
            f"peak {peak:.1f} MiB; every consumer at the end: {end['rss']} MiB "
            f"({len(samples)} samples)")


@contextlib.contextmanager
def emulator(endpoint: str | None, work: Path) -> Iterator[dict[str, str]]:
    if endpoint:
        yield {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": endpoint}
        return
    with LocalStack(port=free_port(), data_dir=work / "localstack") as localstack:
        deploy("local", localstack.port)
        yield {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": localstack.endpoint}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS),
                        help="comma-separated names (default: all): "
                             + ", ".join(s.name for s in SCENARIOS))
    parser.add_argument("--books", type=int, default=None,
                        help=f"messages per scenario (default {FULL.messages}; "
                             f"--reduced: {REDUCED.messages})")
    parser.add_argument("--soak", type=int, default=SOAK_BOOKS,
                        help=f"messages in the soak, 0 for none (default {SOAK_BOOKS})")
    parser.add_argument("--reduced", action="store_true", help="CI sizes (as `make test`)")
    parser.add_argument("--endpoint", help="use this emulator (serverless.yml deployed)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME or n == SOAK.name]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    size: Size = REDUCED if args.reduced else FULL
    if args.books:
        size = replace(size, messages=args.books)

    work = Path(tempfile.mkdtemp(prefix="shelver-chaos-"))
    print(f"chaos: {len(names)} scenario(s) of {size.messages} messages over {size.groups} "
          f"groups{f', soak of {args.soak}' if args.soak else ''}; logs in {work}", flush=True)
    rows: list[Row] = []
    soak_line = ""
    started = time.monotonic()
    with emulator(args.endpoint, work) as aws_env:
        aws = Aws(aws_env)
        for name in names:
            try:
                row = run_scenario(aws, aws_env, work, BY_NAME[name], size)
            except Exception:  # one broken run must not cost the table of the others
                row = Row(name, problems=[f"the run failed: {traceback.format_exc()}"])
            rows.append(row)
            print(f"  {name}: {len(row.problems)} problem(s), {row.wall_seconds:.0f} s",
                  flush=True)
        if args.soak:
            soak_size = replace(size, messages=args.soak, send_seconds=args.soak / 200,
                                drain_timeout=max(size.drain_timeout, args.soak / 10))
            row = run_scenario(aws, aws_env, work, SOAK, soak_size)
            soak_line = soak_report(row)
            rows.append(row)

    print()
    print(table(rows))
    if soak_line:
        print()
        print(soak_line)
    for row in rows:
        for note in row.notes:
            print(f"note: {row.scenario}: {note}")
    problems = [(row.scenario, p) for row in rows for p in row.problems]
    for scenario, problem in problems:
        print(f"PROBLEM: {scenario}: {problem}")
    print(f"\n{len(rows)} run(s) in {time.monotonic() - started:.0f} s on {os.cpu_count()} "
          f"CPU(s), {platform.platform()}; LocalStack in host mode; logs in {work}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
