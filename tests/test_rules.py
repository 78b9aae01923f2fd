"""The rules of a write (backends.rules), one row per rule: what an item comes to, given what is stored."""

import itertools
import json
import uuid

import pytest
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, TICKER_MSFT, TICKER_UNKNOWN

from backends import rules
from backends.states import new_ids
from storage import ItemError, NotFound, StaleKey, StateRow, StateWrite, VersionConflict

BOT = "b0000000-0000-4000-8000-000000000000"
NOW = "2026-12-01T10:00:00.000Z"
EARLIER = "2026-12-01T09:00:00.000Z"
LATER = "2026-12-01T11:00:00.000Z"
STORED = StateRow("row-1", BOT, ACCOUNT_0, TICKER_AAPL, '{"keep":1,"drop":2}', 3, EARLIER, EARLIER)


def found(*rows):
    """What a write's read finds: ACCOUNT_0 and both tickers registered, `rows` stored."""
    return rules.Found(
        True,
        True,
        frozenset({ACCOUNT_0}),
        frozenset({TICKER_AAPL, TICKER_MSFT}),
        {(row.account_id, row.ticker_id): row for row in rows},
        NOW,
    )


def decide(writes, *rows, merge=False, max_state_bytes=None):
    """Every item's outcome, and the last row written per key."""
    decider = rules.Decider(BOT, found(*rows), merge, max_state_bytes, (f"new-{n}" for n in itertools.count(1)))
    return rules.plan(decider, writes)


def write(state="{}", expected=None, account=ACCOUNT_0, ticker=TICKER_AAPL):
    return StateWrite(account, ticker, state, expected)


# (name, writes, stored rows, options, the outcome of the last item)
RULES = (
    (
        "an unknown ticker is named before an unknown account",
        [write(account=ACCOUNT_1, ticker=TICKER_UNKNOWN)],
        (),
        {},
        ItemError.TICKER_NOT_FOUND,
    ),
    ("an unknown account", [write(account=ACCOUNT_1)], (), {}, ItemError.ACCOUNT_NOT_FOUND),
    ("expected a version, no row", [write(expected=1)], (), {}, VersionConflict(1, 0)),
    ("expected no row, one is stored", [write(expected=0)], (STORED,), {}, VersionConflict(0, 3)),
    ("expected another version", [write(expected=2)], (STORED,), {}, VersionConflict(2, 3)),
    (
        "a version conflict comes before the size",
        [write('{"a":"xxxxxxxxxx"}', expected=9)],
        (STORED,),
        {"max_state_bytes": 5},
        VersionConflict(9, 3),
    ),
    (
        "too large, counted in UTF-8 bytes",
        [write(json.dumps({"a": "é" * 5}, ensure_ascii=False))],
        (),
        {"max_state_bytes": 18},
        ItemError.STATE_TOO_LARGE,
    ),
    (
        "at the limit exactly",
        [write(json.dumps({"a": "é" * 5}, ensure_ascii=False))],
        (),
        {"max_state_bytes": 19},
        StateRow("new-1", BOT, ACCOUNT_0, TICKER_AAPL, '{"a": "ééééé"}', 1, NOW, NOW),
    ),
    (
        "a merge is sized once merged",
        [write('{"more":1}')],
        (STORED,),
        {"merge": True, "max_state_bytes": 25},
        ItemError.STATE_TOO_LARGE,
    ),
    (
        "a new row: version 1, a new id, created and updated now",
        [write('{"v":1}', expected=0)],
        (),
        {},
        StateRow("new-1", BOT, ACCOUNT_0, TICKER_AAPL, '{"v":1}', 1, NOW, NOW),
    ),
    (
        "a replacement keeps the id and creation time, dates the update",
        [write('{"v":2}', expected=3)],
        (STORED,),
        {},
        StateRow("row-1", BOT, ACCOUNT_0, TICKER_AAPL, '{"v":2}', 4, EARLIER, NOW),
    ),
    (
        "a merge applies RFC 7396 to the stored state",
        [write('{"drop":null,"add":[1]}')],
        (STORED,),
        {"merge": True},
        StateRow("row-1", BOT, ACCOUNT_0, TICKER_AAPL, '{"keep":1,"add":[1]}', 4, EARLIER, NOW),
    ),
    (
        "a merge into no row applies to {}",
        [write('{"a":{"b":null,"c":1}}')],
        (),
        {"merge": True},
        StateRow("new-1", BOT, ACCOUNT_0, TICKER_AAPL, '{"a":{"c":1}}', 1, NOW, NOW),
    ),
    (
        "a row is never dated before its last write",
        [write()],
        (StateRow("row-1", BOT, ACCOUNT_0, TICKER_AAPL, "{}", 1, EARLIER, LATER),),
        {},
        StateRow("row-1", BOT, ACCOUNT_0, TICKER_AAPL, "{}", 2, EARLIER, LATER),
    ),
    (
        "an item sees what the one before it wrote",
        [write('{"v":1}'), write('{"v":2}', expected=1)],
        (),
        {},
        StateRow("new-1", BOT, ACCOUNT_0, TICKER_AAPL, '{"v":2}', 2, NOW, NOW),
    ),
    (
        "an item refused leaves the row as it was for the next",
        [write('{"big":"xxxxxxxxxxxxxxxxxxxx"}'), write(expected=3)],
        (STORED,),
        {"max_state_bytes": 25},
        StateRow("row-1", BOT, ACCOUNT_0, TICKER_AAPL, "{}", 4, EARLIER, NOW),
    ),
    (
        "a merge sees the merge before it",
        [write('{"a":1}'), write('{"b":2}')],
        (),
        {"merge": True},
        StateRow("new-1", BOT, ACCOUNT_0, TICKER_AAPL, '{"a":1,"b":2}', 2, NOW, NOW),
    ),
)


@pytest.mark.parametrize("writes,rows,options,outcome", [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_each_rule_of_a_write(writes, rows, options, outcome):
    outcomes, written = decide(writes, *rows, **options)
    assert outcomes[-1] == outcome
    # Each row names one key: what gets stored is its last row written, nothing when none was.
    assert written == [row for row in outcomes if isinstance(row, StateRow)][-1:]


def test_only_the_last_row_of_each_key_is_stored_and_every_item_gets_its_own():
    writes = [write('{"v":1}'), write('{"v":1}', ticker=TICKER_MSFT), write('{"v":2}')]
    outcomes, written = decide(writes)
    assert [(row.state_json, row.version) for row in outcomes] == [('{"v":1}', 1), ('{"v":1}', 1), ('{"v":2}', 2)]
    assert outcomes[0].id == outcomes[2].id != outcomes[1].id
    assert written == [outcomes[2], outcomes[1]]


def test_a_row_not_accepted_is_not_seen_by_the_next_item():
    # When storing an item failed, the items after it see the row as it was.
    decider = rules.Decider(BOT, found(STORED), False, None, iter(["new-1"]))
    first = decider.decide(write('{"v":1}'))
    assert first.version == 4
    assert decider.decide(write(expected=3)).version == 4  # first was never accepted


@pytest.mark.parametrize(
    "bot_exists,key_works,error",
    ((False, False, NotFound), (False, True, NotFound), (True, False, StaleKey), (True, True, None)),
)
def test_verify_key(bot_exists, key_works, error):
    if error is None:
        rules.verify_key(bot_exists, key_works)
    else:
        with pytest.raises(error):
            rules.verify_key(bot_exists, key_works)


def test_new_row_ids_are_distinct_version_4_uuids_as_uuid4_writes_them():
    ids = new_ids(500)
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
