"""Pruning the change log to what BOTSTATE_HISTORY_DAYS and BOTSTATE_HISTORY_VERSIONS keep, in the background.

A version is kept while it was the row's state at some moment of the window: it goes
once the version after it is older than the window. A delete goes once it is older than
the window (the row was gone all through it). The newest version of a row always stays.
"""

import dataclasses
import logging
import threading

from backends.changes import NO_HORIZON
from records import DatabaseBusy

log = logging.getLogger("botstate.storage")

# Entries looked at per transaction: each batch holds the write lock for a few ms at most.
PRUNE_BATCH = 100
# Seconds between pruning passes, and between the batches of one pass.
PRUNE_INTERVAL = 5.0
BATCH_PAUSE = 0.01


@dataclasses.dataclass(frozen=True)
class Retention:
    """What the change log keeps: `days` of history (0: none), and at most `versions` per row (0: no cap)."""

    days: int = 7
    versions: int = 0


class Pruning:
    """prune_changes() and its background thread, for SQLStorage."""

    retention = Retention()
    # SQLite hands out the next seq after the largest: the largest entry is never pruned.
    keeps_largest_seq = False
    _age_cursor = 0
    _count_cursor = 0
    _pruner = None
    # Entries this storage pruned (GET /metrics shows it).
    changes_pruned = 0

    def prune_changes(self, batch=PRUNE_BATCH, stop=None):
        """Remove what retention no longer keeps, a transaction per `batch` entries looked at,
        until none is left or `stop` (an Event) is set; how many entries went."""
        removed = 0
        for prune, cursor in (("_prune_by_age", "_age_cursor"), ("_prune_by_count", "_count_cursor")):
            if prune == "_prune_by_count" and not self.retention.versions:
                continue
            while not (stop is not None and stop.wait(BATCH_PAUSE)):
                work = getattr(self, prune)
                looked, gone, moved_to = self._in_transaction(lambda conn, work=work: work(conn, batch), short=True)
                setattr(self, cursor, moved_to)  # only once committed: a batch undone is done again
                removed += gone
                self.changes_pruned += gone
                if looked < batch:
                    break
        return removed

    def _batch(self, conn, cursor, batch):
        """The next `batch` entries after seq `cursor` that have committed, oldest first:
        (seq, bot, at, op, prev_seq, account, ticker)."""
        d = self.dialect
        horizon = self._feed_horizon(conn)
        return self._run(
            conn,
            f"SELECT seq, {d.text('bot_id')}, {d.time_text('at')}, op, prev_seq,"
            f" {d.text('account_id')}, {d.text('ticker_id')}"
            " FROM state_changes WHERE seq > :cursor AND seq <= :horizon ORDER BY seq LIMIT :batch",
            {"cursor": cursor, "horizon": NO_HORIZON if horizon is None else horizon, "batch": batch},
        ).fetchall()

    def _links(self, conn, seq, skip=0):
        """The seqs of the entries from `seq` back along their links, but the first `skip`."""
        rows = self._run(
            conn,
            "WITH RECURSIVE chain(seq, depth) AS (SELECT CAST(:seq AS bigint), 0 UNION ALL"
            " SELECT c.prev_seq, chain.depth + 1 FROM chain JOIN state_changes AS c ON c.seq = chain.seq"
            " WHERE c.prev_seq IS NOT NULL)"
            " SELECT c.seq FROM chain JOIN state_changes AS c ON c.seq = chain.seq WHERE chain.depth >= :skip"
            " ORDER BY chain.depth",
            {"seq": seq, "skip": skip},
        )
        return [row[0] for row in rows]

    def _delete_entries(self, conn, seqs):
        """Delete these entries, the deleted rows they are the deletes of, and the runs they leave empty."""
        d = self.dialect
        params = {"seqs": d.set_param(seqs)}
        for table in ("state_changes", "state_tombstones"):
            self._run(conn, f"DELETE FROM {table} WHERE {d.in_set('seq', 'seqs', 'bigint')}", params)
        if d.drop_empty_runs is not None:
            self._run(conn, d.drop_empty_runs, params)

    def _prune_by_age(self, conn, batch):
        d = self.dialect
        cutoff = self._run(
            conn, f"SELECT {d.time_text(d.seconds_ago('age'))}", {"age": self.retention.days * 86400}
        ).fetchone()[0]
        largest = self._run(conn, "SELECT max(seq) FROM state_changes").fetchone()[0]
        now = self._run(conn, f"SELECT {d.time_text(d.now)}").fetchone()[0]
        pruned, removed, looked, cursor = {}, 0, 0, self._age_cursor
        for seq, bot_id, at, op, prev_seq, *_ in self._batch(conn, self._age_cursor, batch):
            if cutoff < at <= now:
                break  # from here on the entries are in the window
            if op != "upsert" and self.keeps_largest_seq and seq == largest:
                break  # the largest stays; once a newer entry comes, this one goes
            looked += 1
            cursor = seq
            if at > now:
                continue  # dated ahead of the clock (a clock that ran fast): its versions wait for its successor
            # The row's versions before this one: it was their successor before the window began.
            gone = [] if prev_seq is None else self._links(conn, prev_seq)
            if op != "upsert":
                gone.append(seq)  # a delete older than the window: the row was gone all through it
            if gone:
                self._delete_entries(conn, gone)
                removed += len(gone)
                if bot_id:
                    pruned[bot_id] = max(pruned.get(bot_id, 0), *gone)
        for bot_id, seq in pruned.items():
            self._mark_pruned(conn, bot_id, seq, cutoff)
        return looked, removed, cursor

    def _prune_by_count(self, conn, batch):
        rows = self._batch(conn, self._count_cursor, batch)
        if not rows:
            return 0, 0, self._count_cursor
        removed = 0
        for seq, bot_id, _, _, _, account_id, ticker_id in rows:
            gone = self._links(conn, seq, skip=self.retention.versions) if bot_id else []
            if not gone:
                continue
            self._delete_entries(conn, gone)
            removed += len(gone)
            self._mark_pruned(conn, bot_id, max(gone), None)
            oldest = self._links(conn, seq, skip=self.retention.versions - 1)
            self._run(
                conn,
                "INSERT INTO change_floors (bot_id, account_id, ticker_id, kept_since)"
                " SELECT :bot, :account, :ticker, at FROM state_changes WHERE seq = :seq"
                " ON CONFLICT (bot_id, account_id, ticker_id) DO UPDATE SET kept_since = excluded.kept_since",
                {"bot": bot_id, "account": account_id, "ticker": ticker_id, "seq": oldest[0]},
            )
        return len(rows), removed, rows[-1][0]

    def _mark_pruned(self, conn, bot_id, seq, kept_since):
        """Record that the bot's changes up to `seq` may be gone, and (unless None) that its
        history is whole only from `kept_since` on."""
        d = self.dialect
        self._run(
            conn,
            "INSERT INTO change_horizons (bot_id, pruned_seq, kept_since)"
            f" VALUES (:bot, :seq, {d.time_param('kept_since')}) ON CONFLICT (bot_id) DO UPDATE SET"
            f" pruned_seq = {d.greatest}(change_horizons.pruned_seq, excluded.pruned_seq),"
            f" kept_since = coalesce({d.greatest}(change_horizons.kept_since, excluded.kept_since),"
            " change_horizons.kept_since, excluded.kept_since)",
            {"bot": bot_id, "seq": seq, "kept_since": kept_since},
        )

    def start_pruning(self, interval=PRUNE_INTERVAL):
        """Prune from a thread of its own: a pass every `interval` seconds, in batches."""
        if self._pruner is not None:
            return
        self._stop_pruning = threading.Event()
        self._pruner = threading.Thread(target=self._prune_every, args=(interval,), name="botstate-pruner", daemon=True)
        self._pruner.start()

    def _prune_every(self, interval):
        while not self._stop_pruning.wait(interval):
            for prune, what in (
                (self.prune_changes, "the change log"),
                (self.prune_answers, "Idempotency-Key answers"),
            ):
                try:
                    prune(stop=self._stop_pruning)
                except DatabaseBusy as error:  # a long write, or another program's: nothing is wrong
                    log.warning("pruning %s waits for its next pass: %s", what, error)
                except Exception:  # the next pass tries again; serving goes on
                    log.exception("pruning %s failed", what)

    def stop_pruning(self):
        """Stop the pruning thread, if it runs."""
        if self._pruner is not None:
            self._stop_pruning.set()
            self._pruner.join()
            self._pruner = None
