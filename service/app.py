"""Flask application factory: `/`, `/health`, `/health/live`, `/metrics`.

No route calls AWS: they read the status files the consumers and the pool write and the
Prometheus multiprocess files, so they answer in milliseconds however busy the consumers are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from flask import Flask, Response, current_app
from werkzeug.exceptions import HTTPException

from service.health import health_report, liveness_report, wake_idle_consumers
from service.metrics_view import render_metrics
from service.status_metrics import StatusCollector
from workers.settings import Settings


def json_response(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


# Set in each HTTP worker by gunicorn.conf.py (post_fork), before the app is built.
_worker_settings: Settings | None = None


def use_settings(settings: Settings) -> None:
    """Make `create_app` use these settings instead of reading them (see gunicorn.conf.py)."""
    global _worker_settings
    _worker_settings = settings


def _settings() -> Settings:
    settings: Settings = current_app.config["SHELVER_SETTINGS"]
    return settings


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; `config` may carry SHELVER_SETTINGS (tests), else they are those given to
    `use_settings`, else they come from the environment."""
    app = Flask("shelver")
    app.config.update(config or {})
    if "SHELVER_SETTINGS" not in app.config:
        app.config["SHELVER_SETTINGS"] = _worker_settings or Settings.from_env()

    @app.route("/", methods=["GET", "POST"])
    def trigger() -> Response:
        return json_response(wake_idle_consumers(_settings()), 202)

    @app.get("/health")
    def health() -> Response:
        status, body = health_report(_settings())
        return json_response(body, status)

    @app.get("/health/live")
    def live() -> Response:
        status, body = liveness_report(_settings())
        return json_response(body, status)

    @app.get("/metrics")
    def metrics() -> Response:
        payload, content_type = render_metrics(StatusCollector(_settings()))
        return Response(payload, content_type=content_type)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        response = json_response({"error": error.name, "status": error.code}, error.code or 500)
        if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return response

    return app
