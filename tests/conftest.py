import collections
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import keys
from keys import generate_key, hash_key
from app import create_app
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, TICKER_MSFT

ROOT = Path(__file__).resolve().parent.parent

# What the reliability tests did, counted once their checks passed; printed at the end of the run.
RELIABILITY = collections.Counter()


def pytest_terminal_summary(terminalreporter):
    """Print the reliability figures of this run (README, Reliability, quotes them)."""
    if RELIABILITY:
        figures = ", ".join(f"{what}: {count:,}" for what, count in sorted(RELIABILITY.items()))
        terminalreporter.write_line(f"reliability figures (checks passed): {figures}")
LISTENING = re.compile(r"listening on (http://\S+)")


@pytest.fixture
def app(tmp_path):
    app = create_app({"DATABASE": str(tmp_path / "botstate.db")})
    yield app
    app.extensions["botstate.storage"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def storage(app):
    return app.extensions["botstate.storage"]


@pytest.fixture
def bot(storage):
    """A bot 'my-bot' and its plaintext key, as `flask bots create` makes them."""
    api_key = keys.generate_key()
    created = storage.create_bot("my-bot", "My bot", keys.hash_key(api_key))
    return {"id": created["id"], "slug": "my-bot", "apiKey": api_key, "keyHash": keys.hash_key(api_key)}


@pytest.fixture
def configured(tmp_path):
    """Factory: (client, bot, storage) of an app with extra settings, its bot 'b' and the spec's first ids."""
    storages = []

    def make(**settings):
        app = create_app({"DATABASE": str(tmp_path / f"db{len(storages)}.sqlite"), **settings})
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


def stored_rows(path, bot_id):
    """(account, ticker) -> (version, state JSON), and PRAGMA integrity_check, read with plain sqlite3."""
    conn = sqlite3.connect(path)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = conn.execute(
            "SELECT user_broker_account_id, ticker_id, version, state FROM user_bot_states WHERE bot_id = ?",
            (bot_id,),
        ).fetchall()
    finally:
        conn.close()
    return {(a, t): (version, state) for a, t, version, state in rows}, integrity


def botstate_env(**settings):
    """This process's environment with only the given BOTSTATE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTSTATE_")}
    env.update({f"BOTSTATE_{k}": str(v) for k, v in settings.items()})
    return env


def run_botstate(args, **settings):
    """Run `python ARGS` in the repo root with only the given BOTSTATE_* settings; the finished process."""
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=botstate_env(**settings), capture_output=True, text=True, timeout=60
    )


def start_server(database, log_path=None, **settings):
    """Start `python serve.py` on a free loopback port; returns (process, base URL, log path).

    The log goes to `log_path`, by default beside the database.
    """
    env = botstate_env(**{"DATABASE": database, "PORT": 0, "HOST": "127.0.0.1", **settings})
    log_path = Path(str(database) + ".log") if log_path is None else Path(log_path)
    log_file = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "serve.py"], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
    )
    log_file.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = LISTENING.search(log_path.read_text())
        if match:
            return process, match.group(1), log_path
        if process.poll() is not None:
            break
        time.sleep(0.05)
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
def live_server(tmp_path, storage):
    """A real waitress server (serve.py) on the same database file as `storage`."""
    process, base_url, log_path = start_server(storage.path)
    server = type("LiveServer", (), {"url": base_url, "log_path": log_path, "process": process})
    yield server
    stop_server(process)
