"""The answers kept for Idempotency-Keys, for both backends: found, kept with their write, pruned after a day."""

from records import AnsweredBefore, RequestInProgress, StoredAnswer

# How long the answer to a request sent with an Idempotency-Key is kept.
ANSWER_HOURS = 24
ANSWER_SECONDS = ANSWER_HOURS * 3600
# Answers removed per transaction: each holds the write lock for a moment only.
ANSWER_PRUNE_BATCH = 500


class Answers:
    """find_answer() and the steps a write with an Idempotency-Key takes in its transaction, for SQLStorage."""

    # Answers that pruning removed (GET /metrics shows it).
    answers_pruned = 0

    def _answer_sql(self):
        d = self.dialect
        return (
            "SELECT fingerprint, status, body FROM idempotent_requests WHERE bot_id = :bot AND idem = :idem"
            f" AND created_at > {d.seconds_ago('age')}"
        )

    def find_answer(self, credentials, key):
        """The StoredAnswer kept for the bot's Idempotency-Key `key`, or None, read with the check of the key."""
        with self._reading() as conn:
            self._verify_key(conn, {"bot": credentials.bot_id, "key": credentials.key_hash})
            return self._kept_answer(conn, credentials.bot_id, key)

    def _kept_answer(self, conn, bot_id, key):
        sql = self._once("kept answer", self._answer_sql)
        row = self._run(conn, sql, {"bot": bot_id, "idem": key, "age": ANSWER_SECONDS}).fetchone()
        return None if row is None else StoredAnswer(bytes(row[0]), row[1], bytes(row[2]))

    def _claim_answer(self, conn, credentials, idempotent):
        """In a write's transaction, before it writes: RequestInProgress when another transaction
        holds the key, AnsweredBefore when an answer is kept for it."""
        lock = self.dialect.answer_lock
        params = {"bot": credentials.bot_id, "idem": idempotent.key}
        if lock is not None and not self._run(conn, lock, params).fetchone()[0]:
            raise RequestInProgress(idempotent.key)
        answer = self._kept_answer(conn, credentials.bot_id, idempotent.key)
        if answer is not None:
            self._verify_key(conn, {"bot": credentials.bot_id, "key": credentials.key_hash})  # revoked: no answer
            raise AnsweredBefore(answer)

    def _keep_answer(self, conn, credentials, idempotent, status, body):
        """In a write's transaction, once it wrote: keep its answer (replacing one past its day)."""
        d = self.dialect
        self._run(
            conn,
            "INSERT INTO idempotent_requests (bot_id, idem, fingerprint, status, body, created_at)"
            f" VALUES (:bot, :idem, :fingerprint, :status, :body, {d.now})"
            " ON CONFLICT (bot_id, idem) DO UPDATE SET fingerprint = excluded.fingerprint,"
            " status = excluded.status, body = excluded.body, created_at = excluded.created_at",
            {
                "bot": credentials.bot_id,
                "idem": idempotent.key,
                "fingerprint": idempotent.fingerprint,
                "status": status,
                "body": body,
            },
        )

    def prune_answers(self, batch=ANSWER_PRUNE_BATCH, stop=None):
        """Remove the answers past their day, a short transaction per `batch`, until none is left
        or `stop` (an Event) is set; how many went."""
        removed = 0
        while not (stop is not None and stop.is_set()):
            gone = self._in_transaction(lambda conn: self._prune_answers(conn, batch), short=True)
            removed += gone
            self.answers_pruned += gone  # only once committed
            if gone < batch:
                break
        return removed

    def _prune_answers(self, conn, batch):
        """Remove up to `batch` answers past their day, oldest first; how many went."""
        d = self.dialect
        gone = self._run(
            conn,
            "DELETE FROM idempotent_requests WHERE (bot_id, idem) IN (SELECT bot_id, idem FROM idempotent_requests"
            f" WHERE created_at <= {d.seconds_ago('age')} ORDER BY created_at LIMIT :batch)",
            {"age": ANSWER_SECONDS, "batch": batch},
        ).rowcount
        return gone

    def count_answers(self, bot_id=None):
        """How many Idempotency-Key answers are kept (expired ones not yet pruned too), for one bot or all."""
        if bot_id is None:
            return self._scalar("SELECT count(*) FROM idempotent_requests")
        return self._scalar("SELECT count(*) FROM idempotent_requests WHERE bot_id = :bot", {"bot": bot_id})
