"""Disk faults under a real server: a full disk, a read-only file or folder, a deleted folder.

Each fault answers 503 in the JSON envelope (never a 500), logs a line that names
the cause, and once it is gone the server serves again without a restart, with
every acknowledged write stored. The faults are the operating system's own: a
small tmpfs filled up, `chattr +i` (which stops writes through descriptors that
are already open, even root's), the folder moved or removed.
"""

import contextlib
import errno
import itertools
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time

import pytest
import requests
from conftest import RELIABILITY, register_ids, run_botstate, start_server, stop_server, stored_rows

import keys
from app import create_app
from version import VERSION

ACCOUNTS = [f"40000000-0000-4000-8000-00000000000{i}" for i in range(2)]
TICKERS = [f"50000000-0000-4000-8000-00000000000{i}" for i in range(3)]
KEYS = list(itertools.product(ACCOUNTS, TICKERS))
UNAVAILABLE = {"error": "Database is unavailable, retry later", "code": "SERVICE_UNAVAILABLE"}
WAIT_SECONDS = 30
# Enough per write that a full disk cannot absorb many of them in space SQLite already has.
PAD = "x" * 8000
# A filler that grows past this did not meet a full disk: the mount is not the small one.
FILL_LIMIT_BYTES = 64 * 1024 * 1024


def system(*command):
    """Run a system command (chattr, mount, umount); the finished process."""
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def first_line(text):
    return (text.strip().splitlines() or [""])[0]


class Immutable:
    """Files and folders made immutable, and made mutable again."""

    def __init__(self):
        self.paths = []

    def set(self, *paths):
        """`chattr +i` each path."""
        for path in paths:
            result = system("chattr", "+i", str(path))
            assert result.returncode == 0, result.stderr
            self.paths.append(path)

    def clear(self):
        """`chattr -i` every path set so far."""
        while self.paths:
            system("chattr", "-i", str(self.paths.pop()))


@pytest.fixture
def immutable(tmp_path):
    """`chattr +i` for paths, undone at teardown; skips where it needs rights the tests lack or stops nothing."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    probe = tmp_path / "probe"
    descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT)
    try:
        marked = system("chattr", "+i", str(probe))
        if marked.returncode != 0:
            pytest.skip(f"chattr +i needs root and a filesystem that has it: {first_line(marked.stderr)}")
        try:
            os.write(descriptor, b"x")
            stops_writes = False
        except PermissionError:
            stops_writes = True
        finally:
            system("chattr", "-i", str(probe))
    finally:
        os.close(descriptor)
    if not stops_writes:
        pytest.skip("chattr +i does not stop writes to open files on this filesystem")
    marker = Immutable()
    yield marker
    marker.clear()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs mounted for the test and unmounted after it; skips where mounting needs rights the tests lack."""
    if shutil.which("mount") is None:
        pytest.skip("mount is not installed")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = system("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {first_line(mounted.stderr)}")
    yield mount_point
    if system("umount", str(mount_point)).returncode != 0:
        system("umount", "-l", str(mount_point))


@pytest.fixture
def database(tmp_path):
    """Where the database goes, in a folder of its own."""
    return tmp_path / "data" / "botstate.db"


@pytest.fixture
def log_path(tmp_path):
    """The server's log, off the database's folder and disk, which the faults take away."""
    return tmp_path / "server.log"


def fill(folder):
    """Write a file into `folder` until its disk is full; returns its path."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for _ in range(FILL_LIMIT_BYTES // len(chunk)):
            try:
                os.write(descriptor, chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                return filler
    finally:
        os.close(descriptor)
    pytest.fail(f"{folder} took {FILL_LIMIT_BYTES} bytes without filling up")


def seed(database):
    """Create the database with a bot and the accounts and tickers of KEYS; returns (API key, bot id)."""
    database.parent.mkdir(exist_ok=True)
    storage = create_app({"DATABASE": str(database)}).extensions["botstate.storage"]
    api_key = keys.generate_key()
    bot = storage.create_bot("disk-bot", "disk-bot", keys.hash_key(api_key))
    register_ids(storage, ACCOUNTS, TICKERS, symbol_prefix="D")
    storage.close()
    return api_key, bot["id"]


@contextlib.contextmanager
def served_bot(database, log_path):
    """A real server (serve.py) on a new `database`, logging to `log_path`, and its Bot with a row for each key."""
    api_key, bot_id = seed(database)
    process, url, _ = start_server(database, log_path=log_path)
    try:
        bot = Bot(url, api_key, bot_id)
        assert bot.write(KEYS, {"before": "the fault"}) == 200
        yield bot
    finally:
        stop_server(process)


def check_answer(response):
    """Under a disk fault an answer is what it would be anyway, or the 503 envelope with Retry-After."""
    assert "Traceback" not in response.text
    if response.status_code == 503:
        assert response.json() == UNAVAILABLE
        assert response.headers["Retry-After"] == "1"
    else:
        assert response.status_code in (200, 404), response.text


class Bot:
    """The bot's client of the live server, noting what each acknowledged write stored:
    (account, ticker) -> (version, state), or None once deleted."""

    def __init__(self, url, api_key, bot_id):
        self.url = url
        self.bot_id = bot_id
        self.session = requests.Session()
        self.session.headers["x-api-key"] = api_key
        self.acknowledged = {}

    def request(self, method, path, **kwargs):
        response = self.session.request(method, f"{self.url}{path}", timeout=30, **kwargs)
        check_answer(response)
        return response

    def write(self, pairs, state, method="POST"):
        """POST (or PATCH) `state` for each (account, ticker); the status."""
        states = [{"accountId": a, "tickerId": t, "state": state} for a, t in pairs]
        response = self.request(method, "/api/bots/disk-bot/state", json={"states": states})
        if response.status_code == 200:
            for pair, result in zip(pairs, response.json()["results"], strict=False):
                assert result["status"] == "success", result
                self.acknowledged[pair] = (result["data"]["version"], result["data"]["state"])
        return response.status_code

    def delete(self, pair):
        """DELETE the row; the status."""
        response = self.request("DELETE", f"/api/bots/disk-bot/state/{pair[0]}/{pair[1]}")
        if response.status_code == 200:
            self.acknowledged[pair] = None
        else:
            assert response.status_code == 503 or self.acknowledged.get(pair) is None
        return response.status_code

    def read(self, pair):
        """GET the row, checking that it is the one last acknowledged; the status."""
        response = self.request("GET", f"/api/bots/disk-bot/state/{pair[0]}/{pair[1]}")
        if response.status_code != 503:
            found = response.json()["data"] if response.status_code == 200 else None
            stored = None if found is None else (found["version"], found["state"])
            assert stored == self.acknowledged.get(pair)
        return response.status_code

    def every_kind_of_write(self, step):
        """A 1-item POST, a 3-item POST, a PATCH and a DELETE; their statuses."""
        return [
            self.write(KEYS[:1], {"step": step}),
            self.write(KEYS[1:4], {"step": step, "pad": PAD}),
            self.write(KEYS[4:5], {"patched": step}, method="PATCH"),
            self.delete(KEYS[5]),
        ]

    def every_kind_of_read(self):
        """Each row, a page of rows and /healthz; their statuses."""
        statuses = [self.read(pair) for pair in KEYS]
        statuses.append(self.request("GET", "/api/bots/disk-bot/state").status_code)
        health = self.session.get(f"{self.url}/healthz", timeout=30)
        assert (health.status_code, health.json()) in (
            (200, {"status": "ok", "version": VERSION}),
            (503, {"status": "unavailable"}),
        )
        return statuses + [health.status_code]

    def write_until(self, status):
        """Write KEYS[0] until the answer is `status`, for at most WAIT_SECONDS; the last status."""
        deadline = time.monotonic() + WAIT_SECONDS
        for step in itertools.count():
            answer = self.write(KEYS[:1], {"probe": step})
            if answer == status or time.monotonic() > deadline:
                return answer
            time.sleep(0.02)


def assert_serves_again(bot):
    """The first writes once the fault is gone succeed, every kind of them: no restart, no retry."""
    assert bot.write(KEYS, {"after": "the fault"}) == 200
    assert bot.every_kind_of_write("after") == [200, 200, 200, 200]


def assert_stored_as_acknowledged(database, bot_id, acknowledged):
    """Each row is as its last acknowledged write left it, and the file is sound."""
    rows, integrity = stored_rows(database, bot_id)
    assert integrity == "ok"
    stored = {pair: (version, json.loads(state)) for pair, (version, state) in rows.items()}
    assert {pair: stored.get(pair) for pair in acknowledged} == acknowledged
    RELIABILITY["disk faults under a running server"] += 1


def assert_no_failure_but_503(log):
    """No traceback and no 5xx but 503 in the server log."""
    assert "Traceback" not in log and "unexpected error" not in log
    statuses = re.findall(r" (?:GET|POST|PATCH|DELETE) \S+ (\d{3}) ", log)
    assert statuses and set(statuses) <= {"200", "404", "503"}, sorted(set(statuses))


def assert_503s_logged(log_path, cause):
    """The server log has no failure but 503s, and one of those names `cause`."""
    log = log_path.read_text()
    assert_no_failure_but_503(log)
    unavailable = [line for line in log.splitlines() if "Database is unavailable, retry later: " in line]
    assert any(cause in line for line in unavailable), log
    return log


def wait_for_line(log_path, text):
    """Wait, at most WAIT_SECONDS, until the log has `text` (the server looks at its file every 0.2 s)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while text not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)


def assert_logged_gone_and_back(log_path, database):
    """The log says the database went, that requests failed because its folder is gone, and that it came back."""
    log = assert_503s_logged(log_path, f"({database.parent}: no such folder)")
    assert f"the database file {database} is gone: requests get 503 until it is back" in log
    assert f"the database file {database} is back: reconnecting to it" in log


def test_a_full_disk_answers_503_and_writes_again_once_space_is_freed(small_disk, log_path):
    database = small_disk / "botstate.db"
    with served_bot(database, log_path) as bot:
        filler = fill(small_disk)
        # A write may still fit in WAL space that SQLite reuses; the next ones do not.
        statuses = []
        for step in range(50):
            statuses += bot.every_kind_of_write(step)
            if 503 in statuses:
                break
        assert 503 in statuses
        assert 503 not in bot.every_kind_of_read()  # reading needs no space
        os.remove(filler)
        assert_serves_again(bot)
        assert 503 not in bot.every_kind_of_read()
    assert_stored_as_acknowledged(database, bot.bot_id, bot.acknowledged)
    assert_503s_logged(log_path, f"database or disk is full ({database}: its disk has only ")


def test_a_read_only_database_file_answers_503_and_writes_again_once_writable(immutable, database, log_path):
    with served_bot(database, log_path) as bot:
        assert os.path.exists(f"{database}-wal")  # SQLite writes here first
        immutable.set(database, f"{database}-wal")
        assert bot.every_kind_of_write("during") == [503, 503, 503, 503]
        assert bot.every_kind_of_read() == [200] * (len(KEYS) + 2)
        immutable.clear()
        assert_serves_again(bot)
    assert_stored_as_acknowledged(database, bot.bot_id, bot.acknowledged)
    # SQLite says "disk I/O error", then "attempt to write a readonly database"; the line names the file.
    assert_503s_logged(log_path, f"({database}: not writable)")


def test_a_read_only_folder_under_a_running_server_changes_nothing(immutable, database, log_path):
    # The folder matters only when SQLite creates or removes its -wal and -shm
    # files: at start and after the last connection closes. A running server keeps
    # them open, so it writes on, and stops cleanly leaving them in place.
    with served_bot(database, log_path) as bot:
        immutable.set(database.parent)
        assert bot.every_kind_of_write("during") == [200, 200, 200, 200]
        assert bot.every_kind_of_read() == [200] * (len(KEYS) - 1) + [404, 200, 200]
    immutable.clear()
    assert_stored_as_acknowledged(database, bot.bot_id, bot.acknowledged)
    log = log_path.read_text()
    assert_no_failure_but_503(log)
    assert " 503 " not in log and log.rstrip().endswith("botstate stopped")


def assert_start_refused(database, command, cause):
    """Starting with `command` on `database` exits 1 with one line that names `cause`."""
    result = run_botstate(command, DATABASE=database, PORT=0)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"cannot use the database {database}: " in result.stderr
    assert cause in result.stderr


@pytest.mark.parametrize("read_only", ("folder", "file"))
@pytest.mark.parametrize("command", (["serve.py"], ["-m", "botstate", "init-db"]))
def test_starting_on_a_read_only_database_stops_with_one_line(immutable, database, read_only, command):
    seed(database)
    target, cause = {"folder": (database.parent, "folder not writable"), "file": (database, "not writable")}[read_only]
    immutable.set(target)
    assert_start_refused(database, command, f"{target}: {cause}")


def test_starting_on_a_full_disk_stops_with_one_line(small_disk):
    database = small_disk / "botstate.db"
    seed(database)
    fill(small_disk)
    assert_start_refused(database, ["serve.py"], f"({database}: its disk has only 0 bytes free)")


def test_a_database_folder_moved_away_answers_503_until_it_is_back(tmp_path, database, log_path):
    with served_bot(database, log_path) as bot:
        database.parent.rename(tmp_path / "away")
        # Writes acknowledged before the server notices go into the moved files, which come back.
        assert bot.write_until(503) == 503
        assert bot.every_kind_of_write("during") == [503, 503, 503, 503]
        assert bot.every_kind_of_read() == [503] * (len(KEYS) + 2)
        assert not database.parent.exists()  # nothing was created in its place
        (tmp_path / "away").rename(database.parent)
        assert bot.write_until(200) == 200
        assert bot.every_kind_of_write("after") == [200, 200, 200, 200]
        wait_for_line(log_path, "is back: reconnecting")
    assert_stored_as_acknowledged(database, bot.bot_id, bot.acknowledged)
    assert_logged_gone_and_back(log_path, database)


def test_a_removed_database_folder_answers_503_until_restored_from_a_backup(tmp_path, database, log_path):
    with served_bot(database, log_path) as bot:
        backup = sqlite3.connect(tmp_path / "backup.db")
        with contextlib.closing(sqlite3.connect(database)) as live:
            live.backup(backup)
        backup.close()
        backed_up = dict(bot.acknowledged)
        shutil.rmtree(database.parent)
        # Writes acknowledged before the server notices (0.2 s) went into the removed file.
        assert bot.write_until(503) == 503
        assert bot.every_kind_of_write("during") == [503, 503, 503, 503]
        assert bot.every_kind_of_read() == [503] * (len(KEYS) + 2)
        assert not database.parent.exists()  # nothing was created in its place
        database.parent.mkdir()
        shutil.copy(tmp_path / "backup.db", database.parent / "restoring.db")
        os.replace(database.parent / "restoring.db", database)
        assert bot.write_until(200) == 200
        wait_for_line(log_path, "is back: reconnecting")
    probe = bot.acknowledged[KEYS[0]]
    assert probe[0] == backed_up[KEYS[0]][0] + 1  # the backup's version, then the probe
    assert_stored_as_acknowledged(database, bot.bot_id, {**backed_up, KEYS[0]: probe})
    assert_logged_gone_and_back(log_path, database)
