"""A backend's two write paths agree: the lone item's one statement and the planned write (read, rules, bulk write).

The same writes go to two databases of the backend, one with the one-statement path turned
off. Every answer and every stored row must come out the same, byte for byte, but for what
each path makes anew: row ids (compared by the order they appear in) and times.
"""

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spec_data import ACCOUNT_0, ACCOUNT_1, ACCOUNT_2, TICKER_AAPL, TICKER_MSFT, TICKER_UNKNOWN

import jsoncodec
import keys
from app import create_app
from storage import Credentials, StateRow, StateWrite, StorageError

MAX_STATE_BYTES = 60
WRONG_KEY = "0" * 64
STEPS = st.lists(
    st.fixed_dictionaries(
        {
            "merge": st.booleans(),
            "account": st.sampled_from([ACCOUNT_0, ACCOUNT_1, ACCOUNT_2]),
            "ticker": st.sampled_from([TICKER_AAPL, TICKER_MSFT, TICKER_UNKNOWN]),
            "state": st.dictionaries(
                st.sampled_from(["a", "b", "é"]),
                st.none() | st.integers(-5, 5) | st.text(max_size=30) | st.just({"n": None, "m": [1.5]}),
                max_size=3,
            ),
            "expected": st.sampled_from(["none", "none", "right", "zero", "stale", "ahead"]),
            "limit": st.sampled_from([None, MAX_STATE_BYTES]),
        }
    ),
    min_size=1,
    max_size=12,
)


@pytest.fixture
def twin_storages(new_database):
    """Two storages of the backend with the spec's accounts and tickers; the second never takes the lone path."""
    storages = []
    for _ in range(2):
        app = create_app(dict(new_database()))
        storage = app.extensions["botstate.storage"]
        storage.import_accounts([(ACCOUNT_0, None), (ACCOUNT_1, None)])
        storage.import_tickers([("AAPL", TICKER_AAPL), ("MSFT", TICKER_MSFT)])
        storages.append(storage)
    storages[1]._write_lone = lambda *args: None
    yield storages
    for storage in storages:
        storage.close()


def expected_version(choice, current):
    return {"none": None, "right": current, "zero": 0, "stale": max(current - 1, 0), "ahead": current + 1}[choice]


class Normal:
    """Row ids by the order they first appear in, so two databases' rows compare."""

    def __init__(self):
        self.ids = {}

    def row(self, row):
        assert row.created_at <= row.updated_at
        number = self.ids.setdefault(row.id, len(self.ids))
        return (number, row.account_id, row.ticker_id, row.state_json, row.version)

    def outcome(self, outcome):
        return self.row(outcome) if isinstance(outcome, StateRow) else outcome


def attempt(storage, credentials, step, current):
    """One lone write of `step`, its state as writebody makes it: its outcome, or the error's type."""
    write = StateWrite(
        step["account"], step["ticker"], jsoncodec.dumps(step["state"]), expected_version(step["expected"], current)
    )
    try:
        [outcome] = storage.write_states(credentials, [write], merge=step["merge"], max_state_bytes=step["limit"])
    except StorageError as error:
        return type(error)
    return outcome


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS, wrong=st.lists(st.booleans(), min_size=12, max_size=12))
def test_the_one_statement_path_and_the_planned_path_agree(twin_storages, steps, wrong):
    key_hash = keys.hash_key(keys.generate_key())
    slug = f"twin-{uuid.uuid4().hex[:12]}"
    credentials = [Credentials(s.create_bot(slug, slug, key_hash)["id"], key_hash) for s in twin_storages]
    normals = [Normal(), Normal()]
    for step, wrong_key in zip(steps, wrong, strict=False):
        current = twin_storages[0].get_state(credentials[0].bot_id, step["account"], step["ticker"])
        version = 0 if current is None else current.version
        answers = []
        for storage, own, normal in zip(twin_storages, credentials, normals, strict=True):
            used = Credentials(own.bot_id, WRONG_KEY) if wrong_key else own
            answers.append(normal.outcome(attempt(storage, used, step, version)))
        assert answers[0] == answers[1], step
        stored = [
            [normal.row(row) for row in storage.list_states(own.bot_id, 100)[0]]
            for storage, own, normal in zip(twin_storages, credentials, normals, strict=True)
        ]
        assert stored[0] == stored[1], step


@pytest.mark.parametrize("items", (1, 2), ids=("one statement", "planned"))
def test_neither_path_dates_a_row_before_its_last_write(twin_storages, items):
    # Regression: SQLite's one statement set the time now even when the row's time was later
    # (an imported row, a clock stepped back); the planned path kept the later time.
    storage = twin_storages[0]
    key_hash = keys.hash_key(keys.generate_key())
    credentials = Credentials(storage.create_bot("dated", "dated", key_hash)["id"], key_hash)
    writes = [StateWrite(ACCOUNT_0, TICKER_AAPL, "{}"), StateWrite(ACCOUNT_1, TICKER_MSFT, "{}")][:items]
    storage.write_states(credentials, writes)
    record = next(r for kind, r in storage.export_records() if kind == "state" and r["accountId"] == ACCOUNT_0)
    storage.import_records([("state", {**record, "updatedAt": "2999-01-01T00:00:00.000Z"})])
    written = storage.write_states(credentials, writes)
    assert (written[0].version, written[0].updated_at) == (2, "2999-01-01T00:00:00.000Z")
    assert storage.get_state(credentials.bot_id, ACCOUNT_0, TICKER_AAPL) == written[0]
