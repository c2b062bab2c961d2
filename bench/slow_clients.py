"""`python -m bench.slow_clients` (`make bench-slow-clients`): do the probes get through while
slow or idle clients hold connections to the port?

A real `gunicorn -c gunicorn.conf.py` with Shelver's defaults (its own LocalStack, started here
on a free loopback port with serverless.yml deployed, so /health is 200 as in production), then:

  quiet     `--probes` probes with nothing else connected: the reference figures.
  attacked  `--connections` connections held open the whole time, in three kinds taking turns:
            idle (connect, send nothing), partial (half a request: the request line and one
            header, never the blank line that ends them) and trickle (one more header line every
            `--trickle-seconds`, a slowloris). A connection the server closes is opened again at
            once, so the count stays up. Once all are open, the same probes again.

A probe is what the kubelet does: a new connection, `GET /health` or `GET /health/live` (taking
turns), one answer, close; `--probe-timeout` (the manifests' timeoutSeconds, 5 s) bounds it. A
probe fails when it gets no HTTP answer in time. Printed per phase and path: probes, failures,
latency p50/p99/max of the answered ones, and the answers' statuses; then how often the server
closed an attacking connection. `--set NAME=VALUE` passes a variable to the Shelver (e.g.
`--set GUNICORN_CMD_ARGS=--threads=64` to try a gunicorn setting), `--json` the figures as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import itertools
import json
import selectors
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from bench.measure import BenchError, Percentiles
from bench.run import emulator
from tests.support.aws import Aws
from tests.support.shelver import Shelver

PROBE_PATHS = ("/health", "/health/live")
DEFAULT_CONNECTIONS = 500
DEFAULT_PROBES = 200
PROBE_INTERVAL_SECONDS = 0.05
PROBE_TIMEOUT_SECONDS = 5.0  # deploy/kubernetes: every probe's timeoutSeconds
TRICKLE_SECONDS = 5.0
REQUEST_LINE = b"GET /health HTTP/1.1\r\nHost: shelver\r\n"


class Kind(Enum):
    IDLE = "idle"
    PARTIAL = "partial"
    TRICKLE = "trickle"


@dataclass
class Attacker:
    """Keeps `count` connections to the port open, of each kind in turn, until stopped."""

    port: int
    count: int
    trickle_seconds: float = TRICKLE_SECONDS
    closed_by_server: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    def start(self, timeout: float = 120) -> Attacker:
        self._thread = threading.Thread(target=self._guarded, name="attacker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise BenchError(f"could not open {self.count} connections in {timeout:.0f} s")
        if self.error is not None:
            raise BenchError(f"attacker failed: {self.error!r}")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by start() or by the caller's check
            self.error = exc
            self._ready.set()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        next_trickle: dict[socket.socket, float] = {}

        def open_one(kind: Kind) -> None:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            if kind is not Kind.IDLE:
                sock.sendall(REQUEST_LINE)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, kind)
            if kind is Kind.TRICKLE:
                next_trickle[sock] = time.monotonic() + self.trickle_seconds

        try:
            for kind in itertools.islice(itertools.cycle(Kind), self.count):
                open_one(kind)
            self._ready.set()
            header = itertools.count()
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    # Readable: the server answered (an error) or closed; either way this one
                    # no longer holds anything: open another of its kind.
                    closed = key.fileobj
                    assert isinstance(closed, socket.socket)
                    with contextlib.suppress(OSError):
                        closed.recv(65536)
                    selector.unregister(closed)
                    next_trickle.pop(closed, None)
                    closed.close()
                    self.closed_by_server[key.data.value] += 1
                    open_one(key.data)
                now = time.monotonic()
                for sock, due in list(next_trickle.items()):
                    if due <= now:
                        with contextlib.suppress(OSError):  # closed: seen as readable next
                            sock.send(b"X-Trickle-%d: 1\r\n" % next(header))
                        next_trickle[sock] = now + self.trickle_seconds
        finally:
            for key in list(selector.get_map().values()):
                assert isinstance(key.fileobj, socket.socket)
                key.fileobj.close()
            selector.close()


@dataclass(frozen=True)
class ProbeResult:
    path: str
    seconds: float
    status: int  # 0: no HTTP answer within the timeout


def probe(port: int, path: str, timeout: float) -> ProbeResult:
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        answer.read()
        status = answer.status
    except OSError:
        status = 0
    finally:
        connection.close()
    return ProbeResult(path, time.monotonic() - started, status)


def run_probes(port: int, count: int, timeout: float) -> list[ProbeResult]:
    results = []
    for path in itertools.islice(itertools.cycle(PROBE_PATHS), count):
        result = probe(port, path, timeout)
        results.append(result)
        time.sleep(max(0.0, PROBE_INTERVAL_SECONDS - result.seconds))
    return results


@dataclass(frozen=True)
class PathFigures:
    probes: int
    failures: int
    latency: Percentiles  # of the answered probes
    statuses: dict[str, int]


def figures(results: list[ProbeResult]) -> dict[str, PathFigures]:
    by_path = {}
    for path in PROBE_PATHS:
        mine = [r for r in results if r.path == path]
        answered = [r.seconds for r in mine if r.status]
        by_path[path] = PathFigures(
            probes=len(mine), failures=len(mine) - len(answered),
            latency=Percentiles.of(answered),
            statuses=dict(sorted(Counter(str(r.status or "none") for r in mine).items())))
    return by_path


@contextlib.contextmanager
def shelver(overrides: dict[str, str], run_dir: Path) -> Iterator[Shelver]:
    with emulator(run_dir) as (aws_env, _), Aws(aws_env).cloned_stack() as stack:
        # Shelver's own defaults (defaults={}), as a pod runs it.
        instance = Shelver(env={**aws_env, **stack.shelver_env(), **overrides},
                           run_dir=run_dir, defaults={}).start()
        try:
            instance.wait_healthy(timeout=120)
            yield instance
        finally:
            instance.stop()


def http_workers_rss_mib(instance: Shelver) -> float:
    """Summed RSS of the Shelver's HTTP workers: what holding the connections costs them."""
    return sum(_rss_kib(pid) for pid, role in instance.roles().items()
               if role == "http worker") / 1024


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measure(args: argparse.Namespace) -> dict[str, object]:
    overrides = dict(item.split("=", 1) for item in args.set)
    with tempfile.TemporaryDirectory(prefix="slow-clients-") as tmp, \
            shelver(overrides, Path(tmp)) as instance:
        quiet = run_probes(instance.port, args.probes, args.probe_timeout)
        rss = {"quiet": http_workers_rss_mib(instance)}
        attacker = Attacker(instance.port, args.connections, args.trickle_seconds).start()
        try:
            time.sleep(args.settle)  # let the server take every connection in
            attacked = run_probes(instance.port, args.probes, args.probe_timeout)
            rss["attacked"] = http_workers_rss_mib(instance)
        finally:
            attacker.stop()
        if attacker.error is not None:
            raise BenchError(f"attacker failed: {attacker.error!r}")
        return {
            "settings": overrides,
            "connections": args.connections,
            "quiet": figures(quiet),
            "attacked": figures(attacked),
            "closed_by_server": dict(attacker.closed_by_server),
            "http_workers_rss_mib": rss,
        }


def _table(report: dict[str, object]) -> str:
    lines = [f"{'phase':9} {'path':13} {'probes':>6} {'failed':>6} {'p50 ms':>8} "
             f"{'p99 ms':>8} {'max ms':>8}  statuses"]
    for phase in ("quiet", "attacked"):
        by_path = report[phase]
        assert isinstance(by_path, dict)
        for path, f in by_path.items():
            lines.append(f"{phase:9} {path:13} {f.probes:>6} {f.failures:>6} "
                         f"{f.latency.p50_ms:>8.1f} {f.latency.p99_ms:>8.1f} "
                         f"{f.latency.max_ms:>8.1f}  {f.statuses}")
    lines.append(f"attacking connections: {report['connections']} (idle, partial and trickle "
                 f"in turn); closed by the server and reopened: {report['closed_by_server']}")
    rss = report["http_workers_rss_mib"]
    assert isinstance(rss, dict)
    lines.append(f"HTTP workers' RSS, summed: {rss['quiet']:.1f} MiB quiet, "
                 f"{rss['attacked']:.1f} MiB attacked")
    return "\n".join(lines)


def _jsonable(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS,
                        help=f"slow connections held open (default {DEFAULT_CONNECTIONS})")
    parser.add_argument("--probes", type=int, default=DEFAULT_PROBES,
                        help=f"probes per phase, both paths in turn (default {DEFAULT_PROBES})")
    parser.add_argument("--probe-timeout", type=float, default=PROBE_TIMEOUT_SECONDS,
                        help=f"seconds a probe waits (default {PROBE_TIMEOUT_SECONDS:g})")
    parser.add_argument("--trickle-seconds", type=float, default=TRICKLE_SECONDS,
                        help=f"a trickle connection's pace (default {TRICKLE_SECONDS:g})")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds between opening the connections and probing (default 2)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the Shelver (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = measure(args)
    print(json.dumps(_jsonable(report), indent=2) if args.json else _table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
