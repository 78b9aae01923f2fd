"""Where SQLite's and PostgreSQL's SQL differ, side by side: the shared statements are built from these."""

import functools
import json
import re

# A :name parameter of the shared SQL (not a ::cast, not inside a word like HH24:MI).
_PARAMETER = re.compile(r"(?<![:\w]):([a-z_][A-Za-z_0-9]*)")


class SQLiteDialect:
    """SQLite: ids and times are text already, sets of values travel as JSON arrays."""

    name = "sqlite"
    # The time now in the stored form, to the millisecond.
    now = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    # What a read that checks a key adds to keep it from changing until the write commits:
    # nothing, since a SQLite write transaction holds the whole database.
    key_lock = ""
    # What a statement that inserts or updates a state row adds, so that the row points to the
    # change-log entry its trigger appends: that entry's seq, the next after the largest.
    next_log_seq = "(SELECT coalesce(max(seq), 0) + 1 FROM state_changes)"
    log_seq_column = ", log_seq"
    log_seq_value = f", {next_log_seq}"
    log_seq_set = f", log_seq = {next_log_seq}"
    # The largest seq handed out, and what publishes a writer's seq floor (none: writers take turns).
    largest_seq = "SELECT max(seq) FROM state_changes"
    publish_floor = None
    # A bot's entries are found by its runs (schema 0007): each from its first seq to the next run's
    # start (only those up to a bound, in `until`), or `end` after the last.
    _run_end = (
        "coalesce((SELECT min(n.first_seq) FROM change_runs AS n WHERE n.first_seq > {run}.first_seq{until}), {end})"
    )
    _run_entries = (
        "change_runs AS r JOIN state_changes AS e ON e.seq >= {start} AND e.seq < "
        + _run_end.replace("{run}", "r")
        + " WHERE r.bot_id = :bot AND e.bot_id = :bot"
    )
    # The CTE `scanned`: the seqs of the bot's entries after :after, at most :scan of them, from
    # the run that holds :after on, and none past :horizon. Each run's entries are read between
    # one lower and one upper bound: of two, SQLite seeks by one and reads on to the other.
    feed_scanned = (
        "scanned AS (SELECT e.seq FROM "
        + _run_entries.format(
            start="max(r.first_seq, :after + 1)", until=" AND n.first_seq <= :horizon", end=":horizon + 1"
        )
        + " AND r.first_seq <= :horizon AND r.first_seq >= coalesce((SELECT max(b.first_seq) FROM change_runs AS b"
        " WHERE b.bot_id = :bot AND b.first_seq <= :after), 0) ORDER BY r.first_seq, e.seq LIMIT :scan)"
    )
    # SQL: the seqs of all the bot's entries.
    bot_entries = f"SELECT e.seq FROM {_run_entries.format(start='r.first_seq', until='', end=str(2**62))}"
    # What deleting the bot's entries (all of them, or those after :before) leaves to delete.
    forget_runs = "DELETE FROM change_runs WHERE bot_id = :bot AND first_seq > coalesce(:before, -1)"
    # The runs that held the entries :seqs (a set parameter) and hold none any more.
    drop_empty_runs = (
        "DELETE FROM change_runs WHERE first_seq IN (SELECT (SELECT max(r.first_seq) FROM change_runs AS r"
        " WHERE r.first_seq <= g.value) FROM json_each(:seqs) AS g) AND NOT EXISTS (SELECT 1 FROM state_changes"
        " AS e WHERE e.seq >= change_runs.first_seq AND e.seq < "
        + _run_end.format(run="change_runs", until="", end=2**62)
        + ")"
    )

    def prepare(self, sql):
        """`sql` in the driver's parameter style: sqlite3 reads :name itself."""
        return sql

    def text(self, column):
        """SQL: an id or state column as text."""
        return column

    def time_text(self, column):
        """SQL: a time column in the stored form (2024-01-15T10:30:00.123Z)."""
        return column

    def time_param(self, name):
        """SQL: the parameter `name`, a time in the stored form, as a time column's value."""
        return f":{name}"

    def state_param(self, name):
        """SQL: the parameter `name`, a state's JSON text, as the state column's value."""
        return f":{name}"

    def in_set(self, column, name, kind="uuid"):
        """SQL: whether `column` is one of the values of the set parameter `name` (see set_param)."""
        return f"{column} IN (SELECT value FROM json_each(:{name}))"

    def set_param(self, values):
        """The value of a set parameter holding `values`."""
        return json.dumps(list(values))

    def byte_length(self, column):
        """SQL: the length in bytes of a text column's UTF-8."""
        return f"length(CAST({column} AS BLOB))"

    def seconds_until(self, column):
        """SQL: the seconds from now until the time in `column` (negative once past)."""
        return f"(julianday({column}) - julianday('now')) * 86400.0"

    def seconds_from_now(self, name):
        """SQL: the time the parameter `name` (seconds) from now, as a time column's value."""
        return f"strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || :{name} || ' seconds')"

    def differs(self, a, b):
        """SQL: whether two values differ (NULL differs from a value, not from NULL)."""
        return f"{a} IS NOT {b}"

    def seconds_ago(self, name):
        """SQL: the time the parameter `name` (seconds) before now, as a time column's value."""
        return f"strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || :{name} || ' seconds')"

    # The larger of two values (NULL when either is).
    greatest = "max"
    # How text compares for lists paged by slug or symbol: by code point, as SQLite always does.
    by_code_point = ""

    def import_cast(self, field):
        """SQL to append to an imported field's parameter: none, every column is text or integer."""
        return ""

    def found_sql(self, key_works):
        """SQL: what a write needs in one row (see rules.Found): parameters bot, key, accounts,
        tickers and keys (found_params); registered ids and stored rows (without their states)
        as JSON arrays."""
        return (
            f"SELECT EXISTS (SELECT 1 FROM bots WHERE id = :bot) AS bot_exists, {key_works} AS key_works,"
            " (SELECT json_group_array(id) FROM accounts WHERE id IN (SELECT value FROM json_each(:accounts)))"
            " AS accounts,"
            " (SELECT json_group_array(id) FROM tickers WHERE id IN (SELECT value FROM json_each(:tickers)))"
            " AS tickers,"
            " (SELECT json_group_array(json_array(user_broker_account_id, ticker_id, id, version, created_at,"
            f" updated_at)) FROM user_bot_states WHERE bot_id = :bot AND {self.named_keys}) AS rows,"
            f" {self.now} AS now"
        )

    named_keys = (
        "(user_broker_account_id, ticker_id) IN"
        " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(:keys))"
    )

    def states_sql(self):
        """SQL: (account, ticker, state) of each stored row that found_params' keys name, a row each."""
        return (
            f"SELECT {self.text('user_broker_account_id')}, {self.text('ticker_id')}, {self.text('state')}"
            f" FROM user_bot_states WHERE bot_id = :bot AND {self.named_keys}"
        )

    def found_params(self, bot_id, key_hash, writes):
        """The parameters of found_sql for these writes."""
        return {
            "bot": bot_id,
            "key": key_hash,
            "accounts": json.dumps(list({w.account_id for w in writes})),
            "tickers": json.dumps(list({w.ticker_id for w in writes})),
            "keys": json.dumps(list({(w.account_id, w.ticker_id) for w in writes})),
        }

    def lock_rows_sql(self):
        """SQL that makes writers of the same rows wait for each other: none, the transaction does."""
        return None

    # SQL that takes an Idempotency-Key for the transaction, true when no other one holds it:
    # none, since a SQLite write transaction holds the whole database.
    answer_lock = None


class PostgresDialect(SQLiteDialect):
    """PostgreSQL: uuid and timestamptz columns, read back as text; sets travel as arrays."""

    name = "postgresql"
    # Idempotency-Keys take two-key advisory locks (objsubid 2), apart from the one-key locks of rows
    # and seq floors: 32 bits of the bot and 32 of the key.
    answer_lock = "SELECT pg_try_advisory_xact_lock(hashtext(CAST(:bot AS text)), hashtext(CAST(:idem AS text)))"
    # The clock's time when the statement runs, not when its transaction began (now()),
    # which a transaction waiting on a lock would date back; to the millisecond, like SQLite's.
    now = "date_trunc('milliseconds', clock_timestamp())"
    # The key's row stays locked against a rotation, revocation or the bot's deletion until
    # the transaction ends, so none of them lands between the check and the write it allows.
    key_lock = " FOR KEY SHARE"
    # Nothing: a trigger gives the row its entry's seq before it is written (schema 0007).
    log_seq_column = log_seq_value = log_seq_set = ""
    largest_seq = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM state_changes_seq"
    publish_floor = "SELECT botstate_publish_change_floor()"
    # An index by (bot, seq) finds a bot's entries: writers run side by side, so runs would be short.
    feed_scanned = (
        "scanned AS (SELECT seq FROM state_changes WHERE bot_id = :bot AND seq > :after AND seq <= :horizon"
        " ORDER BY seq LIMIT :scan)"
    )
    bot_entries = "SELECT seq FROM state_changes WHERE bot_id = :bot"
    forget_runs = drop_empty_runs = None

    @functools.cache  # noqa: B019 - one instance, and a statement's text is its key
    def prepare(self, sql):
        """`sql` with each :name as psycopg's %(name)s."""
        return _PARAMETER.sub(r"%(\1)s", sql)

    def text(self, column):
        """SQL: an id or state column as text."""
        return f"{column}::text"

    def time_text(self, column):
        """SQL: a timestamptz column in SQLite's stored form."""
        return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""

    def time_param(self, name):
        """SQL: the parameter `name`, a time in the stored form, as a timestamptz."""
        return f":{name}::timestamptz"

    def state_param(self, name):
        """SQL: the parameter `name` as json (not jsonb: the text is kept as written)."""
        return f":{name}::json"

    def in_set(self, column, name, kind="uuid"):
        """SQL: whether `column` is one of the array parameter `name`, of type `kind`."""
        return f"{column} = ANY(:{name}::{kind}[])"

    def set_param(self, values):
        """The value of an array parameter holding `values`."""
        return list(values)

    def byte_length(self, column):
        """SQL: the length in bytes of a json or text column."""
        return f"octet_length({column}::text)"

    def seconds_until(self, column):
        """SQL: the seconds from the database's clock now until the time in `column`."""
        return f"extract(epoch FROM {column} - clock_timestamp())::float8"

    def seconds_from_now(self, name):
        """SQL: the time the parameter `name` (seconds) from now."""
        return f"{self.now} + make_interval(secs => :{name})"

    def differs(self, a, b):
        """SQL: whether two values differ, compared as text (json has no equality)."""
        return f"{a}::text IS DISTINCT FROM {b}::text"

    def seconds_ago(self, name):
        """SQL: the time the parameter `name` (seconds) before now."""
        return f"({self.now} - make_interval(secs => :{name}))"

    greatest = "greatest"
    # Whatever the database's collation: a language's would order symbols otherwise than SQLite does.
    by_code_point = ' COLLATE "C"'

    def import_cast(self, field):
        """SQL: the cast of an imported field's parameter to its column's type."""
        if field == "state":
            return "::json"
        if field == "version":
            return "::bigint"
        if field == "id" or field in ("botId", "accountId", "tickerId"):
            return "::uuid"
        if field.endswith("At"):
            return "::timestamptz"
        return "::text"

    def found_sql(self, key_works):
        """SQL: found_sql as on SQLite, with locks: the registered accounts and tickers against
        deletion, the stored rows against other writers."""
        return (
            f"SELECT EXISTS (SELECT 1 FROM bots WHERE id = :bot::uuid) AS bot_exists, {key_works} AS key_works,"
            " ARRAY(SELECT id::text FROM accounts WHERE id = ANY(:accounts::uuid[]) FOR KEY SHARE) AS accounts,"
            " ARRAY(SELECT id::text FROM tickers WHERE id = ANY(:tickers::uuid[]) FOR KEY SHARE) AS tickers,"
            " (SELECT json_agg(json_build_array(user_broker_account_id::text, ticker_id::text, id::text, version,"
            f" {self.time_text('created_at')}, {self.time_text('updated_at')}))"
            f" FROM (SELECT * FROM user_bot_states WHERE bot_id = :bot::uuid AND {self.named_keys}"
            " FOR UPDATE) AS locked) AS rows,"
            # After the rows: the columns are computed in order, so the time is taken once their locks are held,
            # and a write that waited for another is dated after it.
            f" {self.time_text(self.now)} AS now"
        )

    named_keys = (
        "(user_broker_account_id, ticker_id) IN (SELECT * FROM unnest(:key_accounts::uuid[], :key_tickers::uuid[]))"
    )

    def found_params(self, bot_id, key_hash, writes):
        """The parameters of found_sql for these writes."""
        keys = list({(w.account_id, w.ticker_id) for w in writes})
        return {
            "bot": bot_id,
            "key": key_hash,
            "accounts": list({w.account_id for w in writes}),
            "tickers": list({w.ticker_id for w in writes}),
            "key_accounts": [account for account, _ in keys],
            "key_tickers": [ticker for _, ticker in keys],
        }

    def lock_rows_sql(self):
        """SQL: one lock per row a transaction will write, taken in one order before any row's.

        Two bulk writes over the same rows in different orders then wait for each other
        instead of deadlocking (which PostgreSQL takes a second to detect, then aborts one).
        Parameter: keys, the rows' bot/account/ticker texts.
        """
        return (
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(k, 0) AS h"
            " FROM unnest(:keys::text[]) AS k ORDER BY h) AS ordered"
        )


SQLITE = SQLiteDialect()
POSTGRES = PostgresDialect()
