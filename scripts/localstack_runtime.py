"""LocalStack's runtime (`python -m localstack.runtime.main`) with two fixes: its SQS FIFO model,
and its gateway's listening address.

Runs in LocalStack's own venv (.venv-localstack, Python 3.13), started by scripts/emulator.py and
by compose.yaml's LocalStack image; it imports nothing of Shelver. Each fix first checks that the
line it is for is still in LocalStack's source, and refuses to start otherwise: a fix that may be
wrong or unneeded must be looked at again, not applied blindly to another version.

## The FIFO model

The defect (localstack-core 2026.3.0, `localstack/services/sqs/models.py`, `FifoQueue`): SQS
hands a FIFO message group to one receiver at a time. LocalStack tracks that in
`inflight_groups`, but `receive` adds a group it has just taken off `message_group_queue` to that
set *outside* the queue's mutex. When several previously received messages of one group become
visible in one locked step (a `ChangeMessageVisibilityBatch` to 0, or their visibility timeouts
running out together), the first makes the group visible and wakes a long-polling receiver,
which marks the group in flight without waiting for the mutex; the next message of the batch
then finds the group "in flight", makes it visible again and wakes a second receiver; and so on.
Each receiver then takes its share of the group: the group is processed by several consumers at
once, out of order. `tests/e2e/test_emulator.py` reproduces it: a group's ten messages made
visible by one batch call while six receivers long-poll for three messages each; without this
fix, two to five receivers got messages of the group in 15 of 20 trials (and the test fails),
with it exactly one, every time.

Shelver hands a dead consumer's messages back exactly that way (workers/lease/handback.py), and the
chaos suite's consumer-kills scenario caught the emulator at it: one book version never written,
because a later one of its group had been stored first by another consumer. On SQS that cannot
happen. The suites must test Shelver against SQS's contract, not against this race, so the fix
takes the queue's mutex for that one `add`: the receiver then waits until the batch (or the
requeue of expired messages) is done, and the group goes to one receiver, as on SQS.

LocalStack issue 12457 (open) reports another of its FIFO visibility deviations.

## The gateway's address

`GATEWAY_LISTEN=127.0.0.1:4566` sets the port, but LocalStack's default gateway server (twisted,
`localstack/runtime/server/twisted.py`) drops the host of an IPv4 entry: it listens with
`TCP4ServerEndpoint(reactor, port)`, whose interface defaults to every address (its own comment
there: "TODO: interface = host?"). `ss -ltn` showed 0.0.0.0:4566: an unauthenticated AWS
emulator open to the network the machine is on. IPv6 entries get their host; the hypercorn
server (`GATEWAY_SERVER=hypercorn`) binds what it is given too. The fix hands each IPv4 entry's
host to its endpoint, so the gateway listens where GATEWAY_LISTEN says: 127.0.0.1 for
scripts/emulator.py, every address inside compose's container (its image's GATEWAY_LISTEN is
0.0.0.0:4566; compose publishes it on the host's 127.0.0.1 only). `tests/e2e/test_emulator.py`
and `tests/local/test_run.py` check the listening sockets.
"""

from __future__ import annotations

import inspect
import runpy
import threading
from collections.abc import Iterator
from typing import Any

from localstack import config
from localstack.runtime.server import twisted as twisted_server
from localstack.services.sqs import models
from twisted.internet import endpoints

# The line the fix is for: if LocalStack's receive no longer has it, the fix may be wrong or
# unneeded, and starting anyway would test against an emulator nobody looked at.
UNLOCKED_ADD = "self.inflight_groups.add(group)"


class InflightGroups(set):  # type: ignore[type-arg]
    """`FifoQueue.inflight_groups` whose `add` holds the queue's mutex (an RLock, so the calls
    LocalStack makes while holding it are unaffected)."""

    def __init__(self, mutex: threading.RLock, groups: set[Any]) -> None:
        super().__init__(groups)
        self._mutex = mutex

    def add(self, group: Any) -> None:
        with self._mutex:
            super().add(group)


def install_fifo_fix() -> None:
    receive = inspect.getsource(models.FifoQueue.receive)
    if UNLOCKED_ADD not in receive:
        raise SystemExit(f"scripts/localstack_runtime.py: LocalStack's FifoQueue.receive no longer "
                         f"contains {UNLOCKED_ADD!r}: review the FIFO fix against this version")
    original_init = models.FifoQueue.__init__

    def __init__(self: models.FifoQueue, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.inflight_groups = InflightGroups(self.mutex, self.inflight_groups)

    models.FifoQueue.__init__ = __init__


# The line of TwistedRuntimeServer.register that listens on every address.
UNBOUND_LISTEN = "endpoints.TCP4ServerEndpoint(reactor, host_and_port.port)"


class BoundEndpoints:
    """twisted's `endpoints` module as `TwistedRuntimeServer.register` sees it, but for
    `TCP4ServerEndpoint`, which binds the host of the IPv4 entry of GATEWAY_LISTEN it is made
    for (`register` makes them in the entries' order)."""

    def __init__(self, ipv4_hosts: Iterator[str]) -> None:
        self._hosts = ipv4_hosts

    def __getattr__(self, name: str) -> Any:
        return getattr(endpoints, name)

    def TCP4ServerEndpoint(self, reactor: Any, port: int, *args: Any,
                           **kwargs: Any) -> endpoints.TCP4ServerEndpoint:
        kwargs.setdefault("interface", next(self._hosts))
        return endpoints.TCP4ServerEndpoint(reactor, port, *args, **kwargs)


def install_listen_fix() -> None:
    register = inspect.getsource(twisted_server.TwistedRuntimeServer.register)
    if UNBOUND_LISTEN not in register:
        raise SystemExit(f"scripts/localstack_runtime.py: LocalStack's TwistedRuntimeServer."
                         f"register no longer contains {UNBOUND_LISTEN!r}: review the listen fix "
                         "against this version")
    original_register = twisted_server.TwistedRuntimeServer.register

    def register_bound(self: twisted_server.TwistedRuntimeServer, gateway: Any,
                       listen: list[config.HostAndPort], *args: Any, **kwargs: Any) -> None:
        hosts = iter([entry.host for entry in listen if not config.is_ipv6_address(entry.host)])
        twisted_server.endpoints = BoundEndpoints(hosts)
        try:
            original_register(self, gateway, listen, *args, **kwargs)
        finally:
            twisted_server.endpoints = endpoints

    twisted_server.TwistedRuntimeServer.register = register_bound


if __name__ == "__main__":
    install_fifo_fix()
    install_listen_fix()
    runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
