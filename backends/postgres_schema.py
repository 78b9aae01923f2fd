"""The PostgreSQL schema and its migrations: one baseline for a new database, legacy databases carried on."""

# Every function takes a psycopg 3 connection already inside a transaction, and leaves
# the commit (or the rollback, after an error) to its caller.

from records import StorageError

# Any fixed number: held while migrating, so hosts starting together migrate once.
MIGRATION_LOCK = 0x626F7473

MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS botstate_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL)"
)

# Numbered after the five legacy steps it stands for, so that the names sort in the
# order they were applied, on a new database and on a legacy one alike.
BASELINE = "0006_baseline"

# Today's schema in one step: what the legacy steps below end up with, table for table,
# column for column (in the same order), with the same types, defaults, constraints
# and constraint names, so that later migrations meet the same schema on both.
BASELINE_SQL = """
CREATE TABLE bots (
    id uuid CONSTRAINT bots_pkey PRIMARY KEY,
    slug text NOT NULL CONSTRAINT bots_slug_key UNIQUE,
    name text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE accounts (id uuid CONSTRAINT accounts_pkey PRIMARY KEY, name text, created_at timestamptz NOT NULL);
CREATE TABLE tickers (
    id uuid CONSTRAINT tickers_pkey PRIMARY KEY,
    symbol text NOT NULL CONSTRAINT tickers_symbol_key UNIQUE,
    created_at timestamptz NOT NULL
);
-- No primary key and no index but the unique one: every read and write goes by
-- (bot, account, ticker), so any other index (on id, on the account or the ticker
-- alone) would only slow inserts down.
CREATE TABLE user_bot_states (
    id uuid NOT NULL,
    bot_id uuid NOT NULL CONSTRAINT user_bot_states_bot_id_fkey REFERENCES bots (id) ON DELETE CASCADE,
    user_broker_account_id uuid NOT NULL
        CONSTRAINT user_bot_states_user_broker_account_id_fkey REFERENCES accounts (id) ON DELETE CASCADE,
    ticker_id uuid NOT NULL CONSTRAINT user_bot_states_ticker_id_fkey REFERENCES tickers (id) ON DELETE CASCADE,
    -- json, not jsonb: it keeps the text as written, so a state reads back byte for byte.
    state json NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    -- Last, where the legacy step 0003 added it: SELECT * sees the same columns on both.
    version bigint NOT NULL DEFAULT 1,
    CONSTRAINT user_bot_states_bot_id_user_broker_account_id_ticker_id_key
        UNIQUE (bot_id, user_broker_account_id, ticker_id)
);
-- Several keys per bot: a rotated-out key keeps working until its expires_at.
CREATE TABLE bot_keys (
    bot_id uuid NOT NULL CONSTRAINT bot_keys_bot_id_fkey REFERENCES bots (id) ON DELETE CASCADE,
    key_hash text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    last_used_at timestamptz,
    CONSTRAINT bot_keys_pkey PRIMARY KEY (bot_id, key_hash)
);
"""

# The migrations after the baseline, (name, SQL), oldest first: each runs once on every
# database, new or legacy. A name must sort after BASELINE and after the one before it,
# since applied() lists them by name.
MIGRATIONS = (
    (
        "0007_change_log",
        """
        -- The change log: an entry per row each insert, update or delete of a state makes, in
        -- the same transaction (the triggers below). Each entry points to the row's entry before
        -- it (prev_seq), and the row to its newest (log_seq). seq comes from a sequence, so two
        -- writers may commit in the other order than their seqs: a writer publishes, before it
        -- takes its first seq, a floor below all of its seqs (a shared advisory lock keyed by
        -- the sequence's last value, held until it ends), and the feed hands out only seqs below
        -- every published floor (botstate_change_horizon).
        CREATE SEQUENCE state_changes_seq AS bigint;
        CREATE TABLE state_changes (
            seq bigint NOT NULL DEFAULT nextval('state_changes_seq') CONSTRAINT state_changes_pkey PRIMARY KEY,
            bot_id uuid NOT NULL,
            account_id uuid NOT NULL,
            ticker_id uuid NOT NULL,
            row_id uuid NOT NULL,
            op text NOT NULL,
            version bigint NOT NULL,
            state json,
            created_at timestamptz NOT NULL,
            at timestamptz NOT NULL,
            prev_seq bigint
        );
        ALTER SEQUENCE state_changes_seq OWNED BY state_changes.seq;
        CREATE INDEX state_changes_feed ON state_changes (bot_id, seq);
        ALTER TABLE user_bot_states ADD COLUMN log_seq bigint;
        CREATE TABLE state_tombstones (
            bot_id uuid NOT NULL,
            account_id uuid NOT NULL,
            ticker_id uuid NOT NULL,
            seq bigint NOT NULL,
            CONSTRAINT state_tombstones_pkey PRIMARY KEY (bot_id, account_id, ticker_id, seq)
        );
        CREATE TABLE change_horizons (
            bot_id uuid CONSTRAINT change_horizons_pkey PRIMARY KEY,
            pruned_seq bigint NOT NULL,
            kept_since timestamptz
        );
        CREATE TABLE change_floors (
            bot_id uuid NOT NULL,
            account_id uuid NOT NULL,
            ticker_id uuid NOT NULL,
            kept_since timestamptz NOT NULL,
            CONSTRAINT change_floors_pkey PRIMARY KEY (bot_id, account_id, ticker_id)
        );
        UPDATE user_bot_states SET log_seq = nextval('state_changes_seq');
        INSERT INTO state_changes (seq, bot_id, account_id, ticker_id, row_id, op, version, state, created_at, at)
        SELECT log_seq, bot_id, user_broker_account_id, ticker_id, id, 'upsert', version, state, created_at, updated_at
        FROM user_bot_states;

        -- Once per transaction, before its first seq: the floor below all of its seqs, published.
        CREATE FUNCTION botstate_publish_change_floor() RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            IF coalesce(current_setting('botstate.change_floor', true), '') = '' THEN
                PERFORM set_config(
                    'botstate.change_floor',
                    (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM state_changes_seq)::text,
                    true
                );
                PERFORM pg_advisory_xact_lock_shared(current_setting('botstate.change_floor')::bigint);
            END IF;
        END
        $$;
        -- Before a row is written: publish the floor once per transaction, then give the row
        -- its entry's seq (a seq an insert skipped by ON CONFLICT burns is only a gap).
        -- An insert first takes the row's lock that deletes and bulk writes take (lock_rows_sql):
        -- one that waited for a row being deleted would otherwise keep a seq from before that
        -- delete's, and the row's new life would come before its end in the feed.
        CREATE FUNCTION botstate_number_state_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                PERFORM pg_advisory_xact_lock(hashtextextended(
                    NEW.bot_id::text || '/' || NEW.user_broker_account_id::text || '/' || NEW.ticker_id::text, 0));
            END IF;
            PERFORM botstate_publish_change_floor();
            NEW.log_seq := nextval('state_changes_seq');
            RETURN NEW;
        END
        $$;
        -- Once it is written: its entry.
        CREATE FUNCTION botstate_log_state_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                PERFORM botstate_publish_change_floor();
                INSERT INTO state_changes
                    (bot_id, account_id, ticker_id, row_id, op, version, state, created_at, at, prev_seq)
                VALUES (OLD.bot_id, OLD.user_broker_account_id, OLD.ticker_id, OLD.id, 'delete', OLD.version, NULL,
                        OLD.created_at, greatest(date_trunc('milliseconds', clock_timestamp()), OLD.updated_at),
                        OLD.log_seq);
                INSERT INTO state_tombstones (bot_id, account_id, ticker_id, seq)
                VALUES (OLD.bot_id, OLD.user_broker_account_id, OLD.ticker_id, currval('state_changes_seq'));
                RETURN OLD;
            END IF;
            INSERT INTO state_changes
                (seq, bot_id, account_id, ticker_id, row_id, op, version, state, created_at, at, prev_seq)
            VALUES (NEW.log_seq, NEW.bot_id, NEW.user_broker_account_id, NEW.ticker_id, NEW.id, 'upsert',
                    NEW.version, NEW.state, NEW.created_at, NEW.updated_at,
                    -- A row whose version did not go up (an import took it back) starts its history anew.
                    CASE WHEN TG_OP = 'UPDATE' AND NEW.version > OLD.version THEN OLD.log_seq END);
            RETURN NEW;
        END
        $$;
        CREATE TRIGGER state_changes_number BEFORE INSERT OR UPDATE OF state, version, updated_at
            ON user_bot_states FOR EACH ROW EXECUTE FUNCTION botstate_number_state_change();
        CREATE TRIGGER state_changes_log AFTER INSERT OR UPDATE OF state, version, updated_at OR DELETE
            ON user_bot_states FOR EACH ROW EXECUTE FUNCTION botstate_log_state_change();

        -- The largest seq the feed may hand out now: every entry at or below it has committed
        -- or never will. The sequence is read before the published floors, so a writer that
        -- publishes after this read gets only seqs above it.
        CREATE FUNCTION botstate_change_horizon() RETURNS bigint LANGUAGE plpgsql AS $$
        DECLARE
            allocated bigint;
            floor bigint;
        BEGIN
            SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO allocated FROM state_changes_seq;
            SELECT min((classid::bigint << 32) | objid::bigint) INTO floor FROM pg_locks
            WHERE locktype = 'advisory' AND mode = 'ShareLock' AND objsubid = 1
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database());
            RETURN least(allocated, floor);
        END
        $$;
        """,
    ),
    (
        "0008_idempotent_requests",
        """
        -- The answers to writes sent with an Idempotency-Key (backends/answers.py): a day per
        -- (bot, key), the body as the server sent it, compressed.
        CREATE TABLE idempotent_requests (
            bot_id uuid NOT NULL CONSTRAINT idempotent_requests_bot_id_fkey REFERENCES bots (id) ON DELETE CASCADE,
            idem text NOT NULL,
            fingerprint bytea NOT NULL,
            status integer NOT NULL,
            body bytea NOT NULL,
            created_at timestamptz NOT NULL,
            CONSTRAINT idempotent_requests_pkey PRIMARY KEY (bot_id, idem)
        );
        CREATE INDEX idempotent_requests_age ON idempotent_requests (created_at);
        """,
    ),
    (
        "0009_admin_keys_and_key_scopes",
        """
        -- Admin keys (backends/admin_keys.py) work on /api/admin/ only, bot keys on bot endpoints
        -- only; a bot key's scope says whether it may write (every key made before scopes could).
        ALTER TABLE bot_keys ADD COLUMN scope text NOT NULL DEFAULT 'write'
            CONSTRAINT bot_keys_scope_check CHECK (scope IN ('write', 'read'));
        CREATE TABLE admin_keys (
            name text CONSTRAINT admin_keys_pkey PRIMARY KEY,
            key_hash text NOT NULL CONSTRAINT admin_keys_key_hash_key UNIQUE,
            created_at timestamptz NOT NULL,
            last_used_at timestamptz
        );
        """,
    ),
)

# Legacy: the steps that made every PostgreSQL database before the baseline, from the
# first botstate that supported PostgreSQL: all five shipped with it and ran in one
# transaction with their records, so no released botstate left a database with only
# some of them. migrate() never runs them: they are kept as the record of what a
# database listing exactly these names holds, and for the test that the baseline
# makes the same schema. Frozen: never edit them.
LEGACY_MIGRATIONS = (
    (
        "0001_create_tables",
        """
        CREATE TABLE bots (
            id uuid PRIMARY KEY,
            slug text NOT NULL UNIQUE,
            name text NOT NULL,
            api_key_hash text NOT NULL,
            created_at timestamptz NOT NULL
        );
        CREATE TABLE accounts (id uuid PRIMARY KEY, name text, created_at timestamptz NOT NULL);
        CREATE TABLE tickers (id uuid PRIMARY KEY, symbol text NOT NULL UNIQUE, created_at timestamptz NOT NULL);
        CREATE TABLE user_bot_states (
            id uuid PRIMARY KEY,
            bot_id uuid NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
            user_broker_account_id uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
            ticker_id uuid NOT NULL REFERENCES tickers (id) ON DELETE CASCADE,
            -- json, not jsonb: it keeps the text as written, so a state reads back byte for byte.
            state json NOT NULL,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            UNIQUE (bot_id, user_broker_account_id, ticker_id)
        );
        """,
    ),
    (
        "0002_state_foreign_key_indexes",
        """
        CREATE INDEX idx_user_bot_states_account ON user_bot_states (user_broker_account_id);
        CREATE INDEX idx_user_bot_states_ticker ON user_bot_states (ticker_id);
        """,
    ),
    ("0003_state_versions", "ALTER TABLE user_bot_states ADD COLUMN version bigint NOT NULL DEFAULT 1"),
    (
        # As on SQLite: every read and write goes by (bot, account, ticker), so the
        # other indexes only slowed inserts down.
        "0004_slim_state_indexes",
        """
        ALTER TABLE user_bot_states DROP CONSTRAINT user_bot_states_pkey;
        DROP INDEX idx_user_bot_states_account;
        DROP INDEX idx_user_bot_states_ticker;
        """,
    ),
    (
        "0005_bot_keys",
        """
        CREATE TABLE bot_keys (
            bot_id uuid NOT NULL REFERENCES bots (id) ON DELETE CASCADE,
            key_hash text NOT NULL,
            created_at timestamptz NOT NULL,
            expires_at timestamptz,
            last_used_at timestamptz,
            PRIMARY KEY (bot_id, key_hash)
        );
        INSERT INTO bot_keys (bot_id, key_hash, created_at) SELECT id, api_key_hash, created_at FROM bots;
        ALTER TABLE bots DROP COLUMN api_key_hash;
        """,
    ),
)

LEGACY = tuple(name for name, _ in LEGACY_MIGRATIONS)

# The baseline's tables: on a database that records no migrations, any of them means
# a schema botstate cannot vouch for.
_TABLES = ("bots", "accounts", "tickers", "user_bot_states", "bot_keys")
_RECORD = "INSERT INTO botstate_migrations (name, applied_at) VALUES (%s, now())"
_NEW, _LEGACY, _CURRENT = "new", "legacy", "current"


class SchemaError(StorageError):
    """A database whose schema botstate cannot carry forward; the message says why in one line."""


def _recorded(conn):
    """The names in botstate_migrations (none when there is no such table)."""
    if conn.execute("SELECT to_regclass('botstate_migrations')").fetchone()[0] is None:
        return set()
    return {name for (name,) in conn.execute("SELECT name FROM botstate_migrations")}


def _kind(conn, recorded):
    """_NEW, _LEGACY or _CURRENT for a database that records `recorded`; SchemaError for any other."""
    if BASELINE in recorded:
        return _CURRENT  # names after the baseline that this botstate does not know come from a newer one
    if recorded == set(LEGACY):
        return _LEGACY
    if not recorded:
        [tables] = conn.execute(
            "SELECT array_agg(t ORDER BY t) FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NOT NULL",
            [list(_TABLES)],
        ).fetchone()
        if tables:
            raise SchemaError(
                f"the database has tables named like botstate's ({', '.join(tables)}) but no record of"
                " botstate's migrations: point botstate at an empty database or at one it made"
            )
        return _NEW
    # Every released botstate recorded all five legacy steps at once, or the baseline:
    # anything else was not made by one, and guessing at its schema could lose data.
    missing = [name for name in LEGACY if name not in recorded]
    unknown = sorted(recorded - set(LEGACY))
    what = f"lacks {', '.join(missing)}" if missing else f"records unknown steps {', '.join(unknown)}"
    raise SchemaError(
        f"botstate_migrations {what} (and not {BASELINE}): no released botstate made this schema,"
        " so it cannot be carried forward; restore a backup or start from an empty database"
    )


def _pending(recorded):
    return [(name, sql) for name, sql in MIGRATIONS if name not in recorded]


def migrate(conn):
    """Create or upgrade the schema under the migration lock; returns the names of the steps run.

    A new database gets the baseline, then every later migration. A legacy database
    (exactly the five legacy steps recorded) has the baseline's schema already: the
    baseline is recorded without running it and is not in the names returned. Then
    both get the later migrations they lack. Raises SchemaError for any other database.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
    conn.execute(MIGRATIONS_TABLE)
    recorded = _recorded(conn)
    kind = _kind(conn, recorded)
    applied = []
    if kind == _NEW:
        conn.execute(BASELINE_SQL)
        conn.execute(_RECORD, [BASELINE])
        applied.append(BASELINE)
    elif kind == _LEGACY:
        # The legacy rows stay: they are true history (what ran, and when), nothing
        # rewrites them, and the botstate release before the baseline, which looks for
        # exactly those names, still starts on this database if it is rolled back to
        # (as long as no later migration has run).
        conn.execute(_RECORD, [BASELINE])
    for name, sql in _pending(recorded):
        conn.execute(sql)
        conn.execute(_RECORD, [name])
        applied.append(name)
    return applied


def outdated(conn):
    """The migrations an existing database still needs ([] for a new or current one).

    A legacy database needs no baseline (it has its schema), only the later migrations
    it lacks. Raises SchemaError for a database migrate() would refuse.
    """
    recorded = _recorded(conn)
    if _kind(conn, recorded) == _NEW:
        return []
    return [name for name, _ in _pending(recorded)]


def applied(conn):
    """Names of the migration steps recorded for this database, oldest first ([] before the first)."""
    if conn.execute("SELECT to_regclass('botstate_migrations')").fetchone()[0] is None:
        return []
    return [name for (name,) in conn.execute("SELECT name FROM botstate_migrations ORDER BY name")]
