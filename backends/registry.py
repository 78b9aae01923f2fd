"""Accounts and tickers, for both backends: registered one by one, in bulk or from files; paged; deleted."""

import uuid

from backends.keyuses import reporting
from records import Conflict, DatabaseBusy, NotFound, Registered, Taken


class Registry:
    """The account and ticker methods of storage.Storage, over SQLStorage's statements."""

    def _shown(self, table):
        """SQL: the columns an account (id, name, createdAt) or a ticker (id, symbol, createdAt) is shown by."""
        d = self.dialect
        middle = "name" if table == "accounts" else "symbol"
        return f'{d.text("id")} AS id, {middle}, {d.time_text("created_at")} AS "createdAt"'

    def add_account(self, account_id, name):
        """Insert one account; raises Conflict when the id exists."""
        sql = f"INSERT INTO accounts (id, name, created_at) VALUES (:id, :name, {self.dialect.now})"
        try:
            self._in_transaction(lambda conn: self._run(conn, sql, {"id": account_id, "name": name}))
        except Exception as error:
            if self._unique_violation(error):
                raise Conflict(f"Account {account_id} already exists") from None
            raise
        return {"id": account_id, "name": name}

    def import_accounts(self, rows):
        """Insert (id, name) rows, leaving existing ids as they are; returns how many were new."""
        sql = (
            f"INSERT INTO accounts (id, name, created_at) VALUES (:id, :name, {self.dialect.now})"
            " ON CONFLICT (id) DO NOTHING"
        )
        params = [{"id": account_id, "name": name} for account_id, name in rows]

        def insert(conn):
            self._take_turns(conn, "accounts")
            return self._many(conn, sql, params)

        return self._in_transaction(insert) if params else 0

    def list_accounts(self):
        """Every account, by id."""
        return self._read(f"SELECT {self._shown('accounts')} FROM accounts ORDER BY id")

    def add_ticker(self, symbol, ticker_id):
        """Insert one ticker; raises Conflict when the symbol or id exists."""

        def add(conn):
            if not self._insert_ticker(conn, symbol, ticker_id):
                raise Conflict(self._ticker_conflict(conn, symbol, ticker_id))

        self._in_transaction(add)
        return {"id": ticker_id, "symbol": symbol}

    def import_tickers(self, rows, on_progress=None):
        """Insert (symbol, id or None) rows in one transaction; existing identical ones are skipped.

        Returns how many were new. Raises Conflict, undoing all of them, when a
        symbol exists under another id or an id under another symbol.
        `on_progress(n)` is called as rows are done.
        """

        def insert(conn):
            self._take_turns(conn, "tickers")
            added = 0
            for symbol, ticker_id in reporting(rows, on_progress):
                if self._insert_ticker(conn, symbol, ticker_id or str(uuid.uuid4())):
                    added += 1
                    continue
                existing = self._ticker_id(conn, symbol)
                if existing is None or (ticker_id and existing != ticker_id):
                    raise Conflict(self._ticker_conflict(conn, symbol, ticker_id))
            return added

        return self._in_transaction(insert)

    def list_tickers(self):
        """Every ticker, by symbol."""
        return self._read(f"SELECT {self._shown('tickers')} FROM tickers ORDER BY symbol")

    def _insert_ticker(self, conn, symbol, ticker_id):
        sql = (
            f"INSERT INTO tickers (id, symbol, created_at) VALUES (:id, :symbol, {self.dialect.now})"
            " ON CONFLICT DO NOTHING"
        )
        return self._run(conn, sql, {"id": ticker_id, "symbol": symbol}).rowcount == 1

    def _ticker_id(self, conn, symbol):
        sql = f"SELECT {self.dialect.text('id')} FROM tickers WHERE symbol = :symbol"
        row = self._run(conn, sql, {"symbol": symbol}).fetchone()
        return None if row is None else row[0]

    def _ticker_conflict(self, conn, symbol, ticker_id):
        by_symbol = self._ticker_id(conn, symbol)
        if by_symbol is not None:
            return f"Ticker '{symbol}' already exists with id {by_symbol}"
        owner = self._run(conn, "SELECT symbol FROM tickers WHERE id = :id", {"id": ticker_id}).fetchone()
        return None if owner is None else f"Ticker id {ticker_id} already belongs to '{owner[0]}'"

    def register_accounts(self, rows):
        """Insert (id, name or None) rows in one transaction, in order; one outcome each (see storage.Storage)."""
        shown = self._shown("accounts")
        insert = (
            f"INSERT INTO accounts (id, name, created_at) VALUES (:id, :name, {self.dialect.now})"
            f" ON CONFLICT (id) DO NOTHING RETURNING {shown}"
        )
        existing = f"SELECT {shown} FROM accounts WHERE id = :id"

        def outcome(conn, account_id, name):
            params = {"id": account_id, "name": name}
            added = self._records(conn, insert, params)
            if added:
                return Registered(added[0], True)
            there = self._records(conn, existing, params)
            if not there:
                return None  # deleted since the insert met it
            if name is None or there[0]["name"] == name:
                return Registered(there[0], False)
            return Taken(f"Account {account_id} already exists with another name")

        def register(conn):
            self._take_turns(conn, "accounts")
            return [self._settled(outcome, conn, *row) for row in rows]

        return self._in_transaction(register) if rows else []

    def register_tickers(self, rows):
        """Insert (symbol, id or None) rows in one transaction, in order; one outcome each (see storage.Storage)."""
        shown = self._shown("tickers")
        insert = (
            f"INSERT INTO tickers (id, symbol, created_at) VALUES (:id, :symbol, {self.dialect.now})"
            f" ON CONFLICT DO NOTHING RETURNING {shown}"
        )
        existing = f"SELECT {shown} FROM tickers WHERE symbol = :symbol"

        def outcome(conn, symbol, ticker_id):
            params = {"id": ticker_id or str(uuid.uuid4()), "symbol": symbol}
            added = self._records(conn, insert, params)
            if added:
                return Registered(added[0], True)
            there = self._records(conn, existing, params)
            if there and ticker_id in (None, there[0]["id"]):
                return Registered(there[0], False)
            conflict = self._ticker_conflict(conn, symbol, params["id"])
            return None if conflict is None else Taken(conflict)

        def register(conn):
            self._take_turns(conn, "tickers")
            return [self._settled(outcome, conn, *row) for row in rows]

        return self._in_transaction(register) if rows else []

    def _take_turns(self, conn, table):
        """Wait for every other transaction that registers or deletes rows of `table` (accounts or tickers) to end,
        on PostgreSQL: they take turns (they are an admin's, rare and short), so two of them over the same rows
        in other orders never deadlock, and each holds one lock, not one per row. SQLite's write transaction
        holds the whole database already."""
        lock = self.dialect.lock_rows_sql()
        if lock is not None:
            self._run(conn, lock, {"keys": [f"botstate registers {table}"]}).fetchall()

    @staticmethod
    def _settled(attempt, *args, tries=3):
        """What attempt(*args) comes to, tried again while it says None (the row it met was deleted meanwhile)."""
        for _ in range(tries):
            found = attempt(*args)
            if found is not None:
                return found
        raise DatabaseBusy("an account or ticker kept being deleted while it was registered")

    def page_accounts(self, limit, after=None, credentials=None):
        """Up to `limit` accounts by id, those past the id `after`, and whether more follow (see storage.Storage)."""
        where = "" if after is None else " WHERE id > :after"
        sql = f"SELECT {self._shown('accounts')} FROM accounts{where} ORDER BY id LIMIT :fetch"
        return self._page(sql, {"after": after, "fetch": limit + 1}, limit, credentials)

    def page_tickers(self, limit, after=None, symbol=None, credentials=None):
        """Up to `limit` tickers by symbol, past the symbol `after` (or only `symbol`), and whether more follow."""
        symbol_column = f"symbol{self.dialect.by_code_point}"
        conditions = [
            c for c, value in ((f"{symbol_column} > :after", after), ("symbol = :symbol", symbol)) if value is not None
        ]
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"SELECT {self._shown('tickers')} FROM tickers{where} ORDER BY {symbol_column} LIMIT :fetch"
        return self._page(sql, {"after": after, "symbol": symbol, "fetch": limit + 1}, limit, credentials)

    def _page(self, sql, params, limit, credentials):
        with self._reading() as conn:
            if credentials is not None:
                self._verify_key(conn, {"bot": credentials.bot_id, "key": credentials.key_hash})
            rows = self._records(conn, sql, params)
        return rows[:limit], len(rows) > limit

    def get_account(self, account_id):
        """The account ({id, name, createdAt, states}: every bot's), or None."""
        return self._registered("accounts", "user_broker_account_id", account_id)

    def get_ticker(self, ticker_id):
        """The ticker ({id, symbol, createdAt, states}: every bot's), or None."""
        return self._registered("tickers", "ticker_id", ticker_id)

    def _registered(self, table, state_column, row_id):
        sql = (
            f"SELECT {self._shown(table)}, (SELECT count(*) FROM user_bot_states WHERE {state_column} = :id) AS states"
            f" FROM {table} WHERE id = :id"
        )
        rows = self._read(sql, {"id": row_id})
        return rows[0] if rows else None

    def delete_account(self, account_id):
        """Delete the account and, by cascade, every bot's states of it (their deletes logged); see storage.Storage."""
        return self._delete_registered(
            "accounts", "user_broker_account_id", account_id, f"Account {account_id} not found"
        )

    def delete_ticker(self, ticker_id):
        """Delete the ticker and, by cascade, every bot's states of it (their deletes logged); see storage.Storage."""
        return self._delete_registered("tickers", "ticker_id", ticker_id, f"Ticker {ticker_id} not found")

    def _delete_registered(self, table, state_column, row_id, not_found):
        d = self.dialect

        def delete(conn):
            found = self._records(conn, f"SELECT {self._shown(table)} FROM {table} WHERE id = :id", {"id": row_id})
            if not found:
                raise NotFound(not_found)
            self._take_turns(conn, table)  # as a registration does, before any row's lock
            lock = d.lock_rows_sql()
            of_it = (
                f"SELECT {d.text('bot_id')}, {d.text('user_broker_account_id')}, {d.text('ticker_id')}"
                f" FROM user_bot_states WHERE {state_column} = :id"
            )
            states = self._run(conn, of_it, {"id": row_id}).fetchall()
            if lock is not None and states:
                # The rows' locks, as a write of them takes them: a writer of one of them waits instead of deadlocking.
                self._run(conn, lock, {"keys": ["/".join(key) for key in states]}).fetchall()
                # Read again: a delete of the other kind (a ticker's, an account's) may have taken some meanwhile.
                states = self._run(conn, of_it, {"id": row_id}).fetchall()
            if not self._run(conn, f"DELETE FROM {table} WHERE id = :id", {"id": row_id}).rowcount:
                raise NotFound(not_found)  # a delete running beside this one took it
            return {**found[0], "deletedStates": len(states)}

        return self._in_transaction(delete)
