"""What both backends do alike, written once over a dialect: bots, keys, accounts, tickers, states, transfers."""

import contextlib

from backends import rules
from backends.admin_keys import AdminKeys
from backends.answers import Answers
from backends.catalog import Catalog
from backends.changes import Changes
from backends.keyuses import KeyUses, reporting
from backends.pruning import Pruning
from backends.registry import Registry
from backends.states import States
from backends.transfer_sql import TRANSFER_KINDS, export_query, transfer_conflict, transfer_statement
from records import WRITE_SCOPE


class SQLStorage(Catalog, Registry, AdminKeys, States, Changes, Pruning, Answers):
    """The storage interface (storage.Storage) over the SQL both backends speak, through their dialect.

    A backend gives the connections and transactions, and tells its driver's errors apart:
    _reading(), _in_transaction(), _autocommit(), _savepoint(), _unique_violation(),
    _foreign_key_violation(), _item_failure() and _write_lone(); the rest is here.
    """

    dialect = None

    def __init__(self):
        self.key_uses = KeyUses()
        self.admin_key_uses = KeyUses()  # by (admin key name, hash)
        # Write transactions tried again after the database aborted them (GET /metrics shows it).
        self.retries = 0
        self._statements = {}
        d = self.dialect
        self._state_columns = self.state_columns()
        self._expired = f"(expires_at IS NOT NULL AND expires_at <= {d.now})"
        self._select_bots = (
            f'SELECT {d.text("id")} AS id, slug, name, {d.time_text("created_at")} AS "createdAt",'
            " (SELECT count(*) FROM user_bot_states WHERE bot_id = bots.id) AS states FROM bots"
        )

    # SQL fragments

    def state_columns(self, table=""):
        """SQL: a StateRow's columns, in its order, of the state table (or its alias `table`)."""
        d, p = self.dialect, f"{table}." if table else ""
        return (
            f"{d.text(p + 'id')}, {d.text(p + 'bot_id')}, {d.text(p + 'user_broker_account_id')},"
            f" {d.text(p + 'ticker_id')}, {d.text(p + 'state')}, {p}version,"
            f" {d.time_text(p + 'created_at')}, {d.time_text(p + 'updated_at')}"
        )

    def key_works(self, bot, key_hash, lock=False, writing=False):
        """SQL: whether `key_hash` is one of the bot's keys and not past its grace period (with `writing`,
        a write key: HTTP refuses a read key's writes first, this holds whatever a server remembers).

        The key itself was compared in constant time when the request authenticated
        (keys.works); this is the check that it still works, made again in the
        statement that reads or writes, so a rotation in between is seen. With `lock`,
        it holds until the transaction ends (the dialect's key_lock).
        """
        locking = self.dialect.key_lock if lock else ""
        scope = f" AND scope = '{WRITE_SCOPE}'" if writing else ""
        return (
            f"EXISTS (SELECT 1 FROM bot_keys WHERE bot_id = {bot} AND key_hash = {key_hash}"
            f" AND NOT {self._expired}{scope}{locking})"
        )

    def credentials_sql(self, lock=False, writing=False):
        """SQL: whether the bot :bot exists, and whether the key :key works for it (with `writing`, as a write key)."""
        return f"SELECT EXISTS (SELECT 1 FROM bots WHERE id = :bot), {self.key_works(':bot', ':key', lock, writing)}"

    def _verify_key(self, conn, params):
        """Raise NotFound or StaleKey unless the bot :bot exists and the key :key works for it (rules.verify_key)."""
        rules.verify_key(*self._run(conn, self.credentials_sql(), params).fetchone())

    def _once(self, name, build):
        """The text of the statement `name`, made by build() the first time only (hot paths)."""
        sql = self._statements.get(name)
        if sql is None:
            sql = self._statements[name] = build()
        return sql

    def _run(self, conn, sql, params=()):
        """The cursor of `sql` run on `conn` with `params`."""
        return conn.execute(self.dialect.prepare(sql), params)

    def _records(self, conn, sql, params=()):
        """The rows of `sql` as dicts by column name."""
        cursor = self._run(conn, sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _read(self, sql, params=()):
        with self._reading() as conn:
            return self._records(conn, sql, params)

    def _scalar(self, sql, params=()):
        with self._reading() as conn:
            return self._run(conn, sql, params).fetchone()[0]

    def _many(self, conn, sql, rows):
        """Run `sql` once per parameter set of `rows`; how many rows it changed in all."""
        with contextlib.closing(conn.cursor()) as cursor:
            cursor.executemany(self.dialect.prepare(sql), rows)
            return cursor.rowcount

    # Moving data between databases

    def import_records(self, records, on_progress=None):
        """Upsert (kind, record) pairs in one transaction, so that each row is as its record says;
        `on_progress(n)` is called as records are done.

        Change records replace what the import of the rows logged: they are appended to the
        change log in their order, with new seqs. Raises Conflict when a record clashes with
        another row (a slug or symbol taken by another id) or names a bot, account or ticker
        that is not there.
        """
        d = self.dialect
        statements = {
            kind: d.prepare(transfer_statement(kind, lambda field: f":{field}", d.import_cast, d.differs))
            for kind in TRANSFER_KINDS
            if kind != "change"
        }

        def upsert(conn):
            logged_before = self._run(conn, "SELECT coalesce(max(seq), 0) FROM state_changes").fetchone()[0]
            changes = []
            for kind, record in reporting(records, on_progress):
                if kind == "change":
                    changes.append(record)
                    continue
                try:
                    conn.execute(statements[kind], record)
                except Exception as error:
                    if self._foreign_key_violation(error):
                        raise transfer_conflict(kind, record, foreign_key=True) from None
                    if self._unique_violation(error):
                        raise transfer_conflict(kind, record, foreign_key=False) from None
                    refusal = self._import_refused(kind, record, error)
                    if refusal is None:
                        raise
                    raise refusal from None
            if changes:
                self._import_changes(conn, logged_before, changes)

        self._in_transaction(upsert)

    def export_queries(self):
        """(kind, the SELECT of its records) for every kind, references first."""
        d = self.dialect

        def exported(column):
            if column.endswith("_at") or column == "at":
                return d.time_text(column)
            if column == "id" or column.endswith("_id") or column == "state":
                return d.text(column)
            return column

        return [(kind, export_query(kind, exported)) for kind in TRANSFER_KINDS]
