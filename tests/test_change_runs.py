"""How the feed finds a bot's entries among other bots': on SQLite by runs (schema 0007), on
PostgreSQL by an index. Whatever the writes' interleaving, pruning, deletes and upgrades, each
bot's feed is exactly its own entries, once each, in seq order."""

import contextlib
import json
import random
import sqlite3
import uuid

import pytest
import sqlite_utils
from conftest import execute_sql, register_ids, settings_of

import keys
from app import create_app
from backends.sqlite import SQLiteStorage
from backends.sqlite_schema import migrations
from storage import Credentials, StateWrite

ACCOUNTS = [str(uuid.UUID(int=(1 << 126) | n)) for n in range(6)]
TICKERS = [str(uuid.UUID(int=(2 << 126) | n)) for n in range(3)]
BOTS = 3


def make_bots(storage, count=BOTS):
    """`count` bots' Credentials, on the module's accounts and tickers."""
    register_ids(storage, ACCOUNTS, TICKERS)
    bots = []
    for n in range(count):
        key_hash = keys.hash_key(keys.generate_key())
        bots.append(Credentials(storage.create_bot(f"bot-{n}", f"Bot {n}", key_hash)["id"], key_hash))
    return bots


def interleave(storage, bots, rng, writes=40):
    """Writes of 1 to 5 items and deletes, each by a bot picked at random: runs long and short."""
    for n in range(writes):
        bot = rng.choice(bots)
        if rng.random() < 0.2:
            storage.delete_state(bot, rng.choice(ACCOUNTS), rng.choice(TICKERS))
            continue
        keys_ = rng.sample([(a, t) for a in ACCOUNTS for t in TICKERS], rng.randint(1, 5))
        storage.write_states(bot, [StateWrite(a, t, json.dumps({"n": n})) for a, t in keys_])


def logged(storage, bot):
    """The bot's entries' seqs as the database holds them, read past botstate."""
    rows = execute_sql(
        settings_of(storage), "SELECT seq FROM state_changes WHERE bot_id = ? ORDER BY seq", (bot.bot_id,)
    )
    return [seq for (seq,) in rows]


def read_feed(storage, bot, limit, after=0):
    """Every seq the bot's feed hands out from `after` on, page by page."""
    seqs = []
    while True:
        page, next_after = storage.list_changes(bot, after, limit)
        seqs += [change.seq for change in page]
        if next_after == after:
            return seqs
        after = next_after


def assert_each_bot_reads_its_own(storage, bots, limits=(1, 2, 7, 1000), after=0):
    for bot in bots:
        expected = [seq for seq in logged(storage, bot) if seq > after]
        for limit in limits:
            assert read_feed(storage, bot, limit, after) == expected, (bot.bot_id, limit)


def empty_runs(storage):
    """SQLite: the runs that hold no entry (pruning drops them)."""
    return execute_sql(
        settings_of(storage),
        "SELECT first_seq FROM change_runs AS r WHERE NOT EXISTS (SELECT 1 FROM state_changes AS e"
        " WHERE e.seq >= r.first_seq AND e.seq < coalesce((SELECT min(first_seq) FROM change_runs"
        " WHERE first_seq > r.first_seq), 1 << 62))",
    )


@pytest.mark.parametrize("seed", range(3))
def test_interleaved_bots_each_read_exactly_their_own_entries_at_any_page_size(storage, seed):
    bots = make_bots(storage)
    interleave(storage, bots, random.Random(seed))
    assert sum(len(logged(storage, bot)) for bot in bots) == storage.count_changes()
    assert_each_bot_reads_its_own(storage, bots)
    for bot in bots:
        assert storage.count_changes(bot.bot_id) == len(logged(storage, bot))


def test_after_pruning_each_bot_still_reads_its_own_and_no_run_is_left_empty(new_database):
    storage = create_app({**new_database(), "HISTORY_DAYS": 0}).extensions["botstate.storage"]
    try:
        bots = make_bots(storage)
        rng = random.Random(7)
        interleave(storage, bots, rng, writes=60)
        assert storage.prune_changes() > 0
        floor = max(
            (row[0] for row in execute_sql(settings_of(storage), "SELECT pruned_seq FROM change_horizons")), default=0
        )
        assert_each_bot_reads_its_own(storage, bots, after=floor)
        if storage.dialect.name == "sqlite":
            assert empty_runs(storage) == []
        interleave(storage, bots, rng, writes=20)  # written after the pruning: found too
        assert_each_bot_reads_its_own(storage, bots, after=floor)
    finally:
        storage.close()


def test_a_deleted_bots_entries_and_runs_go_and_the_others_read_on(storage):
    bots = make_bots(storage)
    rng = random.Random(11)
    interleave(storage, bots, rng)
    storage.delete_bot("bot-1")
    gone, kept = bots[1], [bots[0], bots[2]]
    assert logged(storage, gone) == []
    if storage.dialect.name == "sqlite":
        assert execute_sql(settings_of(storage), "SELECT * FROM change_runs WHERE bot_id = ?", (gone.bot_id,)) == []
        assert empty_runs(storage) == []
    assert_each_bot_reads_its_own(storage, kept)
    interleave(storage, kept, rng, writes=15)
    assert_each_bot_reads_its_own(storage, kept)


@pytest.mark.sqlite_only("runs are SQLite's")
def test_a_log_made_before_runs_is_upgraded_to_them(tmp_path):
    path = str(tmp_path / "old.db")
    old = sqlite_utils.Database(path)
    migrations.apply(old, stop_before="0007_change_runs")
    stamp = "2026-01-01T00:00:00.000Z"
    key_hash = keys.hash_key(keys.generate_key())
    for bot in ("a", "b"):
        old.execute(
            "INSERT INTO bots (id, slug, name, created_at) VALUES (?, ?, ?, ?)", [bot, f"bot-{bot}", bot, stamp]
        )
        old.execute("INSERT INTO bot_keys (bot_id, key_hash, created_at) VALUES (?, ?, ?)", [bot, key_hash, stamp])
    register_ids(SQLiteStorage(path), ACCOUNTS, TICKERS)
    # Rows written by the two bots in turns; the release before logged them by its triggers.
    for n, bot in enumerate("aabbbabaab"):
        old.execute(
            "INSERT INTO user_bot_states (id, bot_id, user_broker_account_id, ticker_id, state, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, '{}', ?, ?)",
            [f"row-{n}", bot, ACCOUNTS[n % len(ACCOUNTS)], TICKERS[n // len(ACCOUNTS)], stamp, stamp],
        )
    old.conn.close()

    storage = SQLiteStorage(path)
    assert storage.migrate() == [m.name for m in migrations._migrations if m.name >= "0007_change_runs"]
    # A run starts wherever the bot changes: seqs 1-2 a, 3-5 b, 6 a, 7 b, 8-9 a, 10 b.
    runs = execute_sql({"DATABASE": path}, "SELECT first_seq, bot_id FROM change_runs ORDER BY first_seq")
    assert runs == [(1, "a"), (3, "b"), (6, "a"), (7, "b"), (8, "a"), (10, "b")]
    assert execute_sql({"DATABASE": path}, "SELECT name FROM sqlite_master WHERE name = 'state_changes_feed'") == []
    assert_each_bot_reads_its_own(storage, [Credentials(bot, key_hash) for bot in "ab"])
    storage.close()


def feed_ops(storage, bot, after, limit):
    """SQLite: the bytecode operations (in thousands) that one feed request runs."""
    conn = storage._db()
    thousands = [0]
    conn.set_progress_handler(lambda: thousands.__setitem__(0, thousands[0] + 1), 1000)
    try:
        page, _ = storage.list_changes(bot, after, limit)
    finally:
        conn.set_progress_handler(None, 0)
    return page, thousands[0]


@pytest.mark.sqlite_only("runs are SQLite's")
def test_a_poll_of_a_bot_that_writes_rarely_reads_only_its_own_runs(storage):
    rare, busy = make_bots(storage, count=2)
    every, count = 200, 100  # one entry of the rare bot in every 200: a run each
    stamp = "2026-01-01T00:00:00.000Z"
    with contextlib.closing(sqlite3.connect(storage.path)) as conn, conn:
        conn.executemany(
            "INSERT INTO state_changes (seq, bot_id, account_id, ticker_id, row_id, op, version, state, created_at, at)"
            " VALUES (?, ?, ?, ?, ?, 'upsert', 1, '{}', ?, ?)",
            [
                (seq, (rare if seq % every == 0 else busy).bot_id, ACCOUNTS[0], TICKERS[0], f"r{seq}", stamp, stamp)
                for seq in range(1, every * count + 1)
            ],
        )
    for after, expected in ((0, count), (every * count // 2, count // 2)):
        page, thousands = feed_ops(storage, rare, after, count)
        assert [change.seq for change in page] == list(range(after + every, every * count + 1, every))
        assert len(page) == expected
        # Each of its runs is read from where the page is: about one step per run, not the
        # busy bot's entries between them (over 10,000 thousand operations when it was).
        assert thousands < 300


@pytest.mark.sqlite_only("runs are SQLite's")
def test_a_run_left_over_where_an_entry_goes_is_replaced_by_the_entrys_own(storage):
    mine, other = make_bots(storage, count=2)
    write = [StateWrite(ACCOUNTS[0], TICKERS[0], json.dumps({"n": 1}))]
    storage.write_states(mine, write)
    # A run of another bot where the next entry goes, as deleted entries of an older release left it.
    [(largest,)] = execute_sql(settings_of(storage), "SELECT max(seq) FROM state_changes")
    execute_sql(settings_of(storage), "INSERT INTO change_runs VALUES (?, ?)", (largest + 1, other.bot_id))
    storage.write_states(mine, write)
    assert read_feed(storage, mine, 100) == logged(storage, mine) == [largest, largest + 1]
    assert empty_runs(storage) == []
