"""A health probe for the container's HEALTHCHECK, where there is no curl.

    python -m service.probe [PATH]        # default /health/live; exit 0 on 200, 1 otherwise

It asks this container's own gunicorn, at the address BIND names (a wildcard address is asked
on loopback), and prints the answer's first line, which engines keep in their health log.
Standard library only, and no import of the app: it runs every few seconds.
"""

from __future__ import annotations

import http.client
import os
import sys

DEFAULT_PATH = "/health/live"
DEFAULT_BIND = "127.0.0.1:8000"
TIMEOUT_SECONDS = 4.0
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def probe_address(bind: str) -> tuple[str, int]:
    """Host and port to dial for gunicorn's BIND (its first address, if several)."""
    first = bind.split(",")[0].strip()
    if first.startswith(("unix:", "fd://")):
        raise ValueError(f"BIND={bind!r}: the probe needs a TCP address")
    host, sep, port = first.rpartition(":")
    if not sep:  # gunicorn takes a bare host as port 8000
        host, port = first, "8000"
    host = _WILDCARDS.get(host, host)
    return host.strip("[]"), int(port)


def check(path: str = DEFAULT_PATH, bind: str | None = None) -> tuple[bool, str]:
    """(healthy, one line saying what was seen)."""
    host, port = probe_address(bind if bind is not None else
                               os.environ.get("BIND", DEFAULT_BIND))
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        body = answer.read(200).decode(errors="replace").splitlines()
    except OSError as exc:
        return False, f"GET http://{host}:{port}{path}: {exc}"
    finally:
        connection.close()
    return answer.status == 200, f"{answer.status} {body[0] if body else ''}".strip()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    healthy, line = check(args[0] if args else DEFAULT_PATH)
    print(line)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
