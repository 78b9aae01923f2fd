"""The values storage takes and gives, and the errors it raises: shared by the interface and its backends."""

import dataclasses
import enum
from collections.abc import Callable

# Hex digits of a key's hash shown to tell keys apart (`bots keys`).
KEY_FINGERPRINT_LENGTH = 12
# A page of states is counted as its states' bytes and this many more per row (its
# ids, version and times as JSON); it ends past DEFAULT_PAGE_BYTES unless told otherwise.
PAGE_ROW_OVERHEAD = 256
DEFAULT_PAGE_BYTES = 4 * 1024 * 1024


class StorageError(Exception):
    """Base class of the errors the storage layer raises."""


class DatabaseBusy(StorageError):
    """The write lock could not be had within the busy timeout."""


class DatabaseUnavailable(StorageError):
    """The database file cannot be opened, read or written."""


class Conflict(StorageError):
    """A unique key (slug, id, symbol) is already taken."""


class NotFound(StorageError):
    """The named row does not exist."""


class StaleKey(StorageError):
    """The bot's key changed after the request authenticated with the old one."""


class ChangesGone(StorageError):
    """A change feed read from a seq older than what is kept: changes up to `pruned_seq` are gone."""

    def __init__(self, pruned_seq):
        super().__init__(f"changes up to seq {pruned_seq} are no longer kept")
        self.pruned_seq = pruned_seq


class ChangesAhead(StorageError):
    """A change feed read from past every seq handed out (`largest`): the database was restored or moved."""

    def __init__(self, largest):
        super().__init__(f"no change has a seq past {largest}")
        self.largest = largest


class HistoryGone(StorageError):
    """An as-of read of a moment older than what is kept: history starts at `kept_since`."""

    def __init__(self, kept_since):
        super().__init__(f"history before {kept_since} is no longer kept")
        self.kept_since = kept_since


class AnsweredBefore(StorageError):
    """A write whose Idempotency-Key was answered before: `answer` is that StoredAnswer, and nothing was written."""

    def __init__(self, answer):
        super().__init__("this Idempotency-Key was answered before")
        self.answer = answer


class RequestInProgress(StorageError):
    """A write whose Idempotency-Key another request holds now: nothing was written."""


class ItemError(enum.Enum):
    """Why one item of a bulk write failed; the value is the client-facing message."""

    TICKER_NOT_FOUND = "Ticker not found"
    ACCOUNT_NOT_FOUND = "Account not found"
    STATE_TOO_LARGE = "State exceeds {max_state_bytes} bytes"
    FAILED = "Failed to update state"

    @property
    def code(self):
        """The machine-readable code a per-item error carries beside its message."""
        return "INTERNAL_ERROR" if self is ItemError.FAILED else self.name


@dataclasses.dataclass(frozen=True)
class VersionConflict:
    """A write or delete whose expected version is not the stored one (0: no row)."""

    expected: object
    found: int
    code = "VERSION_CONFLICT"  # not a field: the per-item error's code


# What a bot key may do: a write key everything, a read key only GETs.
WRITE_SCOPE = "write"
READ_SCOPE = "read"
KEY_SCOPES = (WRITE_SCOPE, READ_SCOPE)


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A bot, the hash of the key a request proved it holds and that key's scope: what storage acts for a bot with.

    Only authentication makes one (auth.authenticate); every storage call that
    reads or writes a bot's states checks again that the key still works.
    """

    bot_id: str
    key_hash: str
    scope: str = WRITE_SCOPE


@dataclasses.dataclass(frozen=True)
class Registered:
    """An account or ticker of a bulk registration, as stored; `created` is False when it was there already."""

    record: dict
    created: bool


@dataclasses.dataclass(frozen=True)
class Taken:
    """An account or ticker of a bulk registration that another one's id or symbol already holds."""

    message: str
    code = "CONFLICT"  # not a field: the per-item error's code


# StateWrite and StateRow are made by the thousand per bulk write: a frozen dataclass
# sets each field through object.__setattr__, three times the cost of a plain one.
@dataclasses.dataclass(slots=True)
class StateWrite:
    """One state to write: canonical lowercase ids, the state (or merge patch) as JSON text,
    and the version the row must have (0: must not exist; None: any)."""

    account_id: str
    ticker_id: str
    state_json: str
    expected_version: int | None = None


@dataclasses.dataclass(slots=True)
class StateRow:
    """A stored state row; the state is the stored JSON text."""

    id: str
    bot_id: str
    account_id: str
    ticker_id: str
    state_json: str
    version: int
    created_at: str
    updated_at: str


@dataclasses.dataclass(slots=True)
class Change:
    """One entry of the change log: a row's upsert (with its full stored state) or its delete.

    `seq` orders the database's changes as they committed; `row_id` and `created_at`
    are the changed row's, so that the row can be told as it was then.
    """

    seq: int
    op: str
    account_id: str
    ticker_id: str
    version: int
    state_json: str | None
    at: str
    row_id: str
    created_at: str

    def as_row(self, bot_id):
        """The StateRow this upsert stored."""
        return StateRow(
            self.row_id,
            bot_id,
            self.account_id,
            self.ticker_id,
            self.state_json,
            self.version,
            self.created_at,
            self.at,
        )


@dataclasses.dataclass(frozen=True)
class IdempotentWrite:
    """A write sent with an Idempotency-Key: the key, a digest of the request (its method and
    body) and `answer(outcomes)`, the bytes of the answer to keep with it, made in the write's
    transaction."""

    key: str
    fingerprint: bytes
    answer: Callable[[list], bytes]


@dataclasses.dataclass(frozen=True)
class StoredAnswer:
    """The answer kept for an Idempotency-Key: the digest of the request it answered, its status and body."""

    fingerprint: bytes
    status: int
    body: bytes
