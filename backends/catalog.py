"""Bots, their keys, accounts and tickers, for both backends."""

import time
import uuid

import clock
from backends.keyuses import reporting
from records import KEY_FINGERPRINT_LENGTH, Conflict, NotFound


class Catalog:
    """The bot, key, account and ticker methods of storage.Storage, over SQLStorage's statements."""

    def record_key_use(self, bot_id, key_hash):
        """Note that a request authenticated with this key now; flush_key_uses() stores it."""
        self.key_uses.record(bot_id, key_hash)

    def create_bot(self, slug, name, api_key_hash):
        """Insert a bot with its first key; raises Conflict when the slug is taken."""
        bot_id = str(uuid.uuid4())

        def create(conn):
            self._run(
                conn,
                f"INSERT INTO bots (id, slug, name, created_at) VALUES (:id, :slug, :name, {self.dialect.now})",
                {"id": bot_id, "slug": slug, "name": name},
            )
            self._add_key(conn, bot_id, api_key_hash)

        try:
            self._in_transaction(create)
        except Exception as error:
            if self._unique_violation(error):
                raise Conflict(f"Bot {slug!r} already exists") from None
            raise
        return self.get_bot(slug)

    def get_bot(self, slug):
        """The bot with this slug (id, slug, name, createdAt, states) or None."""
        rows = self._read(f"{self._select_bots} WHERE slug = :slug", {"slug": slug})
        return rows[0] if rows else None

    def find_bot_credentials(self, slug):
        """(bot id, its working keys) for the slug, or None: the read that authenticates a request.

        Each key is (key hash, when it stops working on this process's time.monotonic()
        clock, or None). The database's clock says how long each key has left, so
        that one clock decides expiry whatever host asks.
        """
        sql = self._once(
            "find_bot_credentials",
            lambda: f"SELECT {self.dialect.text('bots.id')}, k.key_hash, {self.dialect.seconds_until('k.expires_at')}"
            f" FROM bots LEFT JOIN bot_keys AS k ON k.bot_id = bots.id AND NOT {self._expired} WHERE bots.slug = :slug",
        )
        with self._reading() as conn:
            rows = self._run(conn, sql, {"slug": slug}).fetchall()
        if not rows:
            return None
        now = time.monotonic()
        return rows[0][0], tuple(
            (key_hash, None if left is None else now + left) for _, key_hash, left in rows if key_hash is not None
        )

    def list_bots(self):
        """Every bot with its number of states, by slug."""
        return self._read(f"{self._select_bots} ORDER BY slug")

    def count_bots(self):
        """How many bots exist."""
        return self._scalar("SELECT count(*) FROM bots")

    def replace_bot_key(self, slug, api_key_hash, grace_seconds=0):
        """Give the bot a new key. Its other keys keep working for `grace_seconds` more
        (none at 0), or until their own earlier expiry.

        Returns the bot, with `oldKeysExpireAt`: when the last old key stops
        (None when none works any more).
        """
        d = self.dialect

        def replace(conn):
            bot_id = self._bot_id(conn, slug)
            params = {"bot": bot_id, "grace": int(grace_seconds)}
            self._forget_expired_keys(conn, bot_id)
            if grace_seconds > 0:
                ends = d.seconds_from_now("grace")
                self._run(
                    conn,
                    f"UPDATE bot_keys SET expires_at = {ends}"
                    f" WHERE bot_id = :bot AND (expires_at IS NULL OR expires_at > {ends})",
                    params,
                )
            else:
                self._run(conn, "DELETE FROM bot_keys WHERE bot_id = :bot", params)
            expires_at = self._run(
                conn, f"SELECT {d.time_text('max(expires_at)')} FROM bot_keys WHERE bot_id = :bot", params
            ).fetchone()[0]
            self._add_key(conn, bot_id, api_key_hash)
            return expires_at

        expires_at = self._in_transaction(replace)
        return dict(self.get_bot(slug), oldKeysExpireAt=expires_at)

    def revoke_bot_keys(self, slug, every=False):
        """Stop the bot's old keys (those in a grace period) at once, or with `every`
        all of its keys; returns how many were revoked."""

        def revoke(conn):
            bot_id = self._bot_id(conn, slug)
            self._forget_expired_keys(conn, bot_id)
            only_old = "" if every else " AND expires_at IS NOT NULL"
            return self._run(conn, f"DELETE FROM bot_keys WHERE bot_id = :bot{only_old}", {"bot": bot_id}).rowcount

        return self._in_transaction(revoke)

    def list_bot_keys(self, slug):
        """The bot's working keys, newest first: a fingerprint (the start of the key's
        hash), createdAt, expiresAt (None: no expiry) and lastUsedAt (None: never)."""
        self.flush_key_uses()
        d = self.dialect
        with self._reading() as conn:
            bot_id = self._bot_id(conn, slug)
            return self._records(
                conn,
                f"SELECT substr(key_hash, 1, {KEY_FINGERPRINT_LENGTH}) AS fingerprint,"
                f' {d.time_text("created_at")} AS "createdAt", {d.time_text("expires_at")} AS "expiresAt",'
                f' {d.time_text("last_used_at")} AS "lastUsedAt"'
                f" FROM bot_keys WHERE bot_id = :bot AND NOT {self._expired} ORDER BY created_at DESC, key_hash",
                {"bot": bot_id},
            )

    def flush_key_uses(self):
        """Store the last use of each key recorded since the last flush."""
        used = self.dialect.time_param("used")
        sql = (
            f"UPDATE bot_keys SET last_used_at = {used} WHERE bot_id = :bot AND key_hash = :key"
            f" AND (last_used_at IS NULL OR last_used_at < {used})"
        )
        with self.key_uses.taken() as uses:
            if uses:
                rows = [
                    {"used": clock.stored_time_of(when), "bot": bot_id, "key": key_hash}
                    for (bot_id, key_hash), when in sorted(uses.items())
                ]
                # A short wait: this runs in a background thread that must not hang on a lock.
                self._in_transaction(lambda conn: self._many(conn, sql, rows), short=True)

    def delete_bot(self, slug):
        """Delete the bot and, by cascade, its states, then its change log; returns the bot as it was."""
        bot = self.get_bot(slug)
        if bot is None:
            raise NotFound(f"Bot {slug!r} not found")

        def delete(conn):
            self._run(conn, "DELETE FROM bots WHERE id = :bot", {"bot": bot["id"]})
            self._forget_changes(conn, bot["id"])

        self._in_transaction(delete)
        return bot

    def _add_key(self, conn, bot_id, api_key_hash):
        self._run(
            conn,
            f"INSERT INTO bot_keys (bot_id, key_hash, created_at) VALUES (:bot, :key, {self.dialect.now})",
            {"bot": bot_id, "key": api_key_hash},
        )

    def _forget_expired_keys(self, conn, bot_id):
        self._run(conn, f"DELETE FROM bot_keys WHERE bot_id = :bot AND {self._expired}", {"bot": bot_id})

    def _bot_id(self, conn, slug):
        row = self._run(
            conn, f"SELECT {self.dialect.text('id')} FROM bots WHERE slug = :slug", {"slug": slug}
        ).fetchone()
        if row is None:
            raise NotFound(f"Bot {slug!r} not found")
        return row[0]

    # Accounts and tickers

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
        return self._in_transaction(lambda conn: self._many(conn, sql, params)) if params else 0

    def list_accounts(self):
        """Every account, by id."""
        d = self.dialect
        return self._read(
            f'SELECT {d.text("id")} AS id, name, {d.time_text("created_at")} AS "createdAt" FROM accounts ORDER BY id'
        )

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
        d = self.dialect
        return self._read(
            f'SELECT {d.text("id")} AS id, symbol, {d.time_text("created_at")} AS "createdAt"'
            " FROM tickers ORDER BY symbol"
        )

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
        owner = self._run(conn, "SELECT symbol FROM tickers WHERE id = :id", {"id": ticker_id}).fetchone()[0]
        return f"Ticker id {ticker_id} already belongs to '{owner}'"
