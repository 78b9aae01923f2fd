"""`botstate db backup` and `restore`: a consistent copy of the live database, and putting one back."""

import itertools
import json
import sqlite3
import threading
import time

import pytest
import requests
from conftest import POSTGRES_ONLY, RELIABILITY, register_ids, run_botstate, start_server, stop_server, stored_rows
from spec_data import ACCOUNT_0, TICKER_AAPL, item

from backends.sqlite import SQLiteStorage

BOTSTATE = ["-m", "botstate"]
SQLITE_FILE = pytest.mark.sqlite_only("backups copy SQLite's file; on PostgreSQL they are pg_dump's job")
ACCOUNTS = [f"40000000-0000-4000-8000-00000000000{i}" for i in range(4)]
TICKERS = [f"50000000-0000-4000-8000-00000000000{i}" for i in range(3)]
KEYS = list(itertools.product(ACCOUNTS, TICKERS))


def flask(path, *args):
    """Run the real `botstate ARGS` on the SQLite file at `path`; the finished process."""
    return run_botstate([*BOTSTATE, *args], DATABASE=path)


@pytest.fixture
def serving(tmp_path, storage, bot):
    """A real server on the test's SQLite file, with accounts and tickers for KEYS."""
    register_ids(storage, ACCOUNTS, TICKERS, symbol_prefix="B")
    storage.close()
    process, url, _ = start_server(storage.path)
    yield storage.path, f"{url}/api/bots/my-bot/state", {"x-api-key": bot["apiKey"]}, bot
    stop_server(process)


def write_until(stop, url, headers, acknowledged, lock):
    """POST 5-item writes until `stop` is set; note each acknowledged version and when it was acknowledged."""
    session = requests.Session()
    for step in itertools.count():
        if stop.is_set():
            return
        states = [{"accountId": a, "tickerId": t, "state": {"step": step}} for a, t in KEYS[step % 3 :: 3][:5]]
        answer = session.post(url, json={"states": states}, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        now = time.monotonic()
        with lock:
            for result in answer.json()["results"]:
                acknowledged.append((now, (result["accountId"], result["tickerId"]), result["data"]["version"]))


@SQLITE_FILE
def test_a_backup_under_write_load_is_sound_and_holds_every_write_acknowledged_before_it(tmp_path, serving):
    path, url, headers, bot = serving
    stop, lock, acknowledged = threading.Event(), threading.Lock(), []
    writers = [threading.Thread(target=write_until, args=(stop, url, headers, acknowledged, lock)) for _ in range(3)]
    for writer in writers:
        writer.start()
    time.sleep(0.5)
    backup = tmp_path / "backup.db"
    # In this process, not through the CLI: its start-up takes longer than the
    # server's checkpoints, after which even a plain file copy would hold the writes.
    copier = SQLiteStorage(path)
    began = time.monotonic()
    copier.backup(str(backup))
    copier.close()
    time.sleep(0.3)  # writes go on after it too
    stop.set()
    for writer in writers:
        writer.join(timeout=30)
    rows, integrity = stored_rows(str(backup), bot["id"])
    assert integrity == "ok"
    before = [(key, version) for when, key, version in acknowledged if when < began]
    assert before and len(acknowledged) > len(before)  # written before, during and after
    for key, version in before:
        assert rows[key][0] >= version, key
    RELIABILITY["acknowledged writes checked in a backup"] += len(before)


@SQLITE_FILE
def test_the_cli_backup_reports_its_copy_and_never_overwrites(tmp_path, storage):
    done = flask(storage.path, "db", "backup", str(tmp_path / "new.db"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["bytes"] == (tmp_path / "new.db").stat().st_size > 0
    existing = tmp_path / "taken.db"
    existing.write_text("keep me")
    done = flask(storage.path, "db", "backup", str(existing))
    assert done.returncode == 1 and "exists" in done.stderr
    assert existing.read_text() == "keep me"


@SQLITE_FILE
def test_restore_is_refused_under_a_running_server_and_forced_with_a_warning(tmp_path, serving):
    path, url, headers, bot = serving
    row = f"{url}/{ACCOUNT_0}/{TICKER_AAPL}"
    register = flask(path, "accounts", "add", "--id", ACCOUNT_0)
    assert register.returncode == 0 and flask(path, "tickers", "add", "AAPL", "--id", TICKER_AAPL).returncode == 0
    assert requests.post(url, json={"states": [item(state={"v": "backed up"})]}, headers=headers).status_code == 200
    assert flask(path, "db", "backup", str(tmp_path / "b.db")).returncode == 0
    assert requests.post(url, json={"states": [item(state={"v": "later"})]}, headers=headers).status_code == 200

    refused = flask(path, "db", "restore", str(tmp_path / "b.db"))
    assert refused.returncode == 1 and "a botstate server is running on" in refused.stderr
    assert requests.get(row, headers=headers).json()["data"]["state"] == {"v": "later"}

    forced = flask(path, "db", "restore", str(tmp_path / "b.db"), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "Warning: restoring under a running server" in forced.stderr
    assert requests.get(row, headers=headers).json()["data"]["state"] == {"v": "backed up"}


@SQLITE_FILE
def test_restore_with_the_server_stopped_puts_the_backup_back(tmp_path, storage, bot, registered):
    backup = tmp_path / "empty.db"
    assert flask(storage.path, "db", "backup", str(backup)).returncode == 0
    storage.add_account("60000000-0000-4000-8000-000000000000", "after the backup")
    storage.close()
    done = flask(storage.path, "db", "restore", str(backup), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"restored": str(backup), "applied": []}
    assert "after the backup" not in [row["name"] for row in storage.list_accounts()]


@SQLITE_FILE
@pytest.mark.parametrize("content", (b"", b"not a database at all", None), ids=("empty", "text", "another sqlite file"))
def test_restore_refuses_what_is_not_a_botstate_backup(tmp_path, storage, bot, content):
    source = tmp_path / "other.db"
    if content is None:
        with sqlite3.connect(source) as other:
            other.execute("CREATE TABLE t (x)")
    else:
        source.write_bytes(content)
    storage.close()
    done = flask(storage.path, "db", "restore", str(source))
    assert done.returncode == 1 and "is not a botstate database" in done.stderr
    assert storage.get_bot("my-bot") is not None


@POSTGRES_ONLY
def test_backups_on_postgresql_point_to_its_own_tools(database, storage, tmp_path):
    done = run_botstate([*BOTSTATE, "db", "backup", str(tmp_path / "x.db")], **database)
    assert done.returncode == 1 and "pg_dump" in done.stderr
