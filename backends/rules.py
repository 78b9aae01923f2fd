"""The rules of a state write, in one place: what each item of a request comes to, given what is stored."""

import dataclasses

import jsoncodec
from records import ItemError, NotFound, StaleKey, StateRow, VersionConflict


@dataclasses.dataclass(frozen=True)
class Found:
    """What a write's one read found: the bot and key, the registered ids among those the
    items name, the stored rows of the items' keys, and the database's time now.

    `rows` maps (account, ticker) to a StateRow; its state is None unless the write merges.
    """

    bot_exists: bool
    key_works: bool
    accounts: frozenset
    tickers: frozenset
    rows: dict
    now: str


def verify_key(bot_exists, key_works):
    """Raise NotFound when the bot is gone, StaleKey when the key no longer works."""
    if not bot_exists:
        raise NotFound("the bot was deleted")
    if not key_works:
        raise StaleKey("the bot's key was replaced, revoked or has expired")


def merge_patch(target, patch):
    """RFC 7396: `patch` applied to `target`; a member keeps its place, a new one goes last."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def merged_json(stored_json, patch_json):
    """The JSON text of `patch_json` merged into `stored_json` (None: no stored state)."""
    target = {} if stored_json is None else jsoncodec.loads(stored_json)
    return jsoncodec.dumps(merge_patch(target, jsoncodec.loads(patch_json)))


class Decider:
    """Decides the items of one write in order, each seeing the rows the items before it wrote.

    decide() gives an item's outcome: the StateRow it writes, an ItemError or a
    VersionConflict. accept() makes a written row what the next items see;
    a caller that could not store it does not call it, and the row is as before.
    """

    def __init__(self, bot_id, found, merge, max_state_bytes, new_ids):
        self.bot_id = bot_id
        self.found = found
        self.merge = merge
        self.max_state_bytes = max_state_bytes
        self.rows = dict(found.rows)
        self._new_ids = iter(new_ids)

    def decide(self, write):
        """The outcome of `write` against the rows as they stand."""
        if write.ticker_id not in self.found.tickers:
            return ItemError.TICKER_NOT_FOUND
        if write.account_id not in self.found.accounts:
            return ItemError.ACCOUNT_NOT_FOUND
        current = self.rows.get((write.account_id, write.ticker_id))
        version = 0 if current is None else current.version
        if write.expected_version is not None and write.expected_version != version:
            return VersionConflict(write.expected_version, version)
        state = write.state_json
        if self.merge:
            state = merged_json(None if current is None else current.state_json, state)
        if self.max_state_bytes is not None and len(state.encode()) > self.max_state_bytes:
            return ItemError.STATE_TOO_LARGE
        now = self.found.now
        if current is None:
            return StateRow(next(self._new_ids), self.bot_id, write.account_id, write.ticker_id, state, 1, now, now)
        # A row is never dated before its last write, should the clock step back.
        updated_at = max(now, current.updated_at)
        return StateRow(
            current.id,
            self.bot_id,
            write.account_id,
            write.ticker_id,
            state,
            version + 1,
            current.created_at,
            updated_at,
        )

    def accept(self, row):
        """Make `row` the stored row of its key for the items that follow."""
        self.rows[row.account_id, row.ticker_id] = row


def plan(decider, writes):
    """Every item's outcome, each written row accepted; and the last row written per key."""
    outcomes, last = [], {}
    for write in writes:
        outcome = decider.decide(write)
        if isinstance(outcome, StateRow):
            decider.accept(outcome)
            last[outcome.account_id, outcome.ticker_id] = outcome
        outcomes.append(outcome)
    return outcomes, list(last.values())
