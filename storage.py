"""The storage interface: what every backend does, the values it takes and gives, and open_storage().

HTTP and CLI code use this module only; they never know which database they talk to.
Every SQL statement lives in a backend (backends/), each implementing Storage.
"""

from typing import Protocol

from backends.pruning import Retention
from backends.sqlite import SQLiteStorage
from backends.transfer_sql import TRANSFER_KINDS
from records import (
    DEFAULT_PAGE_BYTES,
    KEY_FINGERPRINT_LENGTH,
    KEY_SCOPES,
    PAGE_ROW_OVERHEAD,
    READ_SCOPE,
    WRITE_SCOPE,
    AnsweredBefore,
    Change,
    ChangesAhead,
    ChangesGone,
    Conflict,
    Credentials,
    DatabaseBusy,
    DatabaseUnavailable,
    HistoryGone,
    IdempotentWrite,
    ItemError,
    NotFound,
    Registered,
    RequestInProgress,
    StaleKey,
    StateRow,
    StateWrite,
    StorageError,
    StoredAnswer,
    Taken,
    VersionConflict,
)

__all__ = [
    "DEFAULT_PAGE_BYTES",
    "KEY_FINGERPRINT_LENGTH",
    "KEY_SCOPES",
    "PAGE_ROW_OVERHEAD",
    "READ_SCOPE",
    "TRANSFER_KINDS",
    "WRITE_SCOPE",
    "AnsweredBefore",
    "Change",
    "ChangesAhead",
    "ChangesGone",
    "Conflict",
    "Credentials",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "HistoryGone",
    "IdempotentWrite",
    "ItemError",
    "NotFound",
    "Registered",
    "RequestInProgress",
    "StaleKey",
    "StateRow",
    "StateWrite",
    "Storage",
    "StorageError",
    "StoredAnswer",
    "Taken",
    "VersionConflict",
    "open_storage",
]


class Storage(Protocol):
    """The service's database. Every method may raise DatabaseBusy (the write lock or a row
    lock was not had within the busy timeout: a 503) or DatabaseUnavailable (the database
    cannot be opened, read or written: a 503), besides the errors it names.

    Times are text in the stored form (clock.stored_time), ids canonical lowercase UUIDs.
    A method that acts for a bot takes the request's Credentials and checks in the same
    statement or transaction that the key still works: NotFound when the bot is gone,
    StaleKey when the key was rotated away, revoked or expired since it was checked.
    """

    location: str  # what messages name the database by (a SQLite path, a PostgreSQL URL without password)
    retries: int  # write transactions tried again after the database aborted them

    # Schema and lifecycle

    def migrate(self) -> list[str]:
        """Create or upgrade the schema; the names of the steps applied ([] when current)."""

    def outdated_migrations(self) -> list[str]:
        """The steps an existing database made by an older version still needs ([] for a new or current one)."""

    def schema_version(self) -> list[str]:
        """The names of the steps applied to this database, oldest first."""

    def ping(self) -> None:
        """Raise StorageError unless the database answers a read of its schema."""

    def check_writable(self) -> None:
        """Raise DatabaseUnavailable when the database cannot take writes (a read-only file or standby)."""

    def start_upkeep(self, leading: bool = True) -> None:
        """Start the background work of a serving process (storing keys' last use; when `leading`, the one
        worker of a server that does them, pruning and SQLite's WAL checkpoints)."""

    def servers_running(self) -> bool:
        """Whether a process that called start_upkeep() serves this database now (False when it cannot be known)."""

    def close(self) -> None:
        """Store the keys' last use, stop the background work and close every connection."""

    # Bots and keys

    def create_bot(self, slug: str, name: str, api_key_hash: str) -> dict:
        """Insert a bot with its first key; the bot as get_bot() shows it. Conflict when the slug is taken."""

    def get_bot(self, slug: str) -> dict | None:
        """The bot with this slug ({id, slug, name, createdAt, states}), or None."""

    def list_bots(self) -> list[dict]:
        """Every bot as get_bot() shows it, by slug."""

    def page_bots(self, limit: int, after: str | None = None) -> tuple[list[dict], bool]:
        """Up to `limit` bots as get_bot() shows them, by slug, those past the slug `after`; and whether more follow."""

    def count_bots(self) -> int:
        """How many bots exist."""

    def delete_bot(self, slug: str) -> dict:
        """Delete the bot, its keys and its states; the bot as it was. NotFound when there is none."""

    def find_bot_credentials(self, slug: str) -> tuple | None:
        """(bot id, its working keys) for the slug, or None: the read that authenticates a request.

        Each key is (key hash, when it stops working on time.monotonic()'s clock or None, its scope).
        """

    def record_key_use(self, bot_id: str, key_hash: str) -> None:
        """Note that a request authenticated with this key now; flush_key_uses() stores it."""

    def flush_key_uses(self) -> None:
        """Store the last use of each key recorded since the last flush."""

    def replace_bot_key(self, slug: str, api_key_hash: str, grace_seconds: int = 0, scope: str = WRITE_SCOPE) -> dict:
        """Give the bot a new key of `scope`; its other keys of that scope work `grace_seconds` more (none at 0),
        or until their own earlier expiry. The bot, with `oldKeysExpireAt` (None: no old key works). NotFound."""

    def add_bot_key(self, slug: str, api_key_hash: str, scope: str) -> dict:
        """Give the bot one more key of `scope` (KEY_SCOPES) beside its others; the key as list_bot_keys() shows it."""

    def revoke_bot_keys(self, slug: str, every: bool = False, fingerprint: str | None = None) -> int:
        """Stop the bot's keys in a grace period at once, with `every` all of them, with `fingerprint` the one
        key whose hash starts so; how many. NotFound, also for a fingerprint of no working key."""

    def list_bot_keys(self, slug: str) -> list[dict]:
        """The bot's working keys, newest first: fingerprint, scope, createdAt, expiresAt, lastUsedAt. NotFound."""

    # Admin keys

    def create_admin_key(self, name: str, key_hash: str) -> dict:
        """Insert an admin key; as list_admin_keys() shows it. Conflict when the name is taken."""

    def list_admin_keys(self) -> list[dict]:
        """Every admin key, by name: name, fingerprint, createdAt, lastUsedAt."""

    def revoke_admin_key(self, name: str) -> dict:
        """Delete the admin key `name`; it as list_admin_keys() showed it. NotFound."""

    def find_admin_key(self, key_hash: str) -> str | None:
        """The name of the admin key with this hash, or None: the read that authenticates an admin request."""

    def count_admin_keys(self) -> int:
        """How many admin keys exist."""

    # Accounts and tickers

    def add_account(self, account_id: str, name: str | None) -> dict:
        """Insert one account ({id, name}). Conflict when the id exists."""

    def import_accounts(self, rows: list) -> int:
        """Insert (id, name) rows, leaving existing ids as they are; how many were new."""

    def list_accounts(self) -> list[dict]:
        """Every account ({id, name, createdAt}), by id."""

    def add_ticker(self, symbol: str, ticker_id: str) -> dict:
        """Insert one ticker ({id, symbol}). Conflict when the symbol or the id exists."""

    def import_tickers(self, rows: list, on_progress=None) -> int:
        """Insert (symbol, id or None) rows in one transaction, skipping identical ones; how many were new.

        Conflict, undoing them all, when a symbol exists under another id or an id under
        another symbol. `on_progress(n)` is called as rows are done.
        """

    def list_tickers(self) -> list[dict]:
        """Every ticker ({id, symbol, createdAt}), by symbol."""

    def register_accounts(self, rows: list) -> list:
        """Insert (id, name or None) rows in one transaction, in order, each seeing those before it.

        One outcome per row: Registered (created, or there already with that name or none
        given: nothing changes) or Taken (the id is there with another name).
        """

    def register_tickers(self, rows: list) -> list:
        """Insert (symbol, id or None) rows in one transaction, in order, each seeing those before it.

        One outcome per row: Registered (created, or the symbol there already with that id
        or none given: nothing changes) or Taken (the symbol or the id is another ticker's).
        """

    def page_accounts(
        self, limit: int, after: str | None = None, credentials: Credentials | None = None
    ) -> tuple[list[dict], bool]:
        """Up to `limit` accounts ({id, name, createdAt}) by id, past the id `after`, and whether more follow.

        With `credentials`, only while the key works (a bot's read of the catalog).
        """

    def page_tickers(
        self, limit: int, after: str | None = None, symbol: str | None = None, credentials: Credentials | None = None
    ) -> tuple[list[dict], bool]:
        """Up to `limit` tickers ({id, symbol, createdAt}) by symbol, past the symbol `after`, only `symbol`
        when given; and whether more follow. With `credentials`, only while the key works."""

    def get_account(self, account_id: str) -> dict | None:
        """The account ({id, name, createdAt, states}: how many states of it every bot has), or None."""

    def get_ticker(self, ticker_id: str) -> dict | None:
        """The ticker ({id, symbol, createdAt, states}: how many states of it every bot has), or None."""

    def delete_account(self, account_id: str) -> dict:
        """Delete the account and every bot's states of it (each delete in the change log); the account as
        it was, with `deletedStates`. NotFound."""

    def delete_ticker(self, ticker_id: str) -> dict:
        """Delete the ticker and every bot's states of it (each delete in the change log); the ticker as
        it was, with `deletedStates`. NotFound."""

    # States

    def write_states(
        self,
        credentials: Credentials,
        writes: list[StateWrite],
        merge: bool = False,
        max_state_bytes=None,
        idempotent: IdempotentWrite | None = None,
    ) -> list:
        """Write the items in order, each isolated from the others, in one transaction.

        Each item sees the rows the items before it wrote. With `merge`, a state is an RFC
        7396 merge patch applied to the stored state (or to {}); otherwise it replaces it.
        One outcome per item: the StateRow as stored, an ItemError (an unknown ticker is
        named before an unknown account; a state over `max_state_bytes` once merged) or a
        VersionConflict (its expected_version is not the row's: 0 for no row), which comes
        before the size. NotFound or StaleKey when the key no longer works: nothing is written.

        With `idempotent`, the write is never a lone statement, and in its transaction:
        RequestInProgress when another transaction holds the key, AnsweredBefore when an answer
        is kept for it (nothing is written either way); else idempotent.answer(outcomes) is kept
        with the rows, as the key's 200, for a day.
        """

    def find_answer(self, credentials: Credentials, key: str) -> StoredAnswer | None:
        """The answer kept for the bot's Idempotency-Key (for a day), or None, read with the check of the key."""

    def prune_answers(self, batch: int = 500, stop=None) -> int:
        """Remove the Idempotency-Key answers past their day, a short transaction per batch; how many went."""

    def count_answers(self, bot_id: str | None = None) -> int:
        """How many Idempotency-Key answers are kept, for one bot or all."""

    def read_state(self, credentials: Credentials, account_id: str, ticker_id: str) -> StateRow | None:
        """The bot's row for this account and ticker, or None, read with the check of the key."""

    def get_state(self, bot_id: str, account_id: str, ticker_id: str) -> StateRow | None:
        """The bot's row for this account and ticker, or None (no key: for the CLI)."""

    def list_states(
        self,
        bot_id: str | None,
        limit: int,
        account_id=None,
        ticker_id=None,
        updated_since=None,
        after=None,
        credentials: Credentials | None = None,
        max_bytes=DEFAULT_PAGE_BYTES,
    ) -> tuple[list[StateRow], bool]:
        """Up to `limit` of the bot's rows in (account, ticker) order, and whether more follow.

        Filters: account, ticker, and `updated_since` (a time in the stored form, inclusive).
        `after` is the (account, ticker) of the previous page's last row: keys never change,
        so paging neither skips nor repeats a row that exists throughout. The page also
        ends after the row that takes it past `max_bytes` (its states' bytes and
        PAGE_ROW_OVERHEAD per row), so it holds at least one row; None: no byte limit.
        With `credentials` (for the bot they name), only while the key works.
        """

    def delete_state(
        self, credentials: Credentials, account_id: str, ticker_id: str, expected_versions: list | None = None
    ):
        """Delete the bot's row for this account and ticker; with `expected_versions`, only at one of them.

        The deleted StateRow, None when there was no row, or a VersionConflict.
        """

    def count_states(self, bot_id: str | None = None) -> int:
        """How many state rows exist, for one bot or all."""

    # The change log

    def list_changes(
        self, credentials: Credentials, after: int, limit: int, account_id=None, ticker_id=None
    ) -> tuple[list[Change], int]:
        """Up to `limit` of the bot's changes with a seq past `after`, oldest first, and the seq to read after next.

        Reading from each answer's seq sees every change of the bot once, in commit order:
        a change is handed out only once no change with a lower seq can still commit. With
        an account or ticker filter at most FEED_SCAN entries are read per call, and the seq
        returned is where the reading stopped. ChangesGone when entries past `after` were pruned;
        ChangesAhead when `after` is past every seq handed out (a restored or moved database).
        """

    def state_history(
        self,
        bot_id: str | None,
        account_id: str,
        ticker_id: str,
        limit: int,
        before: int | None = None,
        credentials: Credentials | None = None,
    ) -> tuple[list[Change], int | None]:
        """The bot's row's kept entries, newest first, and the `before` of the next page (None: no more).

        With `credentials` (for the bot they name), only while the key works.

        The row is the one there now, else the one deleted last: its delete comes first,
        on the first page only. `before` keeps the upserts of lower versions.
        """

    def state_as_of(self, credentials: Credentials, account_id: str, ticker_id: str, at: str) -> StateRow | None:
        """The bot's row for this account and ticker as it was at `at` (the stored time form), or None.

        HistoryGone when `at` is older than the history kept.
        """

    def count_changes(self, bot_id: str | None = None) -> int:
        """How many change-log entries are kept, for one bot or all."""

    def prune_changes(self, batch: int = 100, stop=None) -> int:
        """Remove what `retention` no longer keeps, a short transaction per batch; how many entries went."""

    # Backups and transfers

    def backup(self, target: str) -> None:
        """Copy the database to the new file `target`, consistent while writers go on (StorageError on PostgreSQL)."""

    def restore(self, source: str, before_copy=None) -> list[str]:
        """Make the database's content that of the backup `source`; the migrations then applied.

        `before_copy()` is called once `source` is known to be a sound botstate database.
        StorageError when it is not one, and on PostgreSQL.
        """

    def export_records(self):
        """Every row of every table as (kind, record) (TRANSFER_KINDS), references first, from one snapshot."""

    def import_records(self, records, on_progress=None) -> None:
        """Upsert (kind, record) pairs in one transaction, each row then as its record says.

        Conflict when a record clashes with another row or names a bot, account or ticker
        that is neither before it nor in the database.
        """


def open_storage(settings) -> Storage:
    """The storage the app's settings select: PostgreSQL when DATABASE_URL is set, else SQLite."""
    if settings.get("DATABASE_URL"):
        from backends.postgres import PostgresStorage  # psycopg is imported only by those who use it

        storage = PostgresStorage(
            settings["DATABASE_URL"], busy_timeout_ms=settings["BUSY_TIMEOUT_MS"], pool_size=settings["THREADS"] + 2
        )
    else:
        storage = SQLiteStorage(
            settings["DATABASE"], busy_timeout_ms=settings["BUSY_TIMEOUT_MS"], synchronous=settings["SYNCHRONOUS"]
        )
    default = Retention()
    storage.retention = Retention(
        settings.get("HISTORY_DAYS", default.days), settings.get("HISTORY_VERSIONS", default.versions)
    )
    return storage


def shared_rate_counts(path) -> str:
    """The Flask-Limiter storage URI of rate-limit counts kept in the file `path`, which a server's workers share."""
    from backends.rate_counts import uri_of  # importing it makes its scheme known to the limits library

    return uri_of(path)
