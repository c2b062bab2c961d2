"""Fault injection for one e2e test, in every process of a Shelver started with this directory
on PYTHONPATH (the interpreter imports `sitecustomize` as it starts, spawned consumers too).

It makes one consumer thread raise an exception nothing expects, once, where a bug would:
SHELVER_TEST_FAULT names the place, "keeper" (`HeldMessages.extend_due`, once messages are
held) or "settle" (`Consumer._settle_batch`); the process that raises first creates the file
SHELVER_TEST_FAULT_MARKER, so that its replacement runs clean. Nothing of Shelver is imported
here: the module is patched when the process imports it itself, from wherever its sys.path
leads (the venv's editable install may point at another checkout).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_PLACES = {
    "keeper": ("workers.lease.held", "HeldMessages", "extend_due"),
    "settle": ("workers.consumer.loop", "Consumer", "_settle_batch"),
}


def _first_time() -> bool:
    try:
        os.close(os.open(os.environ["SHELVER_TEST_FAULT_MARKER"],
                         os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _patch(module: ModuleType, place: str, class_name: str, method: str) -> None:
    cls = getattr(module, class_name)
    original = getattr(cls, method)

    def faulty(self: Any, *args: Any, **kwargs: Any) -> Any:
        # The keeper runs all the time: only while it holds messages is its death a test.
        if (place != "keeper" or len(self)) and _first_time():
            raise ValueError(f"{class_name}.{method}: injected by the test")
        return original(self, *args, **kwargs)

    setattr(cls, method, faulty)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def __init__(self, place: str) -> None:
        self.place = place
        self.module, self.class_name, self.method = _PLACES[place]

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name != self.module:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            _patch(module, self.place, self.class_name, self.method)

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


if os.environ.get("SHELVER_TEST_FAULT") in _PLACES:
    sys.meta_path.insert(0, _PatchOnImport(os.environ["SHELVER_TEST_FAULT"]))
