"""The botstate app factory: settings, storage, the API blueprint, errors, logs and the CLI."""

import logging
import os
import time

from flask import Flask, g, request
from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, RequestRedirect

import config
import metrics
import ratelimit
from admin_api import bp as admin_blueprint
from api import bp as api_blueprint
from catalog_api import bp as catalog_blueprint
from changes_api import bp as changes_blueprint
from cli import register_commands
from errors import register_error_handlers
from idempotency import Running
from jsoncodec import JSONProvider
from logs import configure_logging, log_request
from openapi import bp as openapi_blueprint
from schemas import StateUpdatesSchema
from storage import StorageError, open_storage

log = logging.getLogger("botstate")


class ExactMap(Map):
    """URL rules that match the path as sent: `//` is not merged into `/`, defaults never redirect."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"merge_slashes": False, "redirect_defaults": False, **kwargs})


class BotstateFlask(Flask):
    """Flask with the order-preserving, strict JSON provider and routing that never redirects."""

    json_provider_class = JSONProvider
    url_map_class = ExactMap

    def ensure_sync(self, func):
        """Every view and hook of botstate is a plain function: Flask's check for a coroutine, made
        for each of them at each request, is skipped."""
        return func

    def raise_routing_exception(self, request):
        """Raise the request's routing error, with a 404 for any redirect werkzeug would answer."""
        # A redirect is HTML, skips the error handlers, and its Location is built from the client's Host.
        if isinstance(request.routing_exception, RequestRedirect):
            raise NotFound()
        super().raise_routing_exception(request)


def default_database(app):
    """The SQLite file used when BOTSTATE_DATABASE is unset: in a checkout, its instance folder;
    installed (pip, pipx, the single file), the user's data folder, which no upgrade replaces."""
    root = app.root_path
    if os.path.isfile(os.path.join(root, "pyproject.toml")) and os.path.isfile(os.path.join(root, "Makefile")):
        return os.path.join(app.instance_path, "botstate.db")
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "botstate", "botstate.db")


def create_app(test_config=None, upgrade=False, existing_only=False, worker=None):
    """Build the app: defaults, then BOTSTATE_* environment, then `test_config`.

    A new database gets the schema. An older one is upgraded only with `upgrade`
    (the server's start, `botstate init-db`): other commands refuse it, so that a
    new CLI never changes the schema under an older server still running on it.
    With `existing_only` (the admin commands), a SQLite file that does not exist is
    refused instead of created: it is not the database any server reads.
    A `worker` (supervisor.Worker) is one of several processes serving the port:
    its rate limit and metrics count in files the workers share.
    """
    app = BotstateFlask(__name__, instance_relative_config=True)
    app.config.from_mapping(config.DEFAULTS)
    app.config["DATABASE"] = default_database(app)
    unknown_settings = config.from_environ(app.config)
    if test_config is not None:
        app.config.from_mapping(test_config)
    config.check(app.config)
    # Flask refuses bodies past this with a 413, which errors.py words as JSON.
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_BODY_BYTES"]

    if existing_only and not app.config.get("DATABASE_URL") and not os.path.exists(app.config["DATABASE"]):
        raise config.ConfigError(
            f"the database {app.config['DATABASE']} does not exist: set BOTSTATE_DATABASE (or --env-file FILE)"
            " to the service's database, or run `botstate init-db` to create it there"
        )
    configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    for name in unknown_settings:
        log.warning("ignoring %s: not a botstate setting (see docs/configuration.md)", name)
    storage = open_storage(app.config)
    if worker is None:
        _prepare_database(app, storage, upgrade)
    else:
        # The supervisor prepared it before the first worker. A worker started later, in place of one
        # that died, must neither fail nor create a database that is gone: it answers 503 until it is back.
        app.extensions["botstate.outdated"] = app.extensions["botstate.migrated"] = []
    app.extensions["botstate.storage"] = storage
    app.extensions["botstate.worker"] = worker
    app.extensions["botstate.idempotency"] = Running(None if worker is None else worker.running_keys)
    app.extensions["botstate.updates_schema"] = StateUpdatesSchema(
        max_states=app.config["MAX_STATES"], max_depth=app.config["MAX_STATE_DEPTH"]
    )

    app.register_blueprint(api_blueprint)
    app.register_blueprint(changes_blueprint)
    app.register_blueprint(catalog_blueprint)
    app.register_blueprint(admin_blueprint)
    app.register_blueprint(openapi_blueprint)
    register_error_handlers(app)
    app.before_request(_start_timer)
    app.after_request(_log_request)
    ratelimit.init_app(app)  # after the timer, so a request's logged time includes the limiter's hooks
    metrics.init_app(app)
    register_commands(app)
    return app


def _prepare_database(app, storage, upgrade):
    """Create or upgrade the schema as `upgrade` allows, and check that the database can be written."""
    try:
        outdated = [] if upgrade else storage.outdated_migrations()
        app.extensions["botstate.outdated"] = outdated
        app.extensions["botstate.migrated"] = [] if outdated else storage.migrate()
        storage.check_writable()
    except (StorageError, OSError) as error:
        storage.close()
        raise config.ConfigError(f"cannot use the database {storage.location}: {error}") from error


def _start_timer():
    g.started = time.perf_counter()


def _printable(text, limit=200):
    # Paths are client-controlled: escape control characters so one request is one log line.
    return text[:limit].encode("unicode_escape").decode("ascii")


def _log_request(response):
    """One line per request: method, path, status, duration, bot and item summary; never keys or bodies.

    The fields go in `request` for JSON logs; the text line made of them is the message.
    """
    noted, asked = g._get_current_object(), request._get_current_object()  # each proxy looked up once
    started = noted.get("started")
    duration_ms = (time.perf_counter() - started) * 1000 if started else 0.0
    fields = {
        "method": asked.method,
        "path": asked.path[:200],
        "status": response.status_code,
        "duration_ms": round(duration_ms, 1),
    }
    if "bot_slug" in noted:
        fields["bot"] = noted.bot_slug[:100]
    if "admin" in noted:
        fields["admin"] = noted.admin[:100]  # the admin key's name, never the key
    summary = noted.get("summary")
    if summary is not None:
        fields["summary"] = {**summary, "errors": dict(noted.failures)}
    if noted.get("replayed"):
        fields["replayed"] = True  # the answer kept for its Idempotency-Key
    log_request(log, _text_line(fields), fields)  # logs.JSONFormatter writes the fields
    return response


def _text_line(fields):
    """The text log line of a request's fields: `POST /path 200 1.2ms bot=... items=...`."""
    parts = [fields["method"], _printable(fields["path"]), str(fields["status"]), f"{fields['duration_ms']:.1f}ms"]
    if "bot" in fields:
        parts.append(f"bot={_printable(fields['bot'])}")
    if "admin" in fields:
        parts.append(f"admin={_printable(fields['admin'])}")
    summary = fields.get("summary")
    if summary is not None:
        parts.append(f"items={summary['total']} succeeded={summary['succeeded']} failed={summary['failed']}")
        parts.extend(f'"{error}"={count}' for error, count in summary["errors"].items())
    if fields.get("replayed"):
        parts.append("replayed")
    return " ".join(parts)
