"""What only the PostgreSQL backend does: its merge, its URL, its connections, its start-up checks."""

import sqlite3
import threading
import time
import urllib.parse

import psycopg
import pytest
from conftest import POSTGRES_ONLY, POSTGRES_URL, execute_sql, run_botstate, run_in_threads, start_server, stop_server
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, TICKER_MSFT, item
from zygote import BOTSTATE_SCRIPT

import config
import jsoncodec
from app import create_app
from backends import postgres_schema
from backends.postgres import redacted
from backends.rules import merge_patch
from keys import hash_key
from storage import Credentials, StateWrite, VersionConflict, open_storage

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False)
)
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
        (
            "postgresql://botstate@/postgres?host=/tmp/sock&port=5432",
            "postgresql://botstate@/postgres?host=/tmp/sock&port=5432",
        ),
        (
            "postgresql://bot:s3cret@db.example:5432/botstate?password=other",
            "postgresql://bot@db.example:5432/botstate",
        ),
    ),
)
def test_messages_name_the_database_without_its_password(url, shown):
    assert redacted(url) == shown


def test_a_url_libpq_cannot_read_is_refused_without_repeating_it(tmp_path):
    # libpq's own message would print the URL, password and all.
    with pytest.raises(config.ConfigError) as raised:
        create_app({"DATABASE": str(tmp_path / "x.db"), "DATABASE_URL": "postgresql://bot:se%zzcret@db/botstate"})
    assert "percent-encode" in raised.value.message and "se%zzcret" not in raised.value.message


@pytest.mark.parametrize("url", ("mysql://db/botstate", "db.example:5432", "sqlite:///x.db"))
def test_a_database_url_that_is_not_postgresql_stops_the_start(tmp_path, url):
    with pytest.raises(config.ConfigError, match="BOTSTATE_DATABASE_URL must be a postgresql:// URL"):
        create_app({"DATABASE": str(tmp_path / "x.db"), "DATABASE_URL": url})


def dbname_of(url):
    """The database name in a postgresql:// URL."""
    return urllib.parse.urlsplit(url).path.lstrip("/")


@POSTGRES_ONLY
def test_a_wrong_user_stops_the_start_with_the_servers_reason_and_no_password(new_database, backend):
    url = new_database()["DATABASE_URL"].replace("botstate@", "nobody:hunter2@")
    with pytest.raises(config.ConfigError) as raised:
        create_app({"DATABASE_URL": url, "BUSY_TIMEOUT_MS": 200})
    assert 'role "nobody" does not exist' in raised.value.message
    assert "hunter2" not in raised.value.message


@POSTGRES_ONLY
def test_a_read_only_database_stops_the_start(new_database, backend):
    database = new_database()
    dbname = dbname_of(database["DATABASE_URL"])
    create_app(dict(database)).extensions["botstate.storage"].close()  # migrated
    execute_sql({"DATABASE_URL": POSTGRES_URL}, f"ALTER DATABASE {dbname} SET default_transaction_read_only = on")
    with pytest.raises(config.ConfigError, match="is read-only"):
        create_app(dict(database))


@POSTGRES_ONLY
def test_connections_cut_by_the_server_cost_503s_then_the_pool_reconnects(new_database, backend, configured):
    client, bot, storage = configured()
    headers = {"x-api-key": bot["apiKey"]}
    assert client.post("/api/bots/b/state", json={"states": [item()]}, headers=headers).status_code == 200
    dbname = dbname_of(storage.url)
    execute_sql(
        {"DATABASE_URL": POSTGRES_URL},
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'",
    )
    statuses = [
        client.post("/api/bots/b/state", json={"states": [item()]}, headers=headers).status_code for _ in range(8)
    ]
    assert set(statuses) <= {200, 503} and statuses[-1] == 200, statuses
    assert 500 not in statuses


@POSTGRES_ONLY
def test_servers_starting_together_on_an_empty_database_migrate_it_once(new_database, backend):
    database = new_database()
    started, errors = [], []

    def start():
        try:
            started.append(start_server(database))
        except RuntimeError as error:
            errors.append(error)

    run_in_threads(lambda _: start(), 3, timeout=60)
    for process, _, _ in started:
        stop_server(process)
    assert errors == [] and len(started) == 3
    applied = execute_sql(database, "SELECT name FROM botstate_migrations ORDER BY name")
    assert [name for (name,) in applied] == [
        postgres_schema.BASELINE,
        *(name for name, _ in postgres_schema.MIGRATIONS),
    ]


@POSTGRES_ONLY
def test_the_server_and_the_cli_never_show_the_password(new_database, backend):
    url = new_database()["DATABASE_URL"].replace("botstate@", "botstate:hunter2@")  # trust auth ignores it
    process, base_url, log_path = start_server({"DATABASE_URL": url})
    stop_server(process)
    log = log_path.read_text()
    assert f"(database {redacted(url)}, 4 threads)" in log
    assert f"Create one with: BOTSTATE_DATABASE_URL=<the same URL> {BOTSTATE_SCRIPT} bots create my-bot" in log
    init = run_botstate(["-m", "botstate", "init-db"], DATABASE_URL=url)
    assert init.returncode == 0 and f"Database ready at {redacted(url)}" in init.stdout
    assert "hunter2" not in log + init.stdout + init.stderr


@POSTGRES_ONLY
def test_bulk_writes_over_the_same_rows_in_opposite_orders_never_deadlock(configured, backend):
    # Per-item writes (a duplicate key forces them) lock rows in request order;
    # without one order for all, PostgreSQL aborts one of two such requests.
    client, bot, storage = configured()
    rows = [(ACCOUNT_0, TICKER_AAPL), (ACCOUNT_1, TICKER_AAPL), (ACCOUNT_0, TICKER_MSFT), (ACCOUNT_1, TICKER_MSFT)]
    storage.add_account(ACCOUNT_1, None)
    storage.add_ticker("MSFT", TICKER_MSFT)
    statuses, lock = [], threading.Lock()

    def write(n):
        order = rows if n % 2 else rows[::-1]
        items = [{"accountId": a, "tickerId": t, "state": {"n": n}} for a, t in order + order[:1]]
        for _ in range(15):
            method = client.post if n < 2 else client.patch
            answer = method("/api/bots/b/state", json={"states": items}, headers={"x-api-key": bot["apiKey"]})
            with lock:
                statuses.append(answer.status_code)

    run_in_threads(write, 4, timeout=120)
    assert statuses == [200] * 60


@POSTGRES_ONLY
@pytest.mark.parametrize("items", ([item()], [item(), item(ACCOUNT_0, TICKER_AAPL)]), ids=("one item", "two items"))
def test_a_rotation_waits_for_a_write_that_its_old_key_began(configured, backend, items):
    # The write passed its key check, then waits on a row lock: the rotation must not
    # return before it, or a key already revoked would write after it.
    client, bot, storage = configured()
    credentials = Credentials(storage.get_bot("b")["id"], hash_key(bot["apiKey"]))
    [row] = storage.write_states(credentials, [write_of(item())])
    done = {}
    with psycopg.connect(storage.url) as holder:
        holder.execute("SELECT 1 FROM user_bot_states WHERE id = %s FOR UPDATE", [row.id])
        writer = threading.Thread(
            target=lambda: done.setdefault(
                "write",
                client.post(
                    "/api/bots/b/state", json={"states": items}, headers={"x-api-key": bot["apiKey"]}
                ).status_code,
            )
        )
        rotation = threading.Thread(target=lambda: done.setdefault("rotation", storage.replace_bot_key("b", "0" * 64)))
        writer.start()
        time.sleep(0.3)
        rotation.start()
        time.sleep(0.3)
        assert "rotation" not in done  # it waits for the write, which holds the key
        holder.rollback()
    writer.join(timeout=30)
    rotation.join(timeout=30)
    assert done["write"] == 200 and "rotation" in done


@POSTGRES_ONLY
def test_a_write_that_waited_on_a_lock_is_dated_when_it_wrote(configured, backend):
    # updatedSince pollers rely on it: dated from its transaction's start, a row
    # written after another (committed meanwhile) would get an earlier time.
    client, bot, storage = configured()
    storage.add_ticker("MSFT", TICKER_MSFT)
    storage.add_account(ACCOUNT_1, None)
    bot_id, key = storage.get_bot("b")["id"], hash_key(bot["apiKey"])
    [waited_on] = storage.write_states(Credentials(bot_id, key), [write_of(item())])
    outcome = {}
    with psycopg.connect(storage.url) as holder:
        holder.execute("SELECT 1 FROM user_bot_states WHERE id = %s FOR UPDATE", [waited_on.id])
        writer = threading.Thread(
            target=lambda: outcome.setdefault(
                "rows",
                storage.write_states(
                    Credentials(bot_id, key), [write_of(item()), write_of(item(ACCOUNT_0, TICKER_MSFT))]
                ),
            )
        )
        writer.start()
        time.sleep(0.3)
        [meanwhile] = storage.write_states(Credentials(bot_id, key), [write_of(item(ACCOUNT_1, TICKER_MSFT))])
        time.sleep(0.01)
        holder.rollback()
        writer.join(timeout=30)
    assert [row.updated_at >= meanwhile.updated_at for row in outcome["rows"]] == [True, True]


@POSTGRES_ONLY
def test_a_busy_timeout_of_zero_still_serves(configured, backend):
    client, bot, _ = configured(BUSY_TIMEOUT_MS=0)
    answer = client.post("/api/bots/b/state", json={"states": [item()]}, headers={"x-api-key": bot["apiKey"]})
    assert answer.status_code == 200


def write_of(sent):
    """The StateWrite of an API item."""
    return StateWrite(sent["accountId"], sent["tickerId"], jsoncodec.dumps(sent["state"]))


@POSTGRES_ONLY
def test_a_transaction_aborted_by_a_deadlock_is_tried_again_and_counted(storage, backend):
    calls = []

    def work(conn):
        calls.append(conn)
        if len(calls) == 1:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return conn.execute("SELECT 1").fetchone()[0]

    assert storage._in_transaction(work) == 1
    assert (len(calls), storage.retries) == (2, 1)


@POSTGRES_ONLY
def test_a_lone_write_of_a_row_a_bulk_write_holds_waits_for_it_not_a_503(configured, backend):
    # Regression: a lone write took no row locks first, so it could create a row the bulk
    # write had read as absent; the whole transaction was tried again three times, then 503.
    # Its insert now takes the row's lock first, so it waits for the bulk write instead.
    _, bot, storage = configured()
    storage.add_ticker("MSFT", TICKER_MSFT)
    credentials = Credentials(storage.get_bot("b")["id"], hash_key(bot["apiKey"]))
    other = open_storage(dict(DATABASE_URL=storage.url, BUSY_TIMEOUT_MS=5000, THREADS=1))
    store, meanwhile, lone = storage._store, [], []

    def store_during_a_lone_write(conn, rows, stored):
        if not lone:
            lone.append(
                threading.Thread(
                    target=lambda: meanwhile.append(
                        other.write_states(credentials, [write_of(item(state={"lone": 1}))])
                    )
                )
            )
            lone[0].start()
            lone[0].join(timeout=0.5)
            assert lone[0].is_alive()  # waiting for this write's rows
        return store(conn, rows, stored)

    storage._store = store_during_a_lone_write
    try:
        outcomes = storage.write_states(
            credentials, [write_of(item(state={"bulk": 1})), write_of(item(ACCOUNT_0, TICKER_MSFT))]
        )
        lone[0].join(timeout=10)
    finally:
        other.close()
    assert [(row.state_json, row.version) for row in outcomes] == [('{"bulk":1}', 1), ('{"position":"long"}', 1)]
    assert (meanwhile[0][0].state_json, meanwhile[0][0].version) == ('{"lone":1}', 2)
    assert storage.get_state(credentials.bot_id, ACCOUNT_0, TICKER_AAPL) == meanwhile[0][0]
    assert storage.retries == 0


@POSTGRES_ONLY
def test_a_lone_write_expecting_a_version_of_a_row_being_deleted_is_a_conflict(configured, backend):
    # Regression (older than the backends): the INSERT saw the row in its snapshot, waited for
    # the delete, then created the row anew at version 1 instead of answering the conflict.
    _, bot, storage = configured()
    credentials = Credentials(storage.get_bot("b")["id"], hash_key(bot["apiKey"]))
    [row] = storage.write_states(credentials, [write_of(item())])
    outcome = {}
    with psycopg.connect(storage.url) as deleter:
        deleter.execute("DELETE FROM user_bot_states WHERE id = %s", [row.id])
        writer = threading.Thread(
            target=lambda: outcome.setdefault(
                "written", storage.write_states(credentials, [StateWrite(ACCOUNT_0, TICKER_AAPL, "{}", 1)])
            )
        )
        writer.start()
        time.sleep(0.3)  # the write waits for the delete's row lock
        deleter.commit()
        writer.join(timeout=30)
    assert outcome["written"] == [VersionConflict(1, 0)]
    assert storage.get_state(credentials.bot_id, ACCOUNT_0, TICKER_AAPL) is None
