"""Shelver's HTTP side: a Flask app served by gunicorn's request workers."""

from service.app import create_app

__all__ = ["create_app"]
