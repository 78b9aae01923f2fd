import collections
import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
from flask.testing import FlaskCliRunner
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, TICKER_MSFT
from zygote import Zygote, forkable

import botstate
import keys
from app import create_app
from backends.sqlite import SQLiteStorage
from keys import generate_key, hash_key
from operations import admin_keys

ROOT = Path(__file__).resolve().parent.parent

# What the reliability tests did, counted once their checks passed; printed at the end of the run.
RELIABILITY = collections.Counter()


def pytest_sessionfinish(session):
    """On a pytest-xdist worker: hand this worker's figures to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["reliability"] = dict(RELIABILITY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """On the pytest-xdist controller: add each worker's figures to the run's."""
    RELIABILITY.update(getattr(node, "workeroutput", {}).get("reliability", {}))


def pytest_terminal_summary(terminalreporter):
    """Print the reliability figures of this run (docs/reliability.md quotes them)."""
    if RELIABILITY:
        figures = ", ".join(f"{what}: {count:,}" for what, count in sorted(RELIABILITY.items()))
        terminalreporter.write_line(f"reliability figures (checks passed): {figures}")


LISTENING = re.compile(r"listening on (http://\S+)")

# A PostgreSQL server that tests may create databases on: `make test-pg` starts a
# throwaway one and sets this (its superuser, over a unix socket).
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "")
NO_POSTGRES = "PostgreSQL tests need a server: `make test-pg` starts a throwaway one and runs them"

# Every test that uses a database runs once per backend.
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql"),
]


# For tests of what only PostgreSQL does: the backend fixture's PostgreSQL run alone (skipped without a server).
POSTGRES_ONLY = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

# For tests whose answer does not depend on the backend (CLI arguments, help and output that no row
# changes, the OpenAPI document): the backend fixture's SQLite run alone, under `make test-pg` too.
BACKEND_INDEPENDENT = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only(why): the test is about SQLite itself; not run on PostgreSQL")


def pytest_collection_modifyitems(config, items):
    """Leave out the PostgreSQL runs of tests about SQLite itself (files, WAL, PRAGMAs)."""
    kept, dropped = [], []
    for item in items:
        on_postgres = getattr(item, "callspec", None) and item.callspec.params.get("backend") == "postgresql"
        (dropped if on_postgres and item.get_closest_marker("sqlite_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Give every PostgreSQL run skipped for want of a server the same place, so -ra sums them in one line."""
    report = (yield).get_result()
    if report.skipped and isinstance(report.longrepr, tuple) and report.longrepr[2].endswith(NO_POSTGRES):
        report.longrepr = (
            str(Path(__file__).relative_to(ROOT)),
            backend.__wrapped__.__code__.co_firstlineno,
            report.longrepr[2],
        )


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The database backend under test: "sqlite" or "postgresql"."""
    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    return request.param


def _postgres_url(dbname):
    return urllib.parse.urlsplit(POSTGRES_URL)._replace(path=f"/{dbname}").geturl()


def _postgres_admin():
    import psycopg  # only where a PostgreSQL server is there to test

    return psycopg.connect(POSTGRES_URL, autocommit=True)


@pytest.fixture
def new_database(backend, tmp_path):
    """Factory: the settings (DATABASE or DATABASE_URL) of a new, empty database of the backend."""
    created = []

    def make():
        if backend == "sqlite":
            name = "botstate.db" if not created else f"db{len(created)}.sqlite"
            created.append(name)
            return {"DATABASE": str(tmp_path / name)}
        name = f"botstate_test_{uuid.uuid4().hex[:16]}"
        with _postgres_admin() as admin:
            admin.execute(f"CREATE DATABASE {name}")
        created.append(name)
        return {"DATABASE_URL": _postgres_url(name)}

    yield make
    if backend == "postgresql" and created:
        with _postgres_admin() as admin:
            for name in created:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database(new_database):
    """The settings of the test's database (see new_database)."""
    return new_database()


@pytest.fixture
def app(database):
    app = create_app(dict(database))
    yield app
    app.extensions["botstate.storage"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    """`botstate ARGS` in this process, on the test's app."""
    return BotstateCliRunner(app)


class BotstateCliRunner(FlaskCliRunner):
    """Flask's CLI runner, with the botstate command instead of `flask`."""

    def invoke(self, cli=None, args=None, **kwargs):
        """Run `botstate ARGS` (or `cli`), the app given to the commands as `flask` would give it."""
        return super().invoke(cli or botstate.main, args, **kwargs)


@pytest.fixture
def storage(app):
    return app.extensions["botstate.storage"]


@pytest.fixture
def bot(storage):
    """A bot 'my-bot' and its plaintext key, as `botstate bots create` makes them."""
    api_key = keys.generate_key()
    created = storage.create_bot("my-bot", "My bot", keys.hash_key(api_key))
    return {"id": created["id"], "slug": "my-bot", "apiKey": api_key, "keyHash": keys.hash_key(api_key)}


@pytest.fixture
def configured(new_database):
    """Factory: (client, bot, storage) of an app with extra settings, its bot 'b' and the spec's first ids."""
    storages = []

    def make(**settings):
        app = create_app({**new_database(), **settings})
        storage = app.extensions["botstate.storage"]
        storages.append(storage)
        key = generate_key()
        storage.create_bot("b", "b", hash_key(key))
        storage.add_account(ACCOUNT_0, None)
        storage.add_ticker("AAPL", TICKER_AAPL)
        return app.test_client(), {"slug": "b", "apiKey": key}, storage

    yield make
    for storage in storages:
        storage.close()


@pytest.fixture
def registered(storage):
    """The accounts and tickers that the spec's successful examples name."""
    for account_id in (ACCOUNT_0, ACCOUNT_1):
        storage.add_account(account_id, None)
    storage.add_ticker("AAPL", TICKER_AAPL)
    storage.add_ticker("MSFT", TICKER_MSFT)


def register_ids(storage, accounts, tickers, symbol_prefix="T"):
    """Register accounts and tickers (symbols prefix0, prefix1, ...)."""
    for account in accounts:
        storage.add_account(account, None)
    for index, ticker in enumerate(tickers):
        storage.add_ticker(f"{symbol_prefix}{index}", ticker)


def run_in_threads(work, threads, timeout):
    """Run work(0) .. work(threads - 1), each in a thread of its own, and wait for them."""
    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=timeout)


def stored_rows(database, bot_id):
    """(account, ticker) -> (version, state JSON), and the database's own soundness check
    ("ok" when sound), read with the backend's own driver, not through botstate.

    `database` is a SQLite file's path or the settings of a `database` fixture.
    """
    if not isinstance(database, dict):
        database = {"DATABASE": database}
    rows = execute_sql(
        database,
        "SELECT user_broker_account_id, ticker_id, version, CAST(state AS TEXT) FROM user_bot_states WHERE bot_id = ?",
        (bot_id,),
    )
    if "DATABASE" in database:
        [(integrity,)] = execute_sql(database, "PRAGMA integrity_check")
    else:  # PostgreSQL has no integrity_check: its unique (bot, account, ticker) index must be valid
        [(valid,)] = execute_sql(
            database, "SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid = 'user_bot_states'::regclass"
        )
        integrity = "ok" if valid else "an index of user_bot_states is not valid"
    return {(str(a), str(t)): (version, state) for a, t, version, state in rows}, integrity


def execute_sql(database, sql, params=()):
    """Run one SQL statement on a `database` fixture's database with its own driver,
    not through botstate; returns its rows. Placeholders are `?`."""
    if "DATABASE_URL" in database:
        import psycopg

        with psycopg.connect(database["DATABASE_URL"], autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), params or None)
            return cursor.fetchall() if cursor.description else []
    with contextlib.closing(sqlite3.connect(database["DATABASE"])) as conn, conn:
        conn.execute("PRAGMA foreign_keys = ON")
        return conn.execute(sql, params).fetchall()


@contextlib.contextmanager
def holding_write_lock(database):
    """Hold, from another connection, the lock that every state write needs, until the block ends."""
    if "DATABASE_URL" in database:
        import psycopg

        with psycopg.connect(database["DATABASE_URL"]) as holder:  # its transaction ends with the block
            holder.execute("LOCK TABLE user_bot_states, bot_keys IN EXCLUSIVE MODE")
            yield
            holder.rollback()
        return
    holder = sqlite3.connect(database["DATABASE"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def settings_of(storage):
    """The database settings (as the `database` fixture gives them) of a storage object."""
    return {"DATABASE_URL": storage.url} if storage.dialect.name == "postgresql" else {"DATABASE": storage.path}


def stored_bytes(database):
    """Every byte of a SQLite database's files (WAL and SHM too), or every row of a PostgreSQL one as text."""
    if "DATABASE" in database:
        files = [Path(database["DATABASE"] + suffix) for suffix in ("", "-wal", "-shm")]
        return b"".join(path.read_bytes() for path in files if path.exists())
    tables = ("bots", "bot_keys", "accounts", "tickers", "user_bot_states", "botstate_migrations")
    return "".join(repr(execute_sql(database, f"SELECT * FROM {table}")) for table in tables).encode()


def told_the_database(stderr, location):
    """`stderr` after its first line, once that line names the database `location` (what a command not printing
    --json says first)."""
    first, _, rest = stderr.partition("\n")
    assert first == f"botstate: database {location}", stderr
    return rest


def initialized(path):
    """`path`, made a botstate SQLite database (as `botstate init-db` makes it): admin commands refuse a missing one."""
    storage = SQLiteStorage(str(path))
    storage.migrate()
    storage.close()
    return path


def botstate_env(**settings):
    """This process's environment with only the given BOTSTATE_* settings (and one worker process, unless given)."""
    settings.setdefault("WORKERS", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTSTATE_")}
    env.update({f"BOTSTATE_{k}": str(v) for k, v in settings.items()})
    return env


def run_botstate(args, **settings):
    """Run `python ARGS` in the repo root with only the given BOTSTATE_* settings; the finished process."""
    return run_python(args, botstate_env(**settings))


_ZYGOTE = []
_ZYGOTE_STARTING = threading.Lock()


def zygote():
    """This test process's zygote (tests/zygote.py), started on first use and again should it die."""
    with _ZYGOTE_STARTING:
        if not _ZYGOTE or not _ZYGOTE[-1].alive:
            _ZYGOTE.append(Zygote())
        return _ZYGOTE[-1]


def run_python(args, env, input=None, timeout=60, cwd=ROOT):
    """`python ARGS` in `cwd` (the repo root) to its end, as subprocess.run(capture_output=True, text=True) gives it.

    serve.py and the botstate and flask commands are forks of the zygote; anything else is a new interpreter.
    """
    if not forkable(args):
        return subprocess.run(
            [sys.executable, *args], cwd=cwd, env=env, input=input, capture_output=True, text=True, timeout=timeout
        )
    with tempfile.TemporaryDirectory(prefix="botstate-run-") as folder:
        stdin, stdout, stderr = (Path(folder, name) for name in ("stdin", "stdout", "stderr"))
        stdin.write_text(input or "")
        stdout.touch()
        stderr.touch()
        process = zygote().start(args, env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        return subprocess.CompletedProcess(
            [sys.executable, *args], process.returncode, stdout.read_text(), stderr.read_text()
        )


def start_python(args, env, log_path):
    """Start `python ARGS` in the repo root, its stdout and stderr to `log_path`; the running process."""
    if forkable(args):
        Path(log_path).write_text("")
        return zygote().start(args, env, stdout=log_path)
    with open(log_path, "w") as log_file:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)


def start_server(database, log_path=None, command=("serve.py",), env=None, **settings):
    """Start `python serve.py` (or `python COMMAND`) on a free loopback port; returns (process, base URL, log path).

    `database` is a SQLite file's path or the settings of a `database` fixture; `env`, other variables.
    The log goes to `log_path`, by default beside the SQLite file or in a temporary folder.
    """
    if not isinstance(database, dict):
        database = {"DATABASE": database}
    env = {**botstate_env(**{**database, "PORT": 0, "HOST": "127.0.0.1", **settings}), **(env or {})}
    if log_path is None:
        beside = database.get("DATABASE")
        log_path = Path(f"{beside}.log") if beside else Path(tempfile.mkdtemp(prefix="botstate-")) / "server.log"
    log_path = Path(log_path)
    process = start_python(list(command), env, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = LISTENING.search(log_path.read_text())
        if match:
            return process, match.group(1), log_path
        if process.poll() is not None:
            break
        time.sleep(0.01)  # about 200 servers start in a run: each look later than needed adds up
    process.kill()
    raise RuntimeError(f"server did not start:\n{log_path.read_text()}")


def stop_server(process):
    """SIGTERM the server and wait for it to exit."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def admin_key(storage):
    """The admin key 'platform', as `botstate admin-keys create platform` makes it."""
    return admin_keys.create_admin_key(storage, "platform")["adminKey"]


@pytest.fixture
def admin(live_server, admin_key):
    """(method, path under /api/admin, body=None) -> (status, JSON body) of the request to `live_server` with the
    admin key."""
    import requests

    def call(method, path, body=None):
        headers = {"Authorization": f"Bearer {admin_key}"}
        sent = {} if body is None else {"json" if isinstance(body, (dict, list)) else "data": body}
        response = requests.request(method, f"{live_server.url}/api/admin{path}", headers=headers, timeout=30, **sent)
        return response.status_code, response.json()

    return call


@pytest.fixture
def live_server(database, storage):
    """A real waitress server (serve.py) on the same database as `storage`."""
    process, base_url, log_path = start_server(database)
    server = type("LiveServer", (), {"url": base_url, "log_path": log_path, "process": process})
    yield server
    stop_server(process)
