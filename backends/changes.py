"""The change log, for both backends: the feed, a row's history, as-of reads and pruning.

The backends' triggers append the entries (one per row an insert, update or delete
changes) in the statement that changes the row; this reads and prunes them.
"""

from records import Change, ChangesAhead, ChangesGone, HistoryGone

# A filtered feed (one account or ticker) reads at most this many of the bot's entries
# per request and answers where it stopped, so that a rare match costs bounded time.
FEED_SCAN = 10_000
# No entry's seq is this large: the bound of a feed that waits for no writer (SQLite).
NO_HORIZON = 2**62


class Changes:
    """The change-log methods of storage.Storage, over SQLStorage's statements."""

    def change_columns(self, table=""):
        """SQL: a Change's columns, in its order, of state_changes (or its alias `table`)."""
        d, p = self.dialect, f"{table}." if table else ""
        return (
            f"{p}seq, {p}op, {d.text(p + 'account_id')}, {d.text(p + 'ticker_id')}, {p}version,"
            f" {d.text(p + 'state')}, {d.time_text(p + 'at')}, {d.text(p + 'row_id')}, {d.time_text(p + 'created_at')}"
        )

    def _walk_sql(self, condition, onward="TRUE"):
        """SQL: a row's entries from :head back along their links, at most :depth steps and on
        only past entries that meet `onward`, that meet `condition` (both on alias c), newest
        first, at most :fetch of them."""
        return (
            "WITH RECURSIVE chain(seq, depth) AS (SELECT CAST(:head AS bigint), 0 UNION ALL"
            " SELECT c.prev_seq, chain.depth + 1 FROM chain JOIN state_changes AS c ON c.seq = chain.seq"
            f" WHERE c.prev_seq IS NOT NULL AND chain.depth < :depth AND {onward})"
            f" SELECT {self.change_columns('c')} FROM chain JOIN state_changes AS c ON c.seq = chain.seq"
            f" WHERE {condition} ORDER BY chain.depth LIMIT :fetch"
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
            lambda: f"WITH {self.dialect.feed_scanned} SELECT {self.key_works(':bot', ':key')},"
            " (SELECT pruned_seq FROM change_horizons WHERE bot_id = :bot), (SELECT max(seq) FROM scanned),"
            f" ({self.dialect.largest_seq})",
        )
        works, pruned_seq, scanned_to, largest = self._run(conn, sql, params).fetchone()
        if not works:
            self._verify_key(conn, params)
        if pruned_seq is not None and params["after"] < pruned_seq:
            raise ChangesGone(pruned_seq)
        if scanned_to is None and params["after"] > (largest or 0):
            # Past every seq handed out: a reader of a database restored or moved since, whose seqs went back.
            raise ChangesAhead(largest or 0)
        return scanned_to

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
            lambda: f"WITH {self.dialect.feed_scanned} SELECT {self.change_columns()} FROM state_changes"
            f" WHERE seq IN (SELECT seq FROM scanned) AND seq <= :scanned_to{filters} ORDER BY seq LIMIT :limit",
        )

    def _feed_horizon(self, conn):
        """The largest seq a feed may hand out now, below every writer still running; None
        when every committed entry may go (writers take turns: SQLite)."""
        return None

    def _row_head(self, conn, params):
        """The newest entry of the bot's row for :account and :ticker (its delete when it is
        gone) as (seq, version, op), or None."""
        sql = self._once(
            "row_head",
            lambda: "SELECT c.seq, c.version, c.op FROM state_changes AS c WHERE c.seq = coalesce("
            "(SELECT log_seq FROM user_bot_states WHERE bot_id = :bot AND user_broker_account_id = :account"
            " AND ticker_id = :ticker), (SELECT max(seq) FROM state_tombstones WHERE bot_id = :bot"
            " AND account_id = :account AND ticker_id = :ticker))",
        )
        return self._run(conn, sql, params).fetchone()

    def state_history(self, bot_id, account_id, ticker_id, limit, before=None, credentials=None):
        """The row's kept versions, newest first, and the `before` of the next page (see storage.Storage)."""
        entries = self._once(
            "history",
            lambda: self._walk_sql(
                "(CAST(:before AS bigint) IS NULL OR (c.op = 'upsert' AND c.version < CAST(:before AS bigint)))"
            ),
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
                self._verify_key(conn, params)
            head = self._row_head(conn, params)
            if head is None:
                return [], None
            seq, version, op = head
            # A row's versions go down by one a link (its delete, first, has the version it removed),
            # so the page ends within this many steps.
            skipped = 0 if before is None else max(version - before + 1, 0)
            params.update(head=seq, depth=skipped + limit + 2)
            changes = [Change(*found) for found in self._run(conn, entries, params)]
        if len(changes) <= limit:
            return changes, None
        last = changes[limit - 1]
        # A delete comes first and only on the first page: the page after it starts at its version.
        return changes[:limit], last.version if last.op == "upsert" else last.version + 1

    def state_as_of(self, credentials, account_id, ticker_id, at):
        """The bot's StateRow for this account and ticker as it was at `at`, or None (see storage.Storage)."""
        d = self.dialect
        # The newest entry of the row created last at or before `at`: the one there now, or one deleted since.
        heads = self._once(
            "as_of_head",
            lambda: "SELECT seq FROM (SELECT log_seq AS seq, created_at FROM user_bot_states WHERE bot_id = :bot"
            f" AND user_broker_account_id = :account AND ticker_id = :ticker AND created_at <= {d.time_param('at')}"
            " UNION ALL SELECT c.seq, c.created_at FROM state_tombstones AS t JOIN state_changes AS c"
            " ON c.seq = t.seq WHERE t.bot_id = :bot AND t.account_id = :account AND t.ticker_id = :ticker"
            f" AND c.created_at <= {d.time_param('at')}) AS alive ORDER BY created_at DESC LIMIT 1",
        )
        # Back from the newest until the first entry at or before `at`, and no further.
        version = self._once(
            "as_of", lambda: self._walk_sql(f"c.at <= {d.time_param('at')}", onward=f"c.at > {d.time_param('at')}")
        )
        oldest = self._once(
            "oldest_kept",
            lambda: f"SELECT {d.time_text('c.at')} FROM (SELECT seq FROM ({self._walk_sql('TRUE')}) AS walked"
            " ORDER BY seq LIMIT 1) AS first JOIN state_changes AS c ON c.seq = first.seq",
        )
        kept = self._once(
            "kept_since",
            lambda: f"SELECT (SELECT {d.time_text('kept_since')} FROM change_horizons WHERE bot_id = :bot),"
            f" (SELECT {d.time_text('kept_since')} FROM change_floors"
            " WHERE bot_id = :bot AND account_id = :account AND ticker_id = :ticker)",
        )
        params = {
            "bot": credentials.bot_id,
            "key": credentials.key_hash,
            "account": account_id,
            "ticker": ticker_id,
            "at": at,
            "depth": NO_HORIZON,
            "fetch": 1,
        }
        with self._reading() as conn:
            self._verify_key(conn, params)
            floors = [floor for floor in self._run(conn, kept, params).fetchone() if floor is not None]
            if floors and at < max(floors):
                raise HistoryGone(max(floors))
            head = self._run(conn, heads, params).fetchone()
            if head is None:
                return None
            params["head"] = head[0]
            found = self._run(conn, version, params).fetchone()
            if found is None:  # the row was there then, its versions of then are not (never logged, or pruned)
                raise HistoryGone(self._run(conn, oldest, {**params, "fetch": NO_HORIZON}).fetchone()[0])
        change = Change(*found)
        return change.as_row(credentials.bot_id) if change.op == "upsert" else None

    def _forget_changes(self, conn, bot_id):
        """Delete a deleted bot's change log (its rows' deletes, that the cascade logged, too)."""
        d = self.dialect
        largest = self._run(conn, "SELECT max(seq) FROM state_changes").fetchone()[0]
        params = {"bot": bot_id, "before": None}
        self._run(conn, f"DELETE FROM state_changes WHERE seq IN ({d.bot_entries})", params)
        if d.forget_runs is not None:
            self._run(conn, d.forget_runs, params)
        for table in ("state_tombstones", "change_horizons", "change_floors"):
            self._run(conn, f"DELETE FROM {table} WHERE bot_id = :bot", params)
        if self.keeps_largest_seq and largest is not None:
            # In the largest entry's place, one of no bot (pruned in time): no seq is handed out twice.
            self._run(
                conn,
                "INSERT INTO state_changes (seq, bot_id, account_id, ticker_id, row_id, op, version, created_at, at)"
                " SELECT :seq, '', '', '', '', 'gap', 0, '', '' WHERE NOT EXISTS"
                " (SELECT 1 FROM state_changes WHERE seq >= :seq)",
                {"seq": largest},
            )

    def _import_changes(self, conn, logged_before, changes):
        """The imported change records of each bot that had no change log before the import: in
        place of what the import of its rows logged, in their order, with new seqs. A bot that
        had one keeps it (importing a file again changes nothing)."""
        d = self.dialect
        if d.publish_floor is not None:
            self._run(conn, d.publish_floor)  # seqs taken here, with no row's trigger to publish first
        had_log = self._once(
            "had_log",
            lambda: f"SELECT EXISTS (SELECT 1 FROM ({d.bot_entries}) AS entries WHERE seq <= :before)",
        )
        fresh = {}
        for bot_id in dict.fromkeys(change["botId"] for change in changes):
            fresh[bot_id] = not self._run(conn, had_log, {"bot": bot_id, "before": logged_before}).fetchone()[0]
            if fresh[bot_id]:
                params = {"bot": bot_id, "before": logged_before}
                for table in ("state_changes", "state_tombstones"):
                    self._run(conn, f"DELETE FROM {table} WHERE bot_id = :bot AND seq > :before", params)
                if d.forget_runs is not None:
                    self._run(conn, d.forget_runs, params)
        insert = (
            "INSERT INTO state_changes"
            " (bot_id, account_id, ticker_id, row_id, op, version, state, created_at, at, prev_seq)"
            f" VALUES (:botId, :accountId, :tickerId, :rowId, :op, :version, {d.state_param('state')},"
            f" {d.time_param('createdAt')}, {d.time_param('at')}, :prev) RETURNING seq"
        )
        heads = {}
        for change in changes:
            if not fresh[change["botId"]]:
                continue
            seq = self._run(conn, insert, {**change, "prev": heads.get(change["rowId"])}).fetchone()[0]
            heads[change["rowId"]] = seq
            if change["op"] == "delete":
                self._run(
                    conn,
                    "INSERT INTO state_tombstones (bot_id, account_id, ticker_id, seq)"
                    " VALUES (:botId, :accountId, :tickerId, :seq)",
                    {**change, "seq": seq},
                )
        for change in {change["rowId"]: change for change in changes if fresh[change["botId"]]}.values():
            self._run(
                conn,
                "UPDATE user_bot_states SET log_seq = :seq WHERE bot_id = :botId"
                " AND user_broker_account_id = :accountId AND ticker_id = :tickerId AND id = :rowId",
                {**change, "seq": heads[change["rowId"]]},
            )

    def count_changes(self, bot_id=None):
        """How many change-log entries are kept, for one bot or all."""
        if bot_id is None:
            return self._scalar("SELECT count(*) FROM state_changes")
        return self._scalar(f"SELECT count(*) FROM ({self.dialect.bot_entries}) AS entries", {"bot": bot_id})
