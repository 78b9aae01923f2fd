"""The change log, for both backends: the feed, a row's history, as-of reads and pruning.

The backends' triggers append the entries (one per row an insert, update or delete
changes) in the statement that changes the row; this reads and prunes them.
"""

from backends import rules
from records import Change, ChangesGone, HistoryGone

# A filtered feed (one account or ticker) reads at most this many of the bot's entries
# per request and answers where it stopped, so that a rare match costs bounded time.
FEED_SCAN = 10_000
# No entry's seq is this large: the bound of a feed that waits for no writer (SQLite).
NO_HORIZON = 2**62


class Changes:
    """The change-log methods of storage.Storage, over SQLStorage's statements."""

    def change_columns(self):
        """SQL: a Change's columns, in its order, of state_changes."""
        d = self.dialect
        return (
            f"seq, op, {d.text('account_id')}, {d.text('ticker_id')}, version, {d.text('state')},"
            f" {d.time_text('at')}, {d.text('row_id')}, {d.time_text('created_at')}"
        )

    def list_changes(self, credentials, after, limit, account_id=None, ticker_id=None):
        """The bot's changes after seq `after`, oldest first, and the seq to read after next
        (see storage.Storage)."""
        params = {
            "bot": credentials.bot_id,
            "key": credentials.key_hash,
            "after": after,
            "limit": limit,
            "scan": FEED_SCAN if account_id or ticker_id else limit,
            "horizon": NO_HORIZON,
            "account": account_id,
            "ticker": ticker_id,
        }
        with self._reading() as conn:
            scanned_to = self._feed_header(conn, params)
            if scanned_to is None:
                return [], after
            horizon = self._feed_horizon(conn)
            if horizon is not None:  # the entries are read after it is known, in a snapshot of their own
                params["horizon"] = horizon
                scanned_to = self._feed_header(conn, params)
                if scanned_to is None:
                    return [], after
            # Only what the header counted: an entry committed since is for the next poll.
            params["scanned_to"] = scanned_to
            changes = [Change(*row) for row in self._run(conn, self._feed_sql(account_id, ticker_id), params)]
        if len(changes) == limit:
            return changes, changes[-1].seq
        return changes, scanned_to

    def _feed_header(self, conn, params):
        """The last seq of the entries a feed request reads, None when there are none; raises
        when the key no longer works or `after` is older than what is kept."""
        sql = self._once(
            "feed_header",
            lambda: f"WITH {self._feed_scanned()} SELECT {self.key_works(':bot', ':key')},"
            " (SELECT pruned_seq FROM change_horizons WHERE bot_id = :bot), (SELECT max(seq) FROM scanned)",
        )
        works, pruned_seq, scanned_to = self._run(conn, sql, params).fetchone()
        if not works:
            rules.verify_key(*self._run(conn, self.credentials_sql(), params).fetchone())
        if pruned_seq is not None and params["after"] < pruned_seq:
            raise ChangesGone(pruned_seq)
        return scanned_to

    @staticmethod
    def _feed_scanned():
        """SQL: the CTE `scanned`, the seqs of the entries a feed request reads."""
        return (
            "scanned AS (SELECT seq FROM state_changes WHERE bot_id = :bot AND seq > :after AND seq <= :horizon"
            " ORDER BY seq LIMIT :scan)"
        )

    def _feed_sql(self, account_id, ticker_id):
        """SQL: the entries of `scanned` that the filters keep, oldest first."""
        filters = "".join(
            condition
            for condition, value in (
                (" AND account_id = :account", account_id),
                (" AND ticker_id = :ticker", ticker_id),
            )
            if value is not None
        )
        return self._once(
            f"feed{filters}",
            lambda: f"WITH {self._feed_scanned()} SELECT {self.change_columns()} FROM state_changes"
            f" WHERE seq IN (SELECT seq FROM scanned) AND seq <= :scanned_to{filters} ORDER BY seq LIMIT :limit",
        )

    def _feed_horizon(self, conn):
        """The largest seq a feed may hand out now, below every writer still running; None
        when every committed entry may go (writers take turns: SQLite)."""
        return None

    def state_history(self, bot_id, account_id, ticker_id, limit, before=None, credentials=None):
        """The row's kept versions, newest first, and the `before` of the next page (see storage.Storage)."""
        d = self.dialect
        row = self._once(
            "history_row",
            lambda: f"SELECT n, id FROM (SELECT {d.row_number} AS n, {d.text('id')} AS id, 1 AS rank"
            " FROM user_bot_states WHERE bot_id = :bot AND user_broker_account_id = :account AND ticker_id = :ticker"
            f" UNION ALL SELECT row_n, {d.text('row_id')}, 2 FROM state_changes WHERE seq = (SELECT max(seq)"
            " FROM state_tombstones WHERE bot_id = :bot AND account_id = :account AND ticker_id = :ticker))"
            " AS found ORDER BY rank LIMIT 1",
        )
        entries = self._once(
            "history",
            lambda: f"SELECT {self.change_columns()} FROM state_changes WHERE row_n = :row_n AND row_id = :row_id"
            " AND (CAST(:before AS bigint) IS NULL OR (op = 'upsert' AND version < CAST(:before AS bigint)))"
            " ORDER BY seq DESC LIMIT :fetch",
        )
        if credentials is not None:
            bot_id = credentials.bot_id
        params = {
            "bot": bot_id,
            "key": None if credentials is None else credentials.key_hash,
            "account": account_id,
            "ticker": ticker_id,
            "before": before,
            "fetch": limit + 1,
        }
        with self._reading() as conn:
            if credentials is not None:
                rules.verify_key(*self._run(conn, self.credentials_sql(), params).fetchone())
            found = self._run(conn, row, params).fetchone()
            if found is None:
                return [], None
            params["row_n"], params["row_id"] = found
            changes = [Change(*found) for found in self._run(conn, entries, params)]
        if len(changes) <= limit:
            return changes, None
        last = changes[limit - 1]
        # A delete comes first and only on the first page: the page after it starts at its version.
        return changes[:limit], last.version if last.op == "upsert" else last.version + 1

    def state_as_of(self, credentials, account_id, ticker_id, at):
        """The bot's StateRow for this account and ticker as it was at `at`, or None (see storage.Storage)."""
        d = self.dialect
        key = "bot_id = :bot AND account_id = :account AND ticker_id = :ticker"
        # The row created last at or before `at`: the one there now, or one deleted since.
        row = self._once(
            "as_of_row",
            lambda: f"SELECT n, id FROM (SELECT {d.row_number} AS n, {d.text('id')} AS id, created_at"
            " FROM user_bot_states WHERE bot_id = :bot AND user_broker_account_id = :account AND ticker_id = :ticker"
            f" AND created_at <= {d.time_param('at')}"
            f" UNION ALL SELECT c.row_n, {d.text('c.row_id')}, c.created_at FROM state_tombstones AS t"
            f" JOIN state_changes AS c ON c.seq = t.seq WHERE t.{key.replace(' AND ', ' AND t.')}"
            f" AND c.created_at <= {d.time_param('at')}) AS alive ORDER BY created_at DESC LIMIT 1",
        )
        version = self._once(
            "as_of",
            lambda: f"SELECT {self.change_columns()} FROM state_changes WHERE row_n = :row_n AND row_id = :row_id"
            f" AND at <= {d.time_param('at')} ORDER BY seq DESC LIMIT 1",
        )
        kept = self._once(
            "kept_since",
            lambda: f"SELECT (SELECT {d.time_text('kept_since')} FROM change_horizons WHERE bot_id = :bot),"
            f" (SELECT {d.time_text('kept_since')} FROM change_floors WHERE {key})",
        )
        params = {
            "bot": credentials.bot_id,
            "key": credentials.key_hash,
            "account": account_id,
            "ticker": ticker_id,
            "at": at,
        }
        with self._reading() as conn:
            rules.verify_key(*self._run(conn, self.credentials_sql(), params).fetchone())
            floors = [floor for floor in self._run(conn, kept, params).fetchone() if floor is not None]
            if floors and at < max(floors):
                raise HistoryGone(max(floors))
            alive = self._run(conn, row, params).fetchone()
            found = None
            if alive is not None:
                params["row_n"], params["row_id"] = alive
                found = self._run(conn, version, params).fetchone()
        if found is None:
            return None
        change = Change(*found)
        return change.as_row(credentials.bot_id) if change.op == "upsert" else None

    def _forget_changes(self, conn, bot_id):
        """Delete a deleted bot's change log (its rows' deletes, that the cascade logged, too)."""
        largest = self._run(conn, "SELECT max(seq) FROM state_changes").fetchone()[0]
        for table in ("state_changes", "state_tombstones", "change_horizons", "change_floors"):
            self._run(conn, f"DELETE FROM {table} WHERE bot_id = :bot", {"bot": bot_id})
        if self.keeps_largest_seq and largest is not None:
            # In the largest entry's place, one of no bot (pruned in time): no seq is handed out twice.
            self._run(
                conn,
                "INSERT INTO state_changes"
                " (seq, bot_id, row_n, account_id, ticker_id, row_id, op, version, created_at, at)"
                " SELECT :seq, '', 0, '', '', '', 'gap', 0, '', '' WHERE NOT EXISTS"
                " (SELECT 1 FROM state_changes WHERE seq >= :seq)",
                {"seq": largest},
            )

    def count_changes(self, bot_id=None):
        """How many change-log entries are kept, for one bot or all."""
        if bot_id is None:
            return self._scalar("SELECT count(*) FROM state_changes")
        return self._scalar("SELECT count(*) FROM state_changes WHERE bot_id = :bot", {"bot": bot_id})
