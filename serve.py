"""Serve botstate with waitress, configured from BOTSTATE_* (what `botstate serve` runs)."""

import gc
import logging
import os
import shlex
import shutil
import signal
import sys

import connlimits
from app import create_app
from config import ConfigError
from logs import startup_line

log = logging.getLogger("botstate")

# Waitress cuts off bodies past this many bytes beyond the app's own limit, so a
# body just over the limit still reaches the app and gets its JSON 413.
BODY_LIMIT_SLACK = 1024 * 1024
# Container allocations (net) between two collections of the youngest generation.
GC_THRESHOLD = 50_000


def make_server(app):
    """A waitress server for `app` with deliberate limits, not yet running."""
    # Waitress warns once per request that waits for a free thread: under load that
    # is a line per request on stderr, saying only that the server is busy.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    config = app.config
    connection_limit = connlimits.file_limit_for(config["CONNECTION_LIMIT"])
    if connection_limit < config["CONNECTION_LIMIT"]:
        log.warning(
            "serving at most %d connections, not BOTSTATE_CONNECTION_LIMIT=%d: the open-file limit"
            " (ulimit -n, systemd LimitNOFILE=) is too low",
            connection_limit,
            config["CONNECTION_LIMIT"],
        )
    deadlines = connlimits.Deadlines(config["HEADER_TIMEOUT"], config["MIN_BODY_RATE"])
    return connlimits.create_server(
        app,
        deadlines,
        host=config["HOST"],
        port=config["PORT"],
        threads=config["THREADS"],
        # Waitress refuses a body of this many bytes or more itself; one up to
        # BODY_LIMIT_SLACK past the app's limit still reaches the app and gets its JSON 413.
        max_request_body_size=config["MAX_BODY_BYTES"] + BODY_LIMIT_SLACK + 1,
        channel_timeout=config["CHANNEL_TIMEOUT"],
        # The deadlines are checked at each cleanup: once a second. (Waitress's
        # default, 30 s, would also let an idle connection outlive its timeout by 30 s.)
        cleanup_interval=1,
        connection_limit=connection_limit,
        ident="botstate",
    )


def botstate_command():
    """The command that runs botstate as this process was started: `botstate`, its path, or the file."""
    program = sys.argv[0]
    if program.endswith(".pyz"):
        return f"python3 {shlex.quote(program)}"
    if os.path.basename(program) != "botstate":  # serve.py, or python -m botstate
        beside = os.path.join(os.path.dirname(sys.executable), "botstate")
        return shlex.quote(beside) if os.path.exists(beside) else "botstate"
    on_path = shutil.which("botstate")
    if on_path and os.path.samefile(on_path, program):
        return "botstate"
    return shlex.quote(program)


def create_bot_hint():
    """The exact command that creates a bot against the database this server uses."""
    prefix = ""
    if os.environ.get("BOTSTATE_DATABASE_URL", "").strip():
        prefix = "BOTSTATE_DATABASE_URL=<the same URL> "  # never print its password
    elif "BOTSTATE_DATABASE" in os.environ:
        prefix = f"BOTSTATE_DATABASE={shlex.quote(os.environ['BOTSTATE_DATABASE'])} "
    return f"{prefix}{botstate_command()} bots create my-bot"


def say(message, log_format="TEXT"):
    """Print a startup message on stderr, whatever the log level, in the log's format."""
    print(startup_line(message, log_format), file=sys.stderr, flush=True)


def stop_on_sigterm(signum, frame):
    """SIGTERM (systemd, kill) stops like Ctrl-C: waitress closes its sockets."""
    raise KeyboardInterrupt


def lighten_log_records():
    """Skip what every log record gathers and the log line never shows.

    The service logs a line per request; finding the calling frame and the
    thread and process names was a good part of its cost. (The Logging HOWTO's
    Optimization section names these switches.)
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def tune_garbage_collection():
    """Collect cyclic garbage far less often than CPython's default, and never scan start-up objects.

    A 1000-item body parses into tens of thousands of containers, none in a
    cycle, and the default (a collection per 700 of them) spent a tenth of such
    a request's time scanning. gc.freeze() puts what the app built at start-up,
    which lives as long as the process, out of every later collection.
    """
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 100)


def main():
    """Start serving until interrupted or terminated."""
    lighten_log_records()
    try:
        app = create_app(upgrade=True)
    except ConfigError as error:
        sys.exit(f"botstate: {error.message}")
    try:
        server = make_server(app)
    except ConfigError as error:
        sys.exit(f"botstate: {error.message}")
    except (OSError, ValueError) as error:
        # The port is taken (OSError), or the host does not resolve: waitress raises
        # ValueError("Invalid host/port specified.") from the resolver's OSError.
        cause = error if isinstance(error, OSError) else error.__context__
        if not isinstance(cause, OSError):
            raise
        reason = cause.strerror or str(cause)
        app.extensions["botstate.storage"].close()
        sys.exit(f"botstate: cannot listen on {app.config['HOST']}:{app.config['PORT']}: {reason}")
    storage = app.extensions["botstate.storage"]
    no_bots = storage.count_bots() == 0
    try:
        storage.start_upkeep()
    except OSError as error:  # e.g. SQLite's serving marker, left by another user
        server.close()
        storage.close()
        sys.exit(f"botstate: cannot use the database {storage.location}: {error.filename}: {error.strerror}")
    tune_garbage_collection()
    log_format = app.config["LOG_FORMAT"]
    # From here on SIGTERM stops cleanly; only then say that the server is up.
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        host, port = server.effective_host, server.effective_port
        url_host = f"[{host}]" if ":" in host else host
        say(
            f"botstate listening on http://{url_host}:{port}"
            f" (database {storage.location}, {app.config['THREADS']} threads)",
            log_format,
        )
        if no_bots:
            say(f"No bot exists yet. Create one with: {create_bot_hint()}", log_format)
        # Returns on Ctrl-C or SIGTERM once the requests in flight are answered
        # (waitress gives them 5 s).
        server.run()
    except KeyboardInterrupt:  # before waitress's loop began
        pass
    finally:
        server.close()
        storage.close()
        say("botstate stopped", log_format)


if __name__ == "__main__":
    main()
