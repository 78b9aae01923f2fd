"""PostgreSQL's schema: the baseline makes what the five legacy steps made, and legacy databases carry on intact."""

import psycopg
import pytest
from conftest import POSTGRES_ONLY
from spec_data import ACCOUNT_0, TICKER_AAPL

from backends import postgres_schema
from backends.postgres_schema import (
    BASELINE,
    BASELINE_SQL,
    LEGACY,
    LEGACY_MIGRATIONS,
    MIGRATION_LOCK,
    SchemaError,
    applied,
    migrate,
    outdated,
)

BOT = "0b0b0b0b-0000-4000-8000-000000000001"
STATE = "5da7e000-0000-4000-8000-000000000001"
# Two later migrations, as a future release would add them after the baseline and the real ones.
LATER = (
    ("0098_test_state_notes", "ALTER TABLE user_bot_states ADD COLUMN note text NOT NULL DEFAULT ''"),
    ("0099_test_key_expiry_index", "CREATE INDEX idx_bot_keys_expires_at ON bot_keys (expires_at)"),
)
LATER_NAMES = [name for name, _ in LATER]


@pytest.fixture
def connect(new_database):
    """Factory: an autocommit connection to a new, empty PostgreSQL database."""
    connections = []

    def make():
        connections.append(psycopg.connect(new_database()["DATABASE_URL"], autocommit=True))
        return connections[-1]

    yield make
    for conn in connections:
        conn.close()


def in_transaction(conn, function):
    """function(conn) in a transaction of its own, as the storage calls it."""
    with conn.transaction():
        return function(conn)


def make_legacy(conn, steps=LEGACY_MIGRATIONS, extra_names=()):
    """Migrate a new database as botstate did before the baseline: the steps and their records, in one transaction."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        conn.execute(postgres_schema.MIGRATIONS_TABLE)
        for name, sql in steps:
            conn.execute(sql)
            conn.execute("INSERT INTO botstate_migrations (name, applied_at) VALUES (%s, now())", [name])
        for name in extra_names:
            conn.execute("INSERT INTO botstate_migrations (name, applied_at) VALUES (%s, now())", [name])


def add_rows(conn):
    """A bot, its key, an account, a ticker and a state, with times to the millisecond and a state in odd JSON."""
    conn.execute("INSERT INTO bots VALUES (%s, 'old-bot', 'Old bot', '2026-01-01 00:00:00.123+00')", [BOT])
    conn.execute(
        "INSERT INTO bot_keys VALUES (%s, %s, '2026-01-01 00:00:00.124+00', NULL, '2026-01-02 10:00:00.5+00')",
        [BOT, "a" * 64],
    )
    conn.execute("INSERT INTO accounts VALUES (%s, 'acct', '2026-01-01 00:00:01+00')", [ACCOUNT_0])
    conn.execute("INSERT INTO tickers VALUES (%s, 'AAPL', '2026-01-01 00:00:02+00')", [TICKER_AAPL])
    conn.execute(
        "INSERT INTO user_bot_states VALUES"
        " (%s, %s, %s, %s, %s, '2026-01-01 00:00:03.001+00', '2026-01-03 00:00:00.999+00', 7)",
        [STATE, BOT, ACCOUNT_0, TICKER_AAPL, '{"z": 1,  "a": [1.50, 2e3], "m": {"y": null}}'],
    )


def catalog(conn):
    """Every relation of the public schema, and each table's columns, constraints and indexes."""
    tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
    described = {
        "relations": conn.execute(
            "SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1"
        ).fetchall()
    }
    for table in tables:
        described[table] = {
            "columns": conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod), attnotnull, pg_get_expr(adbin, adrelid)"
                " FROM pg_attribute LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum"
                " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                [table],
            ).fetchall(),
            "constraints": conn.execute(
                "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = %s::regclass ORDER BY conname",
                [table],
            ).fetchall(),
            "indexes": conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s ORDER BY 1",
                [table],
            ).fetchall(),
        }
    return described


def rows(conn):
    """Every row of every table, as PostgreSQL writes it out (the state's JSON text as stored)."""
    tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
    return {table: conn.execute(f"SELECT t::text FROM {table} AS t ORDER BY 1").fetchall() for table in tables}


def storage_files(conn):
    """Each relation's oid and file: a table or index rebuilt (or dropped and made again) gets a new one."""
    return set(
        conn.execute("SELECT relname, oid, relfilenode FROM pg_class WHERE relnamespace = 'public'::regnamespace")
    )


def test_the_names_sort_in_the_order_they_apply():
    # applied() lists the names by name: legacy steps, then the baseline, then the later ones.
    names = [*LEGACY, BASELINE, *(name for name, _ in postgres_schema.MIGRATIONS), *LATER_NAMES]
    assert names == sorted(names) and len(set(names)) == len(names)


@POSTGRES_ONLY
def test_the_baseline_makes_the_same_schema_as_the_legacy_steps(connect, monkeypatch):
    monkeypatch.setattr(postgres_schema, "MIGRATIONS", ())  # the release that had only the baseline
    new, legacy = connect(), connect()
    assert in_transaction(new, migrate) == [BASELINE]
    make_legacy(legacy)
    assert catalog(new) == catalog(legacy)
    described = catalog(new)
    # What the legacy steps dropped is not there: user_bot_states' primary key and
    # account and ticker indexes, bots.api_key_hash.
    assert [index for index, _ in described["user_bot_states"]["indexes"]] == [
        "user_bot_states_bot_id_user_broker_account_id_ticker_id_key"
    ]
    assert "p" not in {kind for _, kind, _ in described["user_bot_states"]["constraints"]}
    assert "api_key_hash" not in {column for column, *_ in described["bots"]["columns"]}
    assert ("state", "json", True, None) in described["user_bot_states"]["columns"]
    foreign_keys = [
        d for (d,) in new.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'f'")
    ]
    assert len(foreign_keys) == 4 and all(d.endswith("ON DELETE CASCADE") for d in foreign_keys)
    # Recognising the legacy database leaves its schema as it was: still the same as the new one's.
    assert in_transaction(legacy, migrate) == []
    assert catalog(legacy) == described


@POSTGRES_ONLY
def test_a_new_database_needs_nothing_and_outdated_leaves_it_empty(connect):
    conn = connect()
    assert in_transaction(conn, outdated) == []
    assert in_transaction(conn, applied) == []
    assert catalog(conn) == {"relations": []}  # not even botstate_migrations


@POSTGRES_ONLY
def test_a_legacy_database_is_recognised_with_its_rows_intact_and_nothing_rebuilt(connect, monkeypatch):
    monkeypatch.setattr(postgres_schema, "MIGRATIONS", ())  # the release that had only the baseline
    conn = connect()
    make_legacy(conn)
    add_rows(conn)
    legacy_records = conn.execute("SELECT name, applied_at FROM botstate_migrations ORDER BY name").fetchall()
    before, files = rows(conn), storage_files(conn)
    assert in_transaction(conn, outdated) == []  # current: a server starts on it without an upgrade

    assert in_transaction(conn, migrate) == []

    after = rows(conn)
    migration_records = after.pop("botstate_migrations")
    before.pop("botstate_migrations")
    assert after == before and all(after.values())  # every row, byte for byte
    [(state,)] = conn.execute("SELECT state::text FROM user_bot_states").fetchall()
    assert state == '{"z": 1,  "a": [1.50, 2e3], "m": {"y": null}}'
    assert storage_files(conn) == files  # no table or index made again
    # The legacy records stay as they were; the baseline is recorded after them.
    assert conn.execute("SELECT name, applied_at FROM botstate_migrations ORDER BY name").fetchall()[:5] == (
        legacy_records
    )
    assert len(migration_records) == 6
    assert in_transaction(conn, applied) == [*LEGACY, BASELINE]
    assert in_transaction(conn, outdated) == []


@POSTGRES_ONLY
@pytest.mark.parametrize("start", ("new", "legacy"))
def test_migrating_twice_changes_nothing(connect, start):
    conn = connect()
    if start == "legacy":
        make_legacy(conn)
    in_transaction(conn, migrate)
    add_rows(conn)
    before = (catalog(conn), rows(conn), storage_files(conn))
    assert in_transaction(conn, migrate) == []
    assert (catalog(conn), rows(conn), storage_files(conn)) == before
    assert in_transaction(conn, outdated) == []


@POSTGRES_ONLY
def test_a_later_migration_applies_once_to_new_and_legacy_databases_alike(connect, monkeypatch):
    new, at_baseline, legacy = connect(), connect(), connect()
    monkeypatch.setattr(postgres_schema, "MIGRATIONS", ())
    in_transaction(at_baseline, migrate)  # migrated by the release that had no later migrations yet
    make_legacy(legacy)
    add_rows(legacy)
    monkeypatch.setattr(postgres_schema, "MIGRATIONS", LATER)

    assert in_transaction(new, outdated) == []  # nothing to upgrade: it is made at once
    assert in_transaction(new, migrate) == [BASELINE, *LATER_NAMES]
    for conn in (at_baseline, legacy):
        assert in_transaction(conn, outdated) == LATER_NAMES
        assert in_transaction(conn, migrate) == LATER_NAMES
    for conn in (new, at_baseline, legacy):
        assert in_transaction(conn, migrate) == []  # once: ADD COLUMN would fail the second time
        assert in_transaction(conn, outdated) == []
    assert in_transaction(new, applied) == in_transaction(at_baseline, applied) == [BASELINE, *LATER_NAMES]
    assert in_transaction(legacy, applied) == [*LEGACY, BASELINE, *LATER_NAMES]
    assert catalog(new) == catalog(at_baseline) == catalog(legacy)
    assert legacy.execute("SELECT note FROM user_bot_states").fetchall() == [("",)]


@POSTGRES_ONLY
def test_the_migration_lock_is_held_until_the_transaction_ends(connect):
    conn = connect()
    other = psycopg.connect(conn.info.dsn, autocommit=True)
    try:
        with conn.transaction():
            migrate(conn)
            assert other.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK]).fetchone() == (False,)
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK]).fetchone() == (True,)
    finally:
        other.close()


def _tables_without_records(conn):
    with conn.transaction():
        conn.execute(BASELINE_SQL)


# Databases no released botstate made: every PostgreSQL database recorded all five
# legacy steps in one transaction (they all shipped with PostgreSQL support), or the
# baseline. migrate() and outdated() refuse them rather than guess at their schema.
@POSTGRES_ONLY
@pytest.mark.parametrize(
    "make,message",
    (
        *(
            (lambda conn, n=n: make_legacy(conn, LEGACY_MIGRATIONS[:n]), f"lacks {', '.join(LEGACY[n:])} (and not")
            for n in range(1, 5)
        ),
        (lambda conn: make_legacy(conn, extra_names=["0006_from_a_fork"]), "records unknown steps 0006_from_a_fork"),
        (lambda conn: make_legacy(conn, (), ["0009_unknown"]), "lacks 0001_create_tables"),
        (_tables_without_records, "tables named like botstate's (accounts, bot_keys, bots, tickers, user_bot_states)"),
    ),
    ids=("1-step", "2-steps", "3-steps", "4-steps", "legacy-and-unknown", "unknown-only", "tables-no-records"),
)
def test_a_database_no_release_made_is_refused_and_left_as_it_was(connect, make, message):
    conn = connect()
    make(conn)
    before = (catalog(conn), rows(conn), storage_files(conn))
    for function in (outdated, migrate):
        with pytest.raises(SchemaError) as refused:
            in_transaction(conn, function)
        assert message in str(refused.value) and "\n" not in str(refused.value)
    assert (catalog(conn), rows(conn), storage_files(conn)) == before
