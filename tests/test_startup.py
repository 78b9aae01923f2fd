"""Starting up as a user does: bad settings and unusable databases are one clear line."""

import contextlib
import json
import socket
import sqlite3

import pytest
import sqlite_utils
from conftest import initialized, run_botstate, start_server, stop_server

from backends.sqlite_schema import migrations


@pytest.mark.parametrize(
    "settings,message",
    (
        ({"PORT": "abc"}, "BOTSTATE_PORT must be an integer from 0 to 65535, got 'abc'"),
        ({"PORT": "--5"}, "BOTSTATE_PORT must be an integer from 0 to 65535, got '--5'"),
        ({"SYNCHRONOUS": "maybe"}, "BOTSTATE_SYNCHRONOUS must be one of OFF, NORMAL, FULL, EXTRA, got 'maybe'"),
        (
            {"RATE_LIMIT": "lots"},
            "BOTSTATE_RATE_LIMIT must be a rate such as 600/minute (or several: 10/second;600/minute), got 'lots'",
        ),
    ),
)
@pytest.mark.parametrize("command", (["-m", "botstate", "bots", "list", "--json"], ["serve.py"]))
def test_bad_settings_stop_with_one_line(tmp_path, command, settings, message):
    result = run_botstate(command, DATABASE=tmp_path / "x.db", **settings)
    assert result.returncode != 0
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr


@pytest.mark.parametrize("command", (["-m", "botstate", "init-db"], ["serve.py"]))
def test_an_unusable_database_path_is_one_line(tmp_path, command):
    (tmp_path / "a-directory.db").mkdir()
    result = run_botstate(command, DATABASE=tmp_path / "a-directory.db")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"cannot use the database {tmp_path / 'a-directory.db'}" in result.stderr


@pytest.mark.parametrize("command", (["-m", "botstate", "bots", "list"], ["serve.py"]))
def test_an_unreachable_postgresql_server_is_one_line(command):
    with socket.socket() as closed:  # bound, never listening: connections to it are refused
        closed.bind(("127.0.0.1", 0))
        url = f"postgresql://botstate@127.0.0.1:{closed.getsockname()[1]}/botstate"
        result = run_botstate(command, DATABASE_URL=url)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()  # libpq's hint, on a line of its own, joined to it
    assert f"cannot use the database {url}: connection failed:" in line and "Connection refused" in line


def test_a_taken_port_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_botstate(["serve.py"], DATABASE=tmp_path / "x.db", PORT=port)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"botstate: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


@pytest.mark.sqlite_only("the serving marker is a file beside a SQLite database")
@pytest.mark.parametrize("workers", (1, 3))  # with workers, each would meet it: it is told once
def test_a_serving_marker_that_cannot_be_opened_is_one_line(tmp_path, workers):
    database = tmp_path / "x.db"
    assert run_botstate(["-m", "botstate", "init-db"], DATABASE=database).returncode == 0
    (tmp_path / "x.db-serving").mkdir()  # refused to root too, unlike a file it may not write
    result = run_botstate(["serve.py"], DATABASE=database, PORT=0, WORKERS=workers)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"botstate: cannot use the database {database}: {database}-serving: Is a directory"
    ]


def test_unknown_settings_are_named_not_applied(tmp_path):
    database = initialized(tmp_path / "x.db")
    result = run_botstate(["-m", "botstate", "bots", "list", "--json"], DATABASE=database, THRAEDS="8")
    assert result.returncode == 0 and result.stdout.strip() == "[]"
    assert "ignoring BOTSTATE_THRAEDS: not a botstate setting" in result.stderr


def test_startup_lines_show_at_any_log_level(tmp_path):
    process, url, log_path = start_server(tmp_path / "quiet.db", LOG_LEVEL="ERROR")
    stop_server(process)
    log = log_path.read_text()
    assert f"botstate listening on {url}" in log
    assert "No bot exists yet. Create one with:" in log


def older_database(path):
    """A database as the release before the newest migration left it, with a bot."""
    newest = migrations._migrations[-1].name
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before=newest)
    old.execute(
        "INSERT INTO bots (id, slug, name, created_at) VALUES ('b', 'old-bot', 'Old', '2026-01-01T00:00:00.000Z')"
    )
    old.execute("INSERT INTO bot_keys (bot_id, key_hash, created_at) VALUES ('b', 'hash', '2026-01-01T00:00:00.000Z')")
    old.conn.close()
    return newest


def applied_migrations(path):
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]


def test_a_command_refuses_an_older_database_until_init_db_upgrades_it(tmp_path):
    # Regression: any flask command migrated the file, under an older server still using the old schema (500s).
    path = tmp_path / "old.db"
    newest = older_database(path)
    before = applied_migrations(path)
    refused = run_botstate(["-m", "botstate", "bots", "list", "--json"], DATABASE=path)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        f"Error: the database {path} needs an upgrade to this version of botstate ({newest}):"
        " stop the server that uses it, then run `botstate init-db` (or start the new server, which upgrades it)"
    ]
    assert applied_migrations(path) == before
    upgraded = run_botstate(["-m", "botstate", "init-db", "--json"], DATABASE=path)
    assert json.loads(upgraded.stdout)["applied"] == [newest]
    listed = run_botstate(["-m", "botstate", "bots", "list", "--json"], DATABASE=path)
    assert [bot["slug"] for bot in json.loads(listed.stdout)] == ["old-bot"]


def test_the_server_upgrades_an_older_database_on_start(tmp_path):
    path = tmp_path / "old.db"
    newest = older_database(path)
    process, url, _ = start_server(path)
    stop_server(process)
    assert applied_migrations(path)[-1] == newest
