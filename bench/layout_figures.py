"""`python -m bench.layout_figures [--tree DIR]`: how easy the code is to find one's way in.

Issue 15's proof, for the tree at DIR (default: this one; a checkout of an older commit works
too, `git worktree add /tmp/before <commit>`, as its code is run from DIR, not imported here):

  sizes   the longest functions and the largest modules of workers/ and service/, in lines
          (a function from its `def` to its last line, decorators aside; a module, every line),
          read with `ast`, and the number of modules in each package of workers/
  path    the repository files whose functions run while one message goes from receive to
          delete, with S3_CLIENT and SQS_CLIENT boto3 and then crt (the default)

`path` runs the tree's own consumer (`consumer_main`, as the pool spawns it) in a child process,
against moto's server on 127.0.0.1 (the CRT sends from C, so in-process moto would not do),
with one book on the queue. The child profiles every Python call of every thread
(`sys.setprofile`, `threading.setprofile`) and keeps those of functions in workers/ and
service/ from the call of `SqsTransport.receive` that returned the book to the return of
`SqsTransport.delete`, with the loop's functions already running then (the frames above that
receive). Three counts: every file run by the consumer's main and processing threads; the same
without the loop's own steps (`LOOP_STEPS`: what every turn of the loop runs, a message or
none); and the files not run on an idle turn (a receive that found nothing, to the next). The
keeper thread (which extends held messages every second, not on the message's path) is listed
apart. Callbacks the CRT makes from its own threads are not seen (those threads are started in
C, without the profile hook); they are defined in the CRT modules the calling threads list.

moto's server answers the CRT's conditional put of a new key with 412 (after writing it), so
with the CRT clients the store also takes its path for a taken key here (HeadObject, then a put
If-Match): `object_head` in the S3 module is run for that alone.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("workers", "service")
CLIENTS = ("boto3", "crt")
PARTS = ("sizes", "path")
REGION = "us-east-1"
QUEUE = "InputQueue.fifo"
DLQ = "InputDLQ.fifo"
BUCKETS = {"scifi": "scifi-books", "romance": "romance-books"}
# Two books: the first warms the consumer up (a bucket's region looked up, the CRT's connections
# made, once per process), the second is the one followed.
BOOKS = tuple(
    f'{{"id": "{book_id}", "title": "{title}", "author": "{author}", "year": "{year}", '
    f'"genre": "scifi", "version": 1}}'
    for book_id, title, author, year in (("978-0441013593", "Dune", "Frank Herbert", 1965),
                                         ("978-0553283686", "Hyperion", "Dan Simmons", 1989)))
CHILD_TIMEOUT_SECONDS = 120.0
# The keeper's thread name in both layouts: listed apart, as it is not on a message's path.
KEEPER_THREAD = "keeper"
# Modules (by stem, the same in both layouts) whose functions the consumer's loop runs on every
# turn, a message or none: the stop and wake-up flags, the breaker, the queue depth sample, the
# status file and heartbeat, a metric, and the process's entry point (on the stack throughout).
LOOP_STEPS = frozenset({"signals", "breaker", "queue_depth", "status", "metrics", "process"})


# -- sizes ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Size:
    lines: int
    where: str  # path, or path:qualified name


def python_files(tree: Path) -> Iterator[Path]:
    for root in ROOTS:
        yield from sorted((tree / root).rglob("*.py"))


def functions(path: Path, tree: Path) -> Iterator[Size]:
    """Every function and method of a module, nested ones included, with its qualified name."""
    relative = path.relative_to(tree)

    def walk(node: ast.AST, prefix: str) -> Iterator[Size]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    end = child.end_lineno or child.lineno
                    yield Size(end - child.lineno + 1, f"{relative}:{name}")
                yield from walk(child, f"{name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(ast.parse(path.read_text(), str(path)), "")


def sizes(tree: Path, top: int = 3) -> str:
    files = list(python_files(tree))
    modules = sorted((Size(len(p.read_text().splitlines()), str(p.relative_to(tree)))
                      for p in files), key=lambda s: -s.lines)
    funcs = sorted((f for p in files for f in functions(p, tree)), key=lambda s: -s.lines)
    packages: dict[str, int] = defaultdict(int)
    for path in (tree / "workers").rglob("*.py"):
        packages[str(path.parent.relative_to(tree))] += 1
    lines = [f"sizes of {', '.join(f'{r}/' for r in ROOTS)} in {tree}:",
             "  longest functions (lines):"]
    lines += [f"    {s.lines:4d}  {s.where}" for s in funcs[:top]]
    lines += ["  largest modules (lines):"]
    lines += [f"    {s.lines:4d}  {s.where}" for s in modules[:top]]
    lines += ["  modules (.py files, __init__ included) per package of workers/:"]
    lines += [f"    {count:4d}  {name}/" for name, count in sorted(packages.items())]
    return "\n".join(lines)


# -- path -----------------------------------------------------------------------------------------

def path_of_one_message(tree: Path, client: str) -> dict[str, dict[str, dict[str, list[str]]]]:
    """{"path" or "idle": {thread kind: {file: [functions]}}}, through `tree`'s consumer."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        aws = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION,
               "AWS_DEFAULT_REGION": REGION}
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                region_name=REGION)
        sqs = session.client("sqs", endpoint_url=endpoint)
        s3 = session.client("s3", endpoint_url=endpoint)
        fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
        dlq_url = sqs.create_queue(QueueName=DLQ, Attributes=fifo)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(
            QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})
        url = sqs.create_queue(QueueName=QUEUE,
                               Attributes={**fifo, "RedrivePolicy": redrive})["QueueUrl"]
        for bucket in BUCKETS.values():
            s3.create_bucket(Bucket=bucket)
        sqs.send_message(QueueUrl=url, MessageBody=BOOKS[0], MessageGroupId="g")
        with tempfile.TemporaryDirectory(prefix="shelver-layout-") as work:
            state, prom, out = Path(work, "state"), Path(work, "prom"), Path(work, "path.json")
            state.mkdir()
            prom.mkdir()
            env = {key: value for key, value in os.environ.items()
                   if not key.startswith(("AWS_", "SHELVER_"))}
            env.update(aws, PYTHONPATH=str(tree), SHELVER_STATE_DIR=str(state),
                       PROMETHEUS_MULTIPROC_DIR=str(prom), INPUT_QUEUE=QUEUE,
                       GENRE_BUCKETS=",".join(f"{g}={b}" for g, b in BUCKETS.items()),
                       CONSUMERS="1", CONSUMER_THREADS="4", WAIT_TIME_SECONDS="1",
                       S3_CLIENT=client, SQS_CLIENT=client, LOG_LEVEL="WARNING")
            subprocess.run([sys.executable, __file__, "--child", str(out), "--send", url],
                           cwd=tree, env=env,
                           check=True, timeout=CHILD_TIMEOUT_SECONDS)
            found: dict[str, dict[str, dict[str, list[str]]]] = json.loads(out.read_text())
        left = s3.list_objects_v2(Bucket=BUCKETS["scifi"]).get("KeyCount", 0)
        if left != len(BOOKS):
            raise SystemExit(f"expected {len(BOOKS)} books in {BUCKETS['scifi']}, found {left}")
        return found
    finally:
        server.stop()


def _child(out: Path, queue_url: str) -> None:
    """In the child, run from the tree: the consumer, profiled. The parent's book warms it up;
    then one idle turn of its loop (a receive that found nothing, to the next receive) is
    recorded, the second book sent, and its path recorded up to its delete."""
    import signal

    import boto3

    tree = Path.cwd().resolve()
    mine = tuple(f"{tree}/{root}/" for root in ROOTS)
    try:
        from workers.consumer.process import ConsumerSpec, consumer_main
    except ImportError:  # the flat layout, before issue 15
        from workers.consumer import ConsumerSpec, consumer_main  # type: ignore[attr-defined,no-redef]
    from workers.settings import Settings

    calls: list[tuple[str, str, str]] = []  # (thread, file, function), in order
    # Indexes into `calls`: the last receive's call, the idle turn, the followed message's path.
    marks = {"receive": -1, "receive_warm": 0, "idle": -1, "idle_end": -1, "start": -1,
             "deleted": 0}
    warm, idle, done = threading.Event(), threading.Event(), threading.Event()

    def record(frame: FrameType) -> None:
        calls.append((threading.current_thread().name, frame.f_code.co_filename,
                      frame.f_code.co_qualname))

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if done.is_set() or event not in ("call", "return"):
            return
        if not frame.f_code.co_filename.startswith(mine):
            return
        name = frame.f_code.co_qualname
        if event == "call":
            if name == "SqsTransport.receive":
                if warm.is_set() and marks["idle"] >= 0 and not idle.is_set():
                    marks["idle_end"] = len(calls)
                    idle.set()
                marks["receive"] = len(calls)
                # An idle turn starts with a receive called after the warm-up's delete: one
                # called before may return nothing while that message is still processed.
                marks["receive_warm"] = int(warm.is_set())
                # The callers already running (the loop itself) are on the path too.
                outer = frame.f_back
                while outer is not None:
                    if outer.f_code.co_filename.startswith(mine):
                        record(outer)
                    outer = outer.f_back
            record(frame)
        elif name == "SqsTransport.receive":
            if arg and marks["start"] < 0:
                marks["start"] = marks["receive"]
            elif not arg and marks["receive_warm"] and marks["idle"] < 0:
                marks["idle"] = marks["receive"]
        elif name == "SqsTransport.delete" and marks["start"] >= 0:
            marks["deleted"] += 1
            if marks["deleted"] < len(BOOKS):
                marks["start"] = -1
                warm.set()
            else:
                done.set()

    def files(first: int, last: int) -> dict[str, dict[str, list[str]]]:
        found: dict[str, dict[str, list[str]]] = defaultdict(dict)
        for thread, filename, name in calls[first:last]:
            kind = ("keeper" if thread == KEEPER_THREAD else
                    "main" if thread == "MainThread" else "processing")
            names = found[kind].setdefault(str(Path(filename).relative_to(tree)), [])
            if name not in names:
                names.append(name)
        return found

    def report() -> None:
        warm.wait()
        idle.wait()
        boto3.client("sqs").send_message(QueueUrl=queue_url, MessageBody=BOOKS[1],
                                         MessageGroupId="g")
        done.wait()
        out.write_text(json.dumps({"path": files(marks["start"], len(calls)),
                                   "idle": files(marks["idle"], marks["idle_end"])}))
        os.kill(os.getpid(), signal.SIGTERM)  # the consumer's stop: it exits once it drained

    spec = ConsumerSpec(slot=0, restarts=0, settings=Settings.from_env(),
                        parent_pid=os.getppid(), token="layout")
    threading.Thread(target=report, name="layout-report", daemon=True).start()
    threading.setprofile(profile)
    sys.setprofile(profile)
    consumer_main(spec)


def path_table(tree: Path) -> str:
    lines = [f"files run from receive to delete, one message, in {tree}:"]
    for client in CLIENTS:
        found = path_of_one_message(tree, client)
        threads = ("main", "processing")
        path = sorted({f for kind in threads for f in found["path"].get(kind, {})})
        keeper = sorted(set(found["path"].get(KEEPER_THREAD, {})) - set(path))
        idle = {f for kind in threads for f in found["idle"].get(kind, {})}
        on_idle = [f for f in path if f in idle]
        steps = [f for f in path if Path(f).stem in LOOP_STEPS]
        lines.append(f"  S3_CLIENT={client} SQS_CLIENT={client}: {len(path)} files in the "
                     f"consumer's main and processing threads; {len(path) - len(steps)} without "
                     f"the loop's own steps ({', '.join(steps)}); {len(path) - len(on_idle)} not "
                     f"run on an idle turn of the loop (*: run on an idle turn too)"
                     + (f"; {len(keeper)} more run only by the keeper" if keeper else ""))
        for name in path:
            functions = [f for kind in threads for f in found["path"].get(kind, {}).get(name, [])]
            lines.append(f"   {'*' if name in idle else ' '}{name}: "
                         f"{', '.join(dict.fromkeys(functions))}")
        lines += [f"    (keeper) {name}" for name in keeper]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="*", metavar="sizes|path",
                        help="what to measure (default: both)")
    parser.add_argument("--tree", type=Path, default=REPO,
                        help="the repository tree to measure (default: this one)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--send", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child, args.send)
        return 0
    unknown = set(args.what) - set(PARTS)
    if unknown:
        parser.error(f"unknown part {', '.join(sorted(unknown))}: expected sizes or path")
    tree = args.tree.resolve()
    for what in args.what or PARTS:
        print(sizes(tree) if what == "sizes" else path_table(tree), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
