"""`shelver`: the operator's command, with the service's own settings (environment variables and
SHELVER_CONFIG_FILE, see workers/settings.py) and the standard AWS configuration, or the local
emulator with `--local` (workers/cli/target.py).

Exit codes: 0 done, 1 failed (an AWS error or a failed check: one line on stderr, no traceback),
2 bad arguments, 3 invalid settings (as the service), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys

from workers.aws.preflight import check_environment
from workers.cli import check, dlq, send, shelf, target
from workers.cli.session import AWS_ERRORS, CommandError, Session
from workers.settings import ConfigError, Settings

EXIT_FAILED = 1
EXIT_CONFIG = 3
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelver", description="Operate Shelver: its dead-letter queue, a preflight check, "
                                    "sample books, the books stored. Uses the service's settings.")
    target.add_arguments(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dlq.add_parser(commands)
    check.add_parser(commands)
    send.add_parser(commands)
    shelf.add_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        target.apply(args, os.environ)
        settings = Settings.from_env()
        check_environment(settings)  # as the service does at start
    except ConfigError as exc:
        print(f"shelver: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    session = Session(settings)
    try:
        code: int = args.run(args, session)
    except AWS_ERRORS as exc:
        print(f"shelver: {session.describe(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except CommandError as exc:
        print(f"shelver: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\nshelver: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`shelver dlq peek | head`): not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code
