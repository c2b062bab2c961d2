"""Shelver's HTTP side: a Flask app served by gunicorn's request workers.

`create_app` is imported on first use, so that `python -m service.probe` (the image's
HEALTHCHECK, run every few seconds) does not pay for importing Flask and boto3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from service.app import create_app

        return create_app
    raise AttributeError(f"module 'service' has no attribute {name!r}")
