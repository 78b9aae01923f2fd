"""The storage interface on both backends: writes item by item, reads, deletes, key uses, checkpoints."""

import json
import sqlite3
import time

import pytest
import sqlite_utils
from conftest import execute_sql
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, TICKER_MSFT, TICKER_UNKNOWN

from backends import postgres_schema
from backends.sqlite import SQLiteStorage
from backends.sqlite_schema import migrations
from storage import (
    Conflict,
    Credentials,
    DatabaseBusy,
    ItemError,
    NotFound,
    StateRow,
    StateWrite,
    StorageError,
    VersionConflict,
)


def write(account=ACCOUNT_0, ticker=TICKER_AAPL, state=None):
    return StateWrite(account, ticker, json.dumps(state or {"position": "long"}))


def test_upsert_creates_then_updates_the_same_row(storage, bot, registered):
    [created] = storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(state={"v": 1})])
    time.sleep(0.002)  # timestamps have millisecond resolution
    [updated] = storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(state={"v": 2})])
    assert isinstance(created, StateRow) and isinstance(updated, StateRow)
    assert updated.id == created.id
    assert updated.created_at == created.created_at
    assert updated.updated_at > created.updated_at
    assert (created.version, updated.version) == (1, 2)
    row = storage.get_state(bot["id"], ACCOUNT_0, TICKER_AAPL)
    assert json.loads(row.state_json) == {"v": 2}
    assert storage.count_states(bot["id"]) == 1


def test_unknown_ticker_and_account_fail_alone(storage, bot, registered):
    outcomes = storage.write_states(
        Credentials(bot["id"], bot["keyHash"]),
        [write(), write(ticker=TICKER_UNKNOWN), write(account=TICKER_UNKNOWN), write(ACCOUNT_1, TICKER_MSFT)],
    )
    assert outcomes[1] is ItemError.TICKER_NOT_FOUND
    assert outcomes[2] is ItemError.ACCOUNT_NOT_FOUND
    assert isinstance(outcomes[0], StateRow) and isinstance(outcomes[3], StateRow)
    assert storage.count_states() == 2


def test_unknown_ticker_is_reported_before_unknown_account(storage, bot, registered):
    # The spec's example item names neither a registered account nor ticker: "Ticker not found".
    [outcome] = storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(TICKER_UNKNOWN, TICKER_UNKNOWN)])
    assert outcome is ItemError.TICKER_NOT_FOUND


# A trigger that fails a write after the item already changed a row.
REFUSE_BOOM = {
    "sqlite": [
        """CREATE TRIGGER refuse_boom AFTER UPDATE ON user_bot_states
           WHEN NEW.state LIKE '%boom%' BEGIN SELECT RAISE(ABORT, 'boom refused'); END"""
    ],
    "postgresql": [
        """CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.state::text LIKE '%boom%' THEN RAISE EXCEPTION 'boom refused'; END IF; RETURN NEW; END $$""",
        "CREATE TRIGGER refuse_boom AFTER UPDATE ON user_bot_states FOR EACH ROW EXECUTE FUNCTION refuse_boom()",
    ],
}


def test_a_failing_item_is_rolled_back_without_undoing_the_others(backend, database, storage, bot, registered):
    # A real database failure inside one item's savepoint.
    for statement in REFUSE_BOOM[backend]:
        execute_sql(database, statement)
    storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(state={"v": "before"})])
    outcomes = storage.write_states(
        Credentials(bot["id"], bot["keyHash"]),
        [write(ACCOUNT_1, TICKER_MSFT, {"v": 1}), write(state={"v": "boom"}), write(ACCOUNT_1, TICKER_AAPL, {"v": 3})],
    )
    assert outcomes[1] is ItemError.FAILED
    assert isinstance(outcomes[0], StateRow) and isinstance(outcomes[2], StateRow)
    assert json.loads(storage.get_state(bot["id"], ACCOUNT_0, TICKER_AAPL).state_json) == {"v": "before"}
    assert json.loads(storage.get_state(bot["id"], ACCOUNT_1, TICKER_AAPL).state_json) == {"v": 3}


def test_same_key_twice_applies_in_order(storage, bot, registered):
    outcomes = storage.write_states(
        Credentials(bot["id"], bot["keyHash"]), [write(state={"v": 1}), write(state={"v": 2})]
    )
    assert outcomes[0].id == outcomes[1].id
    assert json.loads(storage.get_state(bot["id"], ACCOUNT_0, TICKER_AAPL).state_json) == {"v": 2}


def test_bots_do_not_share_rows(storage, bot, registered):
    other = storage.create_bot("other", "Other", "0" * 64)
    storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(state={"mine": True})])
    [theirs] = storage.write_states(Credentials(other["id"], "0" * 64), [write(state={"theirs": True})])
    assert theirs.bot_id == other["id"]
    assert json.loads(storage.get_state(bot["id"], ACCOUNT_0, TICKER_AAPL).state_json) == {"mine": True}


def test_deleting_a_bot_cascades_to_its_states_only(storage, bot, registered):
    other = storage.create_bot("other", "Other", "0" * 64)
    storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(), write(ACCOUNT_1, TICKER_MSFT)])
    storage.write_states(Credentials(other["id"], "0" * 64), [write()])
    deleted = storage.delete_bot("my-bot")
    assert deleted["states"] == 2
    assert storage.count_states() == 1
    with pytest.raises(NotFound):
        storage.delete_bot("my-bot")


def test_deleting_an_account_or_ticker_leaves_no_orphans(database, storage, bot, registered):
    storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(), write(ACCOUNT_1, TICKER_MSFT)])
    execute_sql(database, "DELETE FROM accounts WHERE id = ?", [ACCOUNT_0])
    execute_sql(database, "DELETE FROM tickers WHERE id = ?", [TICKER_MSFT])
    assert storage.count_states() == 0


@pytest.mark.parametrize(
    "call",
    (
        lambda s: s.create_bot("my-bot", "again", "0" * 64),
        lambda s: s.add_account(ACCOUNT_0, None),
        lambda s: s.add_ticker("AAPL", "11111111-1111-1111-1111-111111111111"),
        lambda s: s.add_ticker("NEW", TICKER_AAPL),
        lambda s: s.import_tickers([("AAPL", "11111111-1111-1111-1111-111111111111")]),
    ),
)
def test_unique_keys_raise_conflict(storage, bot, registered, call):
    with pytest.raises(Conflict):
        call(storage)


def test_imports_are_idempotent(storage):
    rows = [(ACCOUNT_0, "a"), (ACCOUNT_1, None)]
    assert storage.import_accounts(rows) == 2
    assert storage.import_accounts(rows) == 0
    assert storage.import_tickers([("AAPL", TICKER_AAPL), ("MSFT", None)]) == 2
    assert storage.import_tickers([("AAPL", TICKER_AAPL), ("MSFT", None)]) == 0
    assert [t["symbol"] for t in storage.list_tickers()] == ["AAPL", "MSFT"]


def test_rotating_a_key_replaces_the_hash(storage, bot):
    storage.replace_bot_key("my-bot", "f" * 64)
    assert storage.find_bot_credentials("my-bot") == (bot["id"], (("f" * 64, None, "write"),))
    with pytest.raises(NotFound):
        storage.replace_bot_key("nope", "f" * 64)


def test_migrate_is_idempotent_and_names_the_steps_it_applied(backend, storage):
    assert storage.migrate() == []
    if backend == "sqlite":
        assert storage.schema_version() == [m.name for m in migrations._migrations]
    else:  # a new database gets the baseline, then any steps after it
        assert storage.schema_version() == [postgres_schema.BASELINE, *(name for name, _ in postgres_schema.MIGRATIONS)]


@pytest.mark.sqlite_only("SQLite's journal")
def test_the_database_uses_wal(backend, storage):
    assert sqlite_utils.Database(storage.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_old_database_file_is_upgraded_without_losing_rows(tmp_path):
    path = str(tmp_path / "old.db")
    newest = migrations._migrations[-1].name
    # A database made by the release before the newest migration, holding data.
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before=newest)
    old.execute(
        "INSERT INTO bots (id, slug, name, created_at) VALUES ('b', 'old-bot', 'Old', '2026-01-01T00:00:00.000Z')"
    )
    old.execute("INSERT INTO bot_keys (bot_id, key_hash, created_at) VALUES ('b', 'hash', '2026-01-01T00:00:00.000Z')")
    old.execute("INSERT INTO accounts VALUES (?, 'acct', '2026-01-01T00:00:00.000Z')", [ACCOUNT_0])
    old.execute("INSERT INTO tickers VALUES (?, 'AAPL', '2026-01-01T00:00:00.000Z')", [TICKER_AAPL])
    old.execute(
        "INSERT INTO user_bot_states (id, bot_id, user_broker_account_id, ticker_id, state, created_at, updated_at)"
        " VALUES ('s', 'b', ?, ?, '{\"v\":1}', 'c', 'u')",
        [ACCOUNT_0, TICKER_AAPL],
    )
    old.conn.close()

    storage = SQLiteStorage(path)
    assert storage.migrate() == [newest]
    assert storage.migrate() == []
    upgraded = storage.get_state("b", ACCOUNT_0, TICKER_AAPL)
    assert (json.loads(upgraded.state_json), upgraded.version) == ({"v": 1}, 1)
    assert storage.get_bot("old-bot")["states"] == 1
    assert storage.find_bot_credentials("old-bot") == ("b", (("hash", None, "write"),))  # its key still works
    # The rows there are the change log's first entries.
    history, _ = storage.state_history("b", ACCOUNT_0, TICKER_AAPL, 10)
    assert [(change.op, change.version, change.state_json, change.at) for change in history] == [
        ("upsert", 1, '{"v":1}', "u")
    ]
    storage.close()


def test_a_write_lock_held_elsewhere_past_the_timeout_raises_busy(tmp_path):
    storage = SQLiteStorage(str(tmp_path / "busy.db"), busy_timeout_ms=100)
    storage.migrate()
    other = sqlite3.connect(storage.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseBusy):
            storage.create_bot("x", "x", "0" * 64)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert storage.create_bot("x", "x", "0" * 64)["slug"] == "x"
    storage.close()


@pytest.mark.sqlite_only("SQLite's connections, WAL and checkpoints")
def test_connections_have_foreign_keys_on(storage):
    with storage._reading() as db:
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_many_distinct_items_map_back_to_their_own_rows_across_chunks(storage, bot):
    # Items without expectedVersion are written in multi-row chunks; results come
    # back in any order and must still land on the right item, chunk after chunk.
    accounts = [f"00000000-0000-4000-8000-{n:012d}" for n in range(40)]
    tickers = [f"10000000-0000-4000-8000-{n:012d}" for n in range(30)]
    storage.import_accounts([(a, None) for a in accounts])
    storage.import_tickers([(f"T{n}", t) for n, t in enumerate(tickers)])
    keys_ = [(a, t) for a in accounts for t in tickers]  # 1200 items: three chunks
    writes = [StateWrite(a, t, json.dumps({"n": n})) for n, (a, t) in enumerate(keys_)]
    first = storage.write_states(Credentials(bot["id"], bot["keyHash"]), writes)
    again = storage.write_states(Credentials(bot["id"], bot["keyHash"]), writes[::-1])
    for n, (a, t) in enumerate(keys_):
        row = first[n]
        assert (row.account_id, row.ticker_id, json.loads(row.state_json), row.version) == (a, t, {"n": n}, 1)
        assert again[len(keys_) - 1 - n].id == row.id and again[len(keys_) - 1 - n].version == 2
        assert json.loads(storage.get_state(bot["id"], a, t).state_json) == {"n": n}
    assert storage.count_states(bot["id"]) == len(keys_)


# Each way the one-statement write of a single item must refuse, with what it is
# given. Refusing means no row back and nothing changed; the full path then
# reports the reason. Writing anyway would skip a check the full path makes.
STORED = {"keep": "x" * 40}
REFUSALS = (
    ("another key", dict(key_hash="0" * 64)),
    ("unknown account", dict(write=StateWrite(ACCOUNT_1.replace("1", "9"), TICKER_AAPL, "{}"))),
    ("unknown ticker", dict(write=StateWrite(ACCOUNT_0, TICKER_UNKNOWN, "{}"))),
    ("new row, expected version 1", dict(write=StateWrite(ACCOUNT_1, TICKER_MSFT, "{}", 1))),
    ("stored row, expected version 0", dict(write=StateWrite(ACCOUNT_0, TICKER_AAPL, "{}", 0))),
    ("stored row, expected version 2", dict(write=StateWrite(ACCOUNT_0, TICKER_AAPL, "{}", 2))),
    (
        "replacement too large",
        dict(write=StateWrite(ACCOUNT_0, TICKER_AAPL, json.dumps({"a": "é" * 20})), max_state_bytes=30),
    ),
    (
        "new row too large",
        dict(write=StateWrite(ACCOUNT_1, TICKER_MSFT, json.dumps({"a": "x" * 40})), max_state_bytes=30),
    ),
    (
        "merge too large once merged",
        dict(write=StateWrite(ACCOUNT_0, TICKER_AAPL, '{"more": 1}'), merge=True, max_state_bytes=58),
    ),
    (
        "merge into a new row too large",
        dict(write=StateWrite(ACCOUNT_1, TICKER_MSFT, json.dumps({"a": "x" * 40})), merge=True, max_state_bytes=30),
    ),
)


@pytest.mark.parametrize("case", [case for _, case in REFUSALS], ids=[name for name, _ in REFUSALS])
def test_the_one_statement_write_refuses_what_a_check_would(storage, bot, registered, case):
    storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(state=STORED)])
    before = storage.get_state(bot["id"], ACCOUNT_0, TICKER_AAPL)
    args = dict(key_hash=bot["keyHash"], write=write(), merge=False, max_state_bytes=None) | case
    credentials = Credentials(bot["id"], args["key_hash"])
    assert storage._write_lone(credentials, args["write"], args["merge"], args["max_state_bytes"]) is None
    assert storage.get_state(bot["id"], ACCOUNT_0, TICKER_AAPL) == before
    assert storage.count_states() == 1


@pytest.mark.parametrize(
    "merge,max_state_bytes,stored",
    (
        (False, None, {"v": 2}),
        (False, 8, {"v": 2}),
        (True, None, {"keep": "x" * 40, "v": 2}),
        (True, 57, {"keep": "x" * 40, "v": 2}),
    ),
)
def test_the_one_statement_write_writes_when_every_check_passes(
    backend, storage, bot, registered, merge, max_state_bytes, stored
):
    if merge and backend == "postgresql":
        pytest.skip("PostgreSQL has no json_patch: a merge always takes the transaction")
    storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(state=STORED)])
    item = StateWrite(ACCOUNT_0, TICKER_AAPL, '{"v":2}', 1)
    row = storage._write_lone(Credentials(bot["id"], bot["keyHash"]), item, merge, max_state_bytes)
    assert (json.loads(row.state_json), row.version) == (stored, 2)
    assert storage.get_state(bot["id"], ACCOUNT_0, TICKER_AAPL) == row


def wal_frames(storage):
    with storage._reading() as db:
        return db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]


@pytest.mark.sqlite_only("SQLite's connections, WAL and checkpoints")
def test_with_checkpoints_started_writes_leave_the_wal_to_the_checkpointer(storage, bot, registered):
    storage.start_checkpoints(interval=3600)  # only the explicit calls below
    for n in range(30):
        storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(state={"n": n})])
    with storage._reading() as db:
        assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    with storage._writing() as db:
        assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    assert wal_frames(storage) >= 30  # nothing started the WAL over meanwhile
    storage.close()
    assert storage._checkpointer is None


@pytest.mark.sqlite_only("SQLite's connections, WAL and checkpoints")
def test_a_checkpoint_starts_a_grown_wal_over(storage, bot, registered, monkeypatch):
    # A passive checkpoint cannot copy what a reader may still need, or what is
    # written while it runs, and the WAL starts over only once all of it is
    # copied: under steady writes it grew by hundreds of MB. Here a reader holds
    # back the passive pass, and lets go once the checkpoint holds the write lock.
    monkeypatch.setattr("backends.sqlite_upkeep.WAL_RESTART_FRAMES", 20)
    storage.start_checkpoints(interval=3600)  # only the explicit call below
    for n in range(30):
        storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(state={"n": n})])
    reader = sqlite3.connect(storage.path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM user_bot_states").fetchone()
    for n in range(30):
        storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(state={"n": n})])
    write_lock = storage._write_lock

    class ReaderLetsGoFirst:
        def acquire(self, timeout=-1):
            reader.execute("COMMIT")
            return write_lock.acquire(timeout=timeout)

        def release(self):
            write_lock.release()

    monkeypatch.setattr(storage, "_write_lock", ReaderLetsGoFirst())
    storage.checkpoint()
    monkeypatch.setattr(storage, "_write_lock", write_lock)
    reader.close()
    storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(state={"n": "after"})])
    assert wal_frames(storage) < 10
    assert json.loads(storage.get_state(bot["id"], ACCOUNT_0, TICKER_AAPL).state_json) == {"n": "after"}
    storage.close()


@pytest.mark.sqlite_only("SQLite's connections, WAL and checkpoints")
def test_the_checkpoint_thread_keeps_the_wal_small(storage, bot, registered, monkeypatch):
    monkeypatch.setattr("backends.sqlite_upkeep.WAL_RESTART_FRAMES", 20)
    storage.start_checkpoints(interval=0.01)
    deadline = time.monotonic() + 10
    for n in range(100):
        storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(state={"n": n})])
        time.sleep(0.002)
    # The frame count SQLite reports drops only once a write follows the checkpoint that started
    # the WAL over: a busy machine can leave the checkpointer behind the last of the 100 writes.
    while wal_frames(storage) >= 20 and time.monotonic() < deadline:
        time.sleep(0.01)
        storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write(state={"n": "again"})])
    assert wal_frames(storage) < 20
    storage.close()


@pytest.mark.sqlite_only("SQLite's connections, WAL and checkpoints")
def test_writers_in_any_thread_share_one_connection(storage, bot, registered):
    # A connection drops its page cache whenever another connection has written.
    import threading

    seen = []

    def write_and_note():
        storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write()])
        with storage._writing() as conn:
            seen.append(conn)

    threads = [threading.Thread(target=write_and_note) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(conn) for conn in seen}) == 1


@pytest.mark.sqlite_only("SQLite's connections, WAL and checkpoints")
def test_closing_a_storage_with_checkpoints_gives_checkpoints_back_to_sqlite(storage, bot, registered):
    # Regression: connections opened after close() kept wal_autocheckpoint = 0,
    # with no thread left to checkpoint, and the WAL grew without bound.
    storage.start_checkpoints(interval=3600)
    storage.close()
    storage.write_states(Credentials(bot["id"], bot["keyHash"]), [write()])
    with storage._writing() as db:
        assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000


def test_an_sqlite_too_old_for_the_schema_is_named_at_start(tmp_path, monkeypatch):
    # Python may be linked to an older SQLite than the statements need (RETURNING: 3.35).
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    storage = SQLiteStorage(str(tmp_path / "old-sqlite.db"))
    with pytest.raises(StorageError, match=r"needs SQLite 3\.35 or newer .*this Python has 3\.31\.1"):
        storage.migrate()
    assert not (tmp_path / "old-sqlite.db").exists()


def test_a_refusal_is_decided_when_its_item_comes_not_before_the_request(storage, bot, registered):
    # The second item's expected version is checked against what the first wrote.
    big = json.dumps({"a": "x" * 100})
    outcomes = storage.write_states(
        Credentials(bot["id"], bot["keyHash"]),
        [StateWrite(ACCOUNT_0, TICKER_AAPL, '{"a":1}'), StateWrite(ACCOUNT_0, TICKER_AAPL, big, 0)],
        max_state_bytes=50,
    )
    assert outcomes[1] == VersionConflict(0, 1)


@pytest.mark.sqlite_only("SQLite's largest value, lowered on its writer connection")
def test_a_bulk_merge_reads_stored_states_row_by_row_not_as_one_value(storage, bot):
    # Regression: a merge read every stored state of the request into one JSON value, which
    # past SQLite's largest value (about 1 GB at most) raised an error, answered 500.
    accounts = [f"00000000-0000-4000-8000-{n:012d}" for n in range(40)]
    storage.import_accounts([(a, None) for a in accounts])
    storage.add_ticker("AAPL", TICKER_AAPL)
    credentials = Credentials(bot["id"], bot["keyHash"])
    big = [StateWrite(a, TICKER_AAPL, json.dumps({"pad": "x" * 60_000})) for a in accounts]
    storage.write_states(credentials, big)
    with storage._writing(transaction=False) as conn:
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 2_000_000)  # 40 states of 60 KB do not fit in one value
    patches = [StateWrite(a, TICKER_AAPL, '{"more":1}') for a in accounts]
    outcomes = storage.write_states(credentials, patches, merge=True)
    assert [(json.loads(o.state_json)["more"], o.version) for o in outcomes] == [(1, 2)] * len(accounts)
