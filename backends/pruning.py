"""Pruning the change log to what BOTSTATE_HISTORY_DAYS and BOTSTATE_HISTORY_VERSIONS keep, in the background.

A version is kept while it was the row's state at some moment of the window: it goes
once the version after it is older than the window. A delete goes once it is older than
the window (the row was gone all through it). The newest version of a row always stays.
"""

import dataclasses
import logging
import threading

from backends.changes import NO_HORIZON

log = logging.getLogger("botstate.storage")

# Entries looked at per transaction: each batch holds the write lock for a few ms at most.
PRUNE_BATCH = 200
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

    def prune_changes(self, batch=PRUNE_BATCH, stop=None):
        """Remove what retention no longer keeps, a transaction per `batch` entries looked at,
        until none is left or `stop` (an Event) is set; how many entries went."""
        removed = 0
        for prune in (self._prune_by_age, self._prune_by_count if self.retention.versions else None):
            while prune is not None and not (stop is not None and stop.wait(BATCH_PAUSE)):
                looked, gone = self._in_transaction(lambda conn, prune=prune: prune(conn, batch), short=True)
                removed += gone
                if looked < batch:
                    break
        return removed

    def _batch(self, conn, cursor, batch):
        """The next `batch` entries after seq `cursor` that have committed, oldest first."""
        d = self.dialect
        horizon = self._feed_horizon(conn)
        return self._run(
            conn,
            f"SELECT seq, {d.text('bot_id')}, row_n, {d.text('row_id')}, {d.time_text('at')}, op,"
            f" {d.text('account_id')}, {d.text('ticker_id')}"
            " FROM state_changes WHERE seq > :cursor AND seq <= :horizon ORDER BY seq LIMIT :batch",
            {"cursor": cursor, "horizon": NO_HORIZON if horizon is None else horizon, "batch": batch},
        ).fetchall()

    def _prune_by_age(self, conn, batch):
        d = self.dialect
        cutoff = self._run(
            conn, f"SELECT {d.time_text(d.seconds_ago('age'))}", {"age": self.retention.days * 86400}
        ).fetchone()[0]
        largest = self._run(conn, "SELECT max(seq) FROM state_changes").fetchone()[0]
        # The versions of the same row before this one: it was their successor before the window.
        older = "DELETE FROM state_changes WHERE row_n = :row_n AND row_id = :row_id AND seq < :seq RETURNING seq"
        pruned, removed, looked = {}, 0, 0
        for seq, bot_id, row_n, row_id, at, op, *_ in self._batch(conn, self._age_cursor, batch):
            if at > cutoff:
                break
            looked += 1
            params = {"row_n": row_n, "row_id": row_id, "seq": seq}
            gone = [row[0] for row in self._run(conn, older, params)]
            if op != "upsert" and not (self.keeps_largest_seq and seq == largest):
                self._run(conn, "DELETE FROM state_changes WHERE seq = :seq", params)
                self._run(conn, "DELETE FROM state_tombstones WHERE seq = :seq", params)
                gone.append(seq)
            removed += len(gone)
            if gone and bot_id:
                pruned[bot_id] = max(pruned.get(bot_id, 0), *gone)
            self._age_cursor = seq
        for bot_id, seq in pruned.items():
            self._mark_pruned(conn, bot_id, seq, cutoff)
        return looked, removed

    def _prune_by_count(self, conn, batch):
        rows = self._batch(conn, self._count_cursor, batch)
        if not rows:
            return 0, 0
        self._count_cursor = rows[-1][0]
        row = "row_n = :row_n AND row_id = :row_id"
        beyond = (
            f"DELETE FROM state_changes WHERE seq IN (SELECT seq FROM state_changes WHERE {row}"
            " ORDER BY seq DESC LIMIT :all OFFSET :keep) RETURNING seq"
        )
        removed = 0
        for bot_id, row_n, row_id, account_id, ticker_id in {(r[1], r[2], r[3], r[6], r[7]) for r in rows if r[1]}:
            params = {"bot": bot_id, "row_n": row_n, "row_id": row_id, "account": account_id, "ticker": ticker_id}
            capped = {**params, "all": NO_HORIZON, "keep": self.retention.versions}
            gone = [found[0] for found in self._run(conn, beyond, capped)]
            if not gone:
                continue
            removed += len(gone)
            self._mark_pruned(conn, bot_id, max(gone), None)
            self._run(
                conn,
                "INSERT INTO change_floors (bot_id, account_id, ticker_id, kept_since)"
                f" SELECT :bot, :account, :ticker, min(at) FROM state_changes WHERE {row}"
                " ON CONFLICT (bot_id, account_id, ticker_id) DO UPDATE SET kept_since = excluded.kept_since",
                params,
            )
        return len(rows), removed

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
            try:
                self.prune_changes(stop=self._stop_pruning)
            except Exception:  # the next pass tries again; serving goes on
                log.exception("pruning the change log failed")

    def stop_pruning(self):
        """Stop the pruning thread, if it runs."""
        if self._pruner is not None:
            self._stop_pruning.set()
            self._pruner.join()
            self._pruner = None
