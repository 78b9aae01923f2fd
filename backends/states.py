"""The state rows, for both backends: the one write algorithm, reads, pages and deletes."""

import contextlib
import logging
import os

import orjson

from backends import rules
from records import DEFAULT_PAGE_BYTES, PAGE_ROW_OVERHEAD, ItemError, StateRow, VersionConflict

log = logging.getLogger("botstate.storage")

UNBOUNDED_PAGE_BYTES = 2**62  # max_bytes=None: the row limit alone bounds the page
# Tries of a write transaction undone for a StalePlan, or that the database aborted to break a deadlock.
WRITE_ATTEMPTS = 3


def new_ids(count):
    """`count` random (version 4) UUIDs, as uuid.uuid4() writes them, from one read of the system's randomness."""
    raw = bytearray(os.urandom(16 * count))
    for start in range(0, 16 * count, 16):
        raw[start + 6] = raw[start + 6] & 0x0F | 0x40  # version 4
        raw[start + 8] = raw[start + 8] & 0x3F | 0x80  # the RFC 4122 variant
    digits = raw.hex()
    return [
        "-".join(
            (
                digits[i : i + 8],
                digits[i + 8 : i + 12],
                digits[i + 12 : i + 16],
                digits[i + 16 : i + 20],
                digits[i + 20 : i + 32],
            )
        )
        for i in range(0, 32 * count, 32)
    ]


class StalePlan(Exception):
    """A row changed between a write's read and its write: the transaction is undone and tried again."""


class ItemFailure(Exception):
    """A statement failed for one item, not for the database: the write is done again item by item."""


class States:
    """The state methods of storage.Storage, over SQLStorage's statements and a backend's transactions."""

    def write_states(self, credentials, writes, merge=False, max_state_bytes=None, idempotent=None):
        """Write StateWrites in order, each item isolated from the others (see storage.Storage)."""
        if len(writes) == 1 and idempotent is None:
            row = self._write_lone(credentials, writes[0], merge, max_state_bytes)
            if row is not None:
                return [row]
        ids = new_ids(len(writes))  # before the write lock: reading randomness gives up the GIL
        failures = []

        def write(conn, isolated):
            failures.clear()  # of an attempt that was undone
            if idempotent is not None:
                self._claim_answer(conn, credentials, idempotent)
            outcomes = self._write_planned(conn, credentials, writes, merge, max_state_bytes, ids, failures, isolated)
            if idempotent is not None:
                self._keep_answer(conn, credentials, idempotent, 200, idempotent.answer(outcomes))
            return outcomes

        try:
            outcomes = self._in_transaction(lambda conn: write(conn, isolated=False))
        except ItemFailure:  # nobody expected that: undone, then each item alone, so one bad item fails alone
            outcomes = self._in_transaction(lambda conn: write(conn, isolated=True))
        if failures:
            log.error(
                "%d state write(s) failed for bot %s; the first:",
                len(failures),
                credentials.bot_id,
                exc_info=failures[0],
            )
        return outcomes

    def _write_planned(self, conn, credentials, writes, merge, max_state_bytes, ids, failures, isolated):
        """write_states() in a transaction: one read, the rules decide, one bulk write; `isolated`,
        a savepoint per item instead."""
        d = self.dialect
        lock = d.lock_rows_sql()
        if lock is not None:
            keys = [f"{credentials.bot_id}/{w.account_id}/{w.ticker_id}" for w in writes]
            self._run(conn, lock, {"keys": keys}).fetchall()
        # A row another writer created after the read (a lone write takes no row locks first)
        # makes the plan stale: read again, in this transaction. Each try locks the rows it
        # finds, so every key can surprise it once at most.
        for _ in range(len({(w.account_id, w.ticker_id) for w in writes}) + 1):
            found = self._found(conn, credentials, writes, merge)
            rules.verify_key(found.bot_exists, found.key_works)
            decider = rules.Decider(credentials.bot_id, found, merge, max_state_bytes, ids)
            outcomes, rows = rules.plan(decider, writes)
            if isolated:
                break
            try:
                # Each statement in the write lock is a wait for the GIL: SQLite, whose write
                # transaction holds the whole database, never finds a row changed, and needs no savepoint.
                with self._savepoint(conn) if self.savepoint_per_write else contextlib.nullcontext():
                    self._store(conn, rows, found.rows)
                return outcomes
            except StalePlan:
                if not self.savepoint_per_write:
                    raise  # what it stored stays: the whole transaction is tried again
                continue
            except Exception as error:
                if self._item_failure(error):
                    raise ItemFailure(str(error)) from error
                raise
        else:
            raise StalePlan("the rows kept changing under the write")
        decider = rules.Decider(credentials.bot_id, found, merge, max_state_bytes, ids)
        outcomes = []
        for write in writes:
            outcome = decider.decide(write)
            if isinstance(outcome, StateRow):
                stored = decider.rows.get((outcome.account_id, outcome.ticker_id))
                try:
                    with self._savepoint(conn):
                        self._store(
                            conn, [outcome], {} if stored is None else {(stored.account_id, stored.ticker_id): stored}
                        )
                    decider.accept(outcome)
                except Exception as error:
                    if not self._item_failure(error):
                        raise
                    failures.append(error)
                    outcome = ItemError.FAILED
            outcomes.append(outcome)
        return outcomes

    def _found(self, conn, credentials, writes, merge):
        """rules.Found for these writes, from one read (and, for a merge, one of the stored states)."""
        d = self.dialect
        sql = self._once("found", lambda: d.found_sql(self.key_works(":bot", ":key", lock=True, writing=True)))
        params = d.found_params(credentials.bot_id, credentials.key_hash, writes)
        bot_exists, key_works, accounts, tickers, rows, now = self._run(conn, sql, params).fetchone()
        states = {}
        if merge:
            # Row by row, not in the one value of the first read: together they may pass the
            # largest value a database holds (SQLite's and PostgreSQL's are about 1 GB).
            states = {(account, ticker): state for account, ticker, state in self._run(conn, d.states_sql(), params)}
        return rules.Found(
            bool(bot_exists),
            bool(key_works),
            frozenset(_listed(accounts)),
            frozenset(_listed(tickers)),
            {
                (account, ticker): StateRow(
                    row_id,
                    credentials.bot_id,
                    account,
                    ticker,
                    states.get((account, ticker)),
                    version,
                    created,
                    updated,
                )
                for account, ticker, row_id, version, created, updated in _listed(rows)
            },
            now,
        )

    def _store(self, conn, rows, stored):
        """Write the rows a plan decided: new ones inserted, the others updated from the version
        `stored` holds; StalePlan when another writer changed one meanwhile."""
        d = self.dialect
        created = [row for row in rows if (row.account_id, row.ticker_id) not in stored]
        updated = [row for row in rows if (row.account_id, row.ticker_id) in stored]
        if created:
            sql = (
                "INSERT INTO user_bot_states"
                f" (id, bot_id, user_broker_account_id, ticker_id, state, version, created_at, updated_at"
                f"{d.log_seq_column}) VALUES (:id, :bot, :account, :ticker, {d.state_param('state')}, :version,"
                f" {d.time_param('created')}, {d.time_param('updated')}{d.log_seq_value})"
                " ON CONFLICT (bot_id, user_broker_account_id, ticker_id) DO NOTHING"
            )
            if self._many(conn, sql, [_row_params(row) for row in created]) != len(created):
                raise StalePlan("a row was created meanwhile")
        if updated:
            sql = (
                f"UPDATE user_bot_states SET state = {d.state_param('state')}, version = :version,"
                f" updated_at = {d.time_param('updated')}{d.log_seq_set}"
                " WHERE bot_id = :bot AND user_broker_account_id = :account AND ticker_id = :ticker"
                " AND version = :prior"
            )
            params = [dict(_row_params(row), prior=stored[row.account_id, row.ticker_id].version) for row in updated]
            if self._many(conn, sql, params) != len(updated):
                raise StalePlan("a row was changed or deleted meanwhile")

    def read_state(self, credentials, account_id, ticker_id):
        """get_state() in the same read as a check that the key still works (see storage.Storage)."""
        sql = self._once(
            "read_state",
            lambda: f"SELECT {self.key_works('bots.id', ':key')}, {self.state_columns('s')}"
            " FROM bots LEFT JOIN user_bot_states AS s ON s.bot_id = bots.id"
            " AND s.user_broker_account_id = :account AND s.ticker_id = :ticker WHERE bots.id = :bot",
        )
        params = {"key": credentials.key_hash, "account": account_id, "ticker": ticker_id, "bot": credentials.bot_id}
        with self._reading() as conn:
            found = self._run(conn, sql, params).fetchone()
        rules.verify_key(found is not None, found and found[0])
        return None if found[1] is None else StateRow(*found[1:])

    def get_state(self, bot_id, account_id, ticker_id):
        """The bot's StateRow for this account and ticker, or None."""
        sql = (
            f"SELECT {self._state_columns} FROM user_bot_states"
            " WHERE bot_id = :bot AND user_broker_account_id = :account AND ticker_id = :ticker"
        )
        with self._reading() as conn:
            row = self._run(conn, sql, {"bot": bot_id, "account": account_id, "ticker": ticker_id}).fetchone()
        return None if row is None else StateRow(*row)

    def list_states(
        self,
        bot_id,
        limit,
        account_id=None,
        ticker_id=None,
        updated_since=None,
        after=None,
        credentials=None,
        max_bytes=DEFAULT_PAGE_BYTES,
    ):
        """A page of the bot's StateRows and whether more follow (see storage.Storage)."""
        d = self.dialect
        if credentials is not None:
            bot_id = credentials.bot_id
        sql = ["SELECT * FROM user_bot_states WHERE bot_id = :bot"]
        params = {
            "bot": bot_id,
            "limit": limit + 1,
            "max_bytes": UNBOUNDED_PAGE_BYTES if max_bytes is None else max_bytes,
        }
        if credentials is not None:
            sql.append(f"AND {self.key_works(':bot', ':key')}")
            params["key"] = credentials.key_hash
        for condition, name, value in (
            ("user_broker_account_id = :account", "account", account_id),
            ("ticker_id = :ticker", "ticker", ticker_id),
            # As text: the stored form sorts as the times do.
            (f"{d.time_text('updated_at')} >= :since", "since", updated_since),
        ):
            if value is not None:
                sql.append(f"AND {condition}")
                params[name] = value
        if after is not None:
            sql.append("AND (user_broker_account_id, ticker_id) > (:after_account, :after_ticker)")
            params["after_account"], params["after_ticker"] = after
        sql.append("ORDER BY user_broker_account_id, ticker_id LIMIT :limit")
        size = f"{d.byte_length('state')} + {PAGE_ROW_OVERHEAD}"
        query = (
            f"SELECT {self.state_columns('page')}, fetched FROM (SELECT *, sum({size}) OVER (ORDER BY"
            f" user_broker_account_id, ticker_id ROWS UNBOUNDED PRECEDING) - ({size}) AS before,"
            f" count(*) OVER () AS fetched FROM ({' '.join(sql)}) AS limited) AS page"
            " WHERE before < :max_bytes ORDER BY user_broker_account_id, ticker_id"
        )
        with self._reading() as conn:
            rows = self._run(conn, query, params).fetchall()
            if credentials is not None and not rows:  # none stored, or the key no longer works
                self._verify_key(conn, params)
        fetched = rows[0][-1] if rows else 0
        page = [StateRow(*row[:-1]) for row in rows[:limit]]
        return page, fetched > len(page)

    def delete_state(self, credentials, account_id, ticker_id, expected_versions=None):
        """Delete the bot's row for this account and ticker (see storage.Storage)."""
        d = self.dialect
        params = {
            "bot": credentials.bot_id,
            "key": credentials.key_hash,
            "account": account_id,
            "ticker": ticker_id,
            "any_version": expected_versions is None,
            "versions": d.set_param(expected_versions or []),
        }
        where = "bot_id = :bot AND user_broker_account_id = :account AND ticker_id = :ticker"

        def delete(conn):
            lock = d.lock_rows_sql()
            if lock is not None:
                self._run(conn, lock, {"keys": [f"{credentials.bot_id}/{account_id}/{ticker_id}"]}).fetchall()
            rules.verify_key(*self._run(conn, self.credentials_sql(lock=True, writing=True), params).fetchone())
            row = self._run(
                conn,
                f"DELETE FROM user_bot_states WHERE {where}"
                f" AND (:any_version OR {d.in_set('version', 'versions', 'bigint')}) RETURNING {self._state_columns}",
                params,
            ).fetchone()
            if row is not None:
                return StateRow(*row)
            found = self._run(conn, f"SELECT version FROM user_bot_states WHERE {where}", params).fetchone()
            return None if found is None else VersionConflict(expected_versions, found[0])

        return self._in_transaction(delete)

    def count_states(self, bot_id=None):
        """How many state rows exist, for one bot or all."""
        if bot_id is None:
            return self._scalar("SELECT count(*) FROM user_bot_states")
        return self._scalar("SELECT count(*) FROM user_bot_states WHERE bot_id = :bot", {"bot": bot_id})


def _listed(value):
    """A JSON array as a driver reads it (SQLite: text; PostgreSQL: a list; None for none) as a list."""
    if value is None:
        return []
    return orjson.loads(value) if isinstance(value, str) else value  # ids, versions and times: exact in orjson


def _row_params(row):
    """The parameters of a StateRow in _store's statements."""
    return {
        "id": row.id,
        "bot": row.bot_id,
        "account": row.account_id,
        "ticker": row.ticker_id,
        "state": row.state_json,
        "version": row.version,
        "created": row.created_at,
        "updated": row.updated_at,
    }
