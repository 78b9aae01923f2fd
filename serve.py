"""Serve botstate with waitress, configured from BOTSTATE_* (what `botstate serve` runs)."""

import gc
import logging
import os
import shlex
import shutil
import signal
import sys

import config
import connlimits
import supervisor
from app import create_app
from config import ConfigError
from logs import startup_line

log = logging.getLogger("botstate")

# Waitress cuts off bodies past this many bytes beyond the app's own limit, so a
# body just over the limit still reaches the app and gets its JSON 413.
BODY_LIMIT_SLACK = 1024 * 1024
# Container allocations (net) between two collections of the youngest generation.
GC_THRESHOLD = 50_000
# Connections the kernel queues for the workers to accept (waitress's default backlog).
LISTEN_BACKLOG = 1024


def make_server(app, sockets=()):
    """A waitress server for `app` with deliberate limits, not yet running: on `sockets` when given
    (bound by the parent of worker processes), else on the settings' host and port."""
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
    where = {"sockets": sockets} if sockets else {"host": config["HOST"], "port": config["PORT"]}
    return connlimits.create_server(
        app,
        deadlines,
        **where,
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


def cannot_listen(error, config):
    """The one-line exit for sockets that could not be bound, or None when `error` is not about that."""
    # The port is taken (OSError), or the host does not resolve: waitress raises
    # ValueError("Invalid host/port specified.") from the resolver's OSError.
    cause = error if isinstance(error, OSError) else error.__context__
    if not isinstance(cause, OSError):
        return None
    reason = cause.strerror or str(cause)
    return f"botstate: cannot listen on {config['HOST']}:{config['PORT']}: {reason}"


def start_upkeep(storage, leading=True):
    """Start the storage's background work, or exit in one line when the database refuses it."""
    try:
        storage.start_upkeep(leading=leading)
    except OSError as error:  # e.g. SQLite's serving marker, left by another user
        storage.close()
        sys.exit(f"botstate: cannot use the database {storage.location}: {error.filename}: {error.strerror}")


def announce(server_url, app, no_bots, workers=""):
    """Say the server is up (the line tests and people wait for), and how to make the first bot."""
    log_format = app.config["LOG_FORMAT"]
    location = app.extensions["botstate.storage"].location
    threads = app.config["THREADS"]
    threads_said = f"{threads} thread{'' if threads == 1 else 's'}"
    say(f"botstate listening on {server_url} (database {location}, {workers}{threads_said})", log_format)
    if no_bots:
        say(f"No bot exists yet. Create one with: {create_bot_hint()}", log_format)


def url_of(host, port):
    """http://host:port, with an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def main():
    """Start serving until interrupted or terminated: in this process, or in BOTSTATE_WORKERS worker processes."""
    lighten_log_records()
    try:
        # Known before the app exists: prometheus_client's multiprocess mode is chosen at its import.
        workers = config_workers()
    except ConfigError as error:
        sys.exit(f"botstate: {error.message}")
    if workers == 1:
        serve_alone(make_app())
        return
    signal.signal(signal.SIGTERM, stop_on_sigterm)  # until the supervisor's own handlers: stop, and clean up
    shared_dir = supervisor.make_shared_dir()
    try:
        code = serve_workers(make_app(), workers, shared_dir)
    except KeyboardInterrupt:  # stopped before any worker started
        code = 0
    finally:
        supervisor.remove_shared_dir(shared_dir)
    sys.exit(code)


def make_app():
    """The app, its database's schema brought up to date; one line and exit 1 when it cannot be made."""
    try:
        return create_app(upgrade=True)
    except ConfigError as error:
        sys.exit(f"botstate: {error.message}")


def config_workers():
    """BOTSTATE_WORKERS as the number of processes; ConfigError as create_app would raise it."""
    return config.workers_setting(os.environ.get(f"{config.ENV_PREFIX}_WORKERS", config.DEFAULTS["WORKERS"]))


def serve_alone(app):
    """Serve in this process until Ctrl-C or SIGTERM."""
    storage = app.extensions["botstate.storage"]
    try:
        server = make_server(app)
    except ConfigError as error:
        sys.exit(f"botstate: {error.message}")
    except (OSError, ValueError) as error:
        message = cannot_listen(error, app.config)
        if message is None:
            raise
        storage.close()
        sys.exit(message)
    no_bots = storage.count_bots() == 0
    try:
        start_upkeep(storage)
    except SystemExit:
        server.close()
        raise
    tune_garbage_collection()
    # From here on SIGTERM stops cleanly; only then say that the server is up.
    signal.signal(signal.SIGTERM, stop_once)  # a second SIGTERM or Ctrl-C leaves the drain its time
    signal.signal(signal.SIGINT, stop_once)
    try:
        announce(url_of(server.effective_host, server.effective_port), app, no_bots)
        # Returns on Ctrl-C or SIGTERM once the requests in flight are answered
        # (waitress gives them 5 s).
        server.run()
    except KeyboardInterrupt:  # before waitress's loop began
        pass
    finally:
        stopped = stop_serving(server, storage)
        say("botstate stopped", app.config["LOG_FORMAT"])
        if not stopped:
            supervisor.leave_now(0)  # threads still run: see stop_serving


def serve_workers(app, workers, shared_dir):
    """Bind the sockets, then serve from `workers` forked processes until SIGTERM; the exit code."""
    storage = app.extensions["botstate.storage"]
    no_bots = storage.count_bots() == 0
    storage.close()  # nothing of it may cross the fork: each worker opens its own
    try:
        sets = supervisor.bind_per_worker(app.config["HOST"], app.config["PORT"], LISTEN_BACKLOG, workers)
    except (OSError, ValueError) as error:
        message = cannot_listen(error, app.config)
        if message is None:
            raise
        sys.exit(message)
    host, port = sets[0][0].getsockname()[:2]
    every_socket = {sock for sockets in sets for sock in sockets}

    def run_worker(worker, ready):
        # A worker's slot keeps its sockets: what queued there while it was replaced waits for the next one.
        for sock in every_socket.difference(sets[worker.slot]):
            sock.close()
        return serve_worker(worker, sets[worker.slot], ready)

    def on_ready():
        announce(url_of(host, port), app, no_bots, workers=f"{workers} workers of ")

    supervising = supervisor.Supervisor(workers, shared_dir, run_worker, on_ready)
    try:
        return supervising.run()
    finally:
        for sock in every_socket:
            sock.close()
        if supervising.announced:
            say("botstate stopped", app.config["LOG_FORMAT"])


def stop_once(signum, frame):
    """The first SIGTERM or SIGINT stops the server or worker like Ctrl-C; later ones (a worker gets what the
    whole process group got from the supervisor too) are ignored, so that they never cut waitress's wait
    for the requests."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def serve_worker(worker, sockets, ready):
    """A worker process's life: its own app and storage, waitress on the inherited sockets, until SIGTERM."""
    signal.signal(signal.SIGTERM, stop_once)
    signal.signal(signal.SIGINT, stop_once)
    try:
        app = create_app(worker=worker)
        server = make_server(app, sockets)
    except ConfigError as error:
        sys.exit(f"botstate: {error.message}")
    except KeyboardInterrupt:  # SIGTERM while starting
        return 0
    storage = app.extensions["botstate.storage"]
    try:
        start_upkeep(storage, leading=worker.leading)
    except SystemExit:
        server.close()
        raise
    tune_garbage_collection()
    try:
        ready()
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        stop_serving(server, storage)  # what is left running ends with the process (supervisor._be_worker)
    return 0


def stop_serving(server, storage):
    """Close the server and the storage once every request thread has stopped (waitress gives them 5 s);
    False, closing nothing, when a request still runs: closed under it, SQLite's connection could crash
    the process, and the storage's close would wait for the write lock that request holds."""
    if server.task_dispatcher.shutdown():
        server.close()
        storage.close()
        return True
    log.warning(
        "stopping with %d request(s) still running: their connections are cut", len(server.task_dispatcher.threads)
    )
    return False


if __name__ == "__main__":
    main()
