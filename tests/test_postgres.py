"""What only the PostgreSQL backend does: its merge, its URL, its connections, its start-up checks."""

import sqlite3
import threading
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import config
import jsoncodec
from app import create_app
from conftest import POSTGRES_URL, execute_sql, run_botstate, start_server, stop_server
from pgstorage import MIGRATIONS, merge_patch, redacted
from spec_data import item

JSON_LEAVES = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=5)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from("abcde"), children, max_size=4),
    max_leaves=12,
)
OBJECTS = st.dictionaries(st.sampled_from("abcde"), JSON_VALUES, max_size=5)


@settings(max_examples=300, deadline=None)
@given(target=OBJECTS, patch=JSON_VALUES)
def test_the_merge_is_sqlites_json_patch_to_the_byte(target, patch):
    # PostgreSQL merges in Python: the same text as SQLite's json_patch, key order included.
    with sqlite3.connect(":memory:") as conn:
        [(expected,)] = conn.execute(
            "SELECT json_patch(?, ?)", [jsoncodec.dumps(target), jsoncodec.dumps(patch)]
        ).fetchall()
    assert jsoncodec.dumps(merge_patch(target, patch)) == expected


@pytest.mark.parametrize(
    "url,shown",
    (
        ("postgresql://bot:s3cret@db.example:5432/botstate", "postgresql://bot@db.example:5432/botstate"),
        ("postgresql://bot:s3cret@db.example/botstate?sslmode=require", "postgresql://bot@db.example/botstate"),
        ("postgresql://botstate@/postgres?host=/tmp/sock&port=5432", "postgresql://botstate@/postgres?host=/tmp/sock&port=5432"),
        ("postgresql://bot:s3cret@db.example:5432/botstate?password=other", "postgresql://bot@db.example:5432/botstate"),
    ),
)
def test_messages_name_the_database_without_its_password(url, shown):
    assert redacted(url) == shown


@pytest.mark.parametrize("url", ("mysql://db/botstate", "db.example:5432", "sqlite:///x.db"))
def test_a_database_url_that_is_not_postgresql_stops_the_start(tmp_path, url):
    with pytest.raises(config.ConfigError, match="BOTSTATE_DATABASE_URL must be a postgresql:// URL"):
        create_app({"DATABASE": str(tmp_path / "x.db"), "DATABASE_URL": url})


def dbname_of(url):
    """The database name in a postgresql:// URL."""
    return urllib.parse.urlsplit(url).path.lstrip("/")


needs_postgres = pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL tests need a server: `make test-pg` starts one")


@needs_postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_wrong_user_stops_the_start_with_the_servers_reason_and_no_password(new_database, backend):
    url = new_database()["DATABASE_URL"].replace("botstate@", "nobody:hunter2@")
    with pytest.raises(config.ConfigError) as raised:
        create_app({"DATABASE_URL": url, "BUSY_TIMEOUT_MS": 200})
    assert 'role "nobody" does not exist' in raised.value.message
    assert "hunter2" not in raised.value.message


@needs_postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_read_only_database_stops_the_start(new_database, backend):
    database = new_database()
    dbname = dbname_of(database["DATABASE_URL"])
    create_app(dict(database)).extensions["botstate.storage"].close()  # migrated
    execute_sql({"DATABASE_URL": POSTGRES_URL}, f"ALTER DATABASE {dbname} SET default_transaction_read_only = on")
    with pytest.raises(config.ConfigError, match="is read-only"):
        create_app(dict(database))


@needs_postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_connections_cut_by_the_server_cost_503s_then_the_pool_reconnects(new_database, backend, configured):
    client, bot, storage = configured()
    headers = {"x-api-key": bot["apiKey"]}
    assert client.post("/api/bots/b/state", json={"states": [item()]}, headers=headers).status_code == 200
    dbname = dbname_of(storage.url)
    execute_sql({"DATABASE_URL": POSTGRES_URL}, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'")
    statuses = [client.post("/api/bots/b/state", json={"states": [item()]}, headers=headers).status_code for _ in range(8)]
    assert set(statuses) <= {200, 503} and statuses[-1] == 200, statuses
    assert 500 not in statuses


@needs_postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_servers_starting_together_on_an_empty_database_migrate_it_once(new_database, backend):
    database = new_database()
    started, errors = [], []

    def start():
        try:
            started.append(start_server(database))
        except RuntimeError as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for process, _, _ in started:
        stop_server(process)
    assert errors == [] and len(started) == 3
    applied = execute_sql(database, "SELECT name FROM botstate_migrations ORDER BY name")
    assert [name for (name,) in applied] == [name for name, _ in MIGRATIONS]


@needs_postgres
@pytest.mark.parametrize("backend", ["postgresql"])
def test_the_server_and_the_cli_never_show_the_password(new_database, backend):
    url = new_database()["DATABASE_URL"].replace("botstate@", "botstate:hunter2@")  # trust auth ignores it
    process, base_url, log_path = start_server({"DATABASE_URL": url})
    stop_server(process)
    log = log_path.read_text()
    assert f"(database {redacted(url)}, 4 threads)" in log
    assert "Create one with: BOTSTATE_DATABASE_URL=<the same URL> .venv/bin/flask bots create my-bot" in log
    init = run_botstate(["-m", "flask", "--app", "app:create_app", "init-db"], DATABASE_URL=url)
    assert init.returncode == 0 and f"Database ready at {redacted(url)}" in init.stdout
    assert "hunter2" not in log + init.stdout + init.stderr
