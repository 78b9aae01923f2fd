"""Serve botstate with waitress, configured from BOTSTATE_* (what `make run` starts)."""

import logging
import os
import shlex
import signal
import sys

from waitress.server import create_server

from app import create_app
from config import ConfigError

log = logging.getLogger("botstate")

# Waitress cuts off bodies past this many bytes beyond the app's own limit, so a
# body just over the limit still reaches the app and gets its JSON 413.
BODY_LIMIT_SLACK = 1024 * 1024


def make_server(app):
    """A waitress server for `app` with deliberate limits, not yet running."""
    config = app.config
    return create_server(
        app,
        host=config["HOST"],
        port=config["PORT"],
        threads=config["THREADS"],
        max_request_body_size=config["MAX_BODY_BYTES"] + BODY_LIMIT_SLACK,
        channel_timeout=config["CHANNEL_TIMEOUT"],
        connection_limit=config["CONNECTION_LIMIT"],
        ident="botstate",
    )


def create_bot_hint():
    """The exact command that creates a bot against the database this server uses."""
    prefix = ""
    if "BOTSTATE_DATABASE" in os.environ:
        prefix = f"BOTSTATE_DATABASE={shlex.quote(os.environ['BOTSTATE_DATABASE'])} "
    return f"{prefix}.venv/bin/flask bots create my-bot"


def main():
    """Start serving until interrupted or terminated."""
    try:
        app = create_app()
    except ConfigError as error:
        sys.exit(f"botstate: {error}")
    server = make_server(app)
    host, port = server.effective_host, server.effective_port
    url_host = f"[{host}]" if ":" in host else host
    log.info(
        "botstate listening on http://%s:%s (database %s, %s threads)",
        url_host,
        port,
        app.config["DATABASE"],
        app.config["THREADS"],
    )
    if app.extensions["botstate.storage"].count_bots() == 0:
        log.info("No bot exists yet. Create one with: %s", create_bot_hint())
    # SIGTERM (systemd, docker, kill) stops like Ctrl-C: waitress closes its sockets.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        server.run()
    except KeyboardInterrupt:
        log.info("botstate stopping")
    finally:
        server.close()
        app.extensions["botstate.storage"].close()


if __name__ == "__main__":
    main()
