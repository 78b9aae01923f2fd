"""POST, PATCH, DELETE and GET in random order against an in-memory model of the rows.

The model maps (account, ticker) to what the server must hold: the state, its
version, and the id and timestamps the server gave the row. What each item comes to
is decided by backends.rules, the one place the rules of a write live (they are
tested against their own table in test_rules.py); the model checks that the server
applies them to what it stores, item after item, and answers them as the spec says. After every step
the whole list the server answers must equal the model, so a version that
skips, a merge that differs from RFC 7396, a write that leaks through a
version conflict or a delete that leaves a row behind all fail here.
"""

import json
import os
import re
import shutil
import tempfile

from hypothesis import Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from spec_data import ACCOUNT_0, ACCOUNT_1, ACCOUNT_2, RFC7396_EXAMPLES, TICKER_AAPL, TICKER_MSFT, TICKER_UNKNOWN

import jsoncodec
import keys
from app import create_app
from backends import rules
from backends.rules import merge_patch
from storage import ItemError, StateRow, StateWrite, VersionConflict

SLUG = "model-bot"
MAX_STATE_BYTES = 65536
ACCOUNTS = [ACCOUNT_0, ACCOUNT_1]  # registered
TICKERS = [TICKER_AAPL, TICKER_MSFT]  # registered
KEYS = sorted((account, ticker) for account in ACCOUNTS for ticker in TICKERS)
# Item keys: mostly registered ones, sometimes an unregistered ticker or account.
ITEM_ACCOUNTS = st.sampled_from(ACCOUNTS + ACCOUNTS + [ACCOUNT_2])
ITEM_TICKERS = st.sampled_from(TICKERS + TICKERS + [TICKER_UNKNOWN])
PATH_KEYS = st.tuples(st.sampled_from(ACCOUNTS + [ACCOUNT_2]), st.sampled_from(TICKERS + [TICKER_UNKNOWN]))
# Ids are case-insensitive: the server keeps them lowercase whatever case they are sent in.
CASES = st.sampled_from([str.lower, str.upper])

ROW_FIELDS = {"id", "botId", "userBrokerAccountId", "tickerId", "state", "version", "createdAt", "updatedAt"}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

# A few member names shared by states and patches, so patches hit existing members.
NAMES = st.sampled_from(["a", "b", "pos", "qty", "é", "日本", ""]) | st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=4
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.integers(min_value=-3, max_value=3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)
)
# null appears everywhere: in a patch object it removes the member, in a list it is a value.
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(NAMES, children, max_size=3),
    max_leaves=8,
)
OBJECTS = st.dictionaries(NAMES, VALUES, max_size=4)

# How an item's expectedVersion is chosen once the model's version is known.
VERSION_CHOICES = st.sampled_from(["none", "none", "right", "zero", "stale", "ahead", "huge"])
# How an If-Match / If-None-Match header is chosen once the model's version is known.
TAG_CHOICES = st.sampled_from(["none", "right", "stale", "ahead", "star"])


def canonical(value):
    """JSON text that tells true from 1 and 1 from 1.0 but ignores member order."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def test_merge_patch_follows_the_rfc_examples():
    """The rules' merge, which the model uses too, on RFC 7396 appendix A."""
    examples = [
        *RFC7396_EXAMPLES,
        # The appendix's examples with a target or patch that is not an object.
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ]
    for target, patch, expected in examples:
        assert merge_patch(target, patch) == expected, (target, patch)


class StateMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="botstate-stateful-")
        self.app = create_app(
            {
                "DATABASE": os.path.join(self.folder, "botstate.db"),
                "MAX_STATE_BYTES": MAX_STATE_BYTES,
                "LOG_LEVEL": "WARNING",
            }
        )
        self.storage = self.app.extensions["botstate.storage"]
        self.client = self.app.test_client()
        api_key = keys.generate_key()
        self.bot_id = self.storage.create_bot(SLUG, "Model bot", keys.hash_key(api_key))["id"]
        self.headers = {"x-api-key": api_key}
        for account in ACCOUNTS:
            self.storage.add_account(account, None)
        for index, ticker in enumerate(TICKERS):
            self.storage.add_ticker(f"T{index}", ticker)
        # (account, ticker) -> {"state", "version"}: what the server must hold.
        self.model = {}
        # (account, ticker) -> {"id", "createdAt", "updatedAt"}: what the server gave the row.
        self.meta = {}
        # Ids of deleted rows: a row created again is a new row.
        self.retired_ids = set()

    def teardown(self):
        self.storage.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # Helpers

    def url(self, account=None, ticker=None):
        base = f"/api/bots/{SLUG}/state"
        return base if account is None else f"{base}/{account}/{ticker}"

    def version_of(self, key):
        row = self.model.get(key)
        return 0 if row is None else row["version"]

    def check_row(self, row, key, expected):
        """A row the server answered is the model's row for `key`."""
        assert set(row) == ROW_FIELDS, row
        assert row["botId"] == self.bot_id
        assert (row["userBrokerAccountId"], row["tickerId"]) == key
        assert row["version"] == expected["version"], (key, row, expected)
        assert canonical(row["state"]) == canonical(expected["state"]), (key, row, expected)
        for name, value in self.meta[key].items():
            assert row[name] == value, (key, row, self.meta[key])

    def tag(self, choice, version):
        """The entity tag sent for `choice` when the stored version is `version` (0: none)."""
        return {
            "right": f'"{version}"',
            "stale": f'"{max(version - 1, 0)}"' if version > 1 else '"0"',
            "ahead": f'"{version + 1}"',
            "star": "*",
        }[choice]

    # Writes

    def write(self, method, items):
        """Send one POST or PATCH of `items` and check every result against the model."""
        body, expectations = [], []
        # The rules decide what each item comes to, as the server's backends use them: the
        # model checks that the server applies them to what it stores, item after item.
        stored = {
            key: StateRow(
                self.meta[key]["id"], self.bot_id, *key, jsoncodec.dumps(row["state"]), row["version"], "", ""
            )
            for key, row in self.model.items()
        }
        found = rules.Found(True, True, frozenset(ACCOUNTS), frozenset(TICKERS), stored, now="")
        decider = rules.Decider(self.bot_id, found, method == "PATCH", MAX_STATE_BYTES, new_ids=iter(str, None))
        for account, ticker, state, version_choice, case in items:
            key = (account, ticker)
            current = self.version_of(key)
            expected_version = {
                "none": None,
                "right": current,
                "zero": 0,
                "stale": max(current - 1, 0) if current > 0 else 1,
                "ahead": current + 1,
                "huge": 2**63 - 1,
            }[version_choice]
            item = {"accountId": case(account), "tickerId": case(ticker), "state": state}
            if expected_version is not None:
                item["expectedVersion"] = expected_version
            body.append(item)
            outcome = decider.decide(StateWrite(account, ticker, jsoncodec.dumps(state), expected_version))
            if isinstance(outcome, VersionConflict):
                message = f"Version conflict: expected {outcome.expected}, found {outcome.found}"
                expectations.append(("error", (message, {"code": outcome.code, "currentVersion": outcome.found})))
            elif isinstance(outcome, ItemError):
                message = outcome.value.format(max_state_bytes=MAX_STATE_BYTES)
                expectations.append(("error", (message, {"code": outcome.code})))
            else:
                decider.accept(outcome)
                new_state = json.loads(outcome.state_json)
                self.model[key] = {"state": new_state, "version": outcome.version}
                expectations.append(("success", (key, new_state, outcome.version)))

        response = self.client.open(self.url(), method=method, json={"states": body}, headers=self.headers)
        assert response.status_code == 200, response.get_json()
        answer = response.get_json()
        failed = sum(1 for outcome, _ in expectations if outcome == "error")
        assert answer["success"] is True
        assert answer["summary"] == {"total": len(body), "succeeded": len(body) - failed, "failed": failed}
        assert len(answer["results"]) == len(body)
        for index, (item, (outcome, detail), result) in enumerate(
            zip(body, expectations, answer["results"], strict=False)
        ):
            assert result["accountId"] == item["accountId"]
            assert result["tickerId"] == item["tickerId"]
            assert result["status"] == outcome, (item, result)
            assert result["index"] == index
            event(f"{method} {outcome}: {detail[0].split(':')[0] if outcome == 'error' else 'written'}")
            if outcome == "error":
                message, codes = detail
                assert result == {
                    "status": "error",
                    "error": message,
                    "accountId": item["accountId"],
                    "tickerId": item["tickerId"],
                    "index": index,
                    **codes,
                }
                continue
            self.learn(method, result["data"], *detail)

    def learn(self, method, row, key, state, version):
        """Check a row just written and record the id and timestamps the server gave it."""
        assert set(row) == ROW_FIELDS, row
        assert row["botId"] == self.bot_id
        assert (row["userBrokerAccountId"], row["tickerId"]) == key
        assert row["version"] == version, (method, key, row)
        assert canonical(row["state"]) == canonical(state), (method, key, row, state)
        assert TIMESTAMP.fullmatch(row["createdAt"]) and TIMESTAMP.fullmatch(row["updatedAt"]), row
        assert row["createdAt"] <= row["updatedAt"]
        old = self.meta.get(key)
        if version == 1:
            assert old is None
            assert row["id"] not in self.retired_ids
            assert row["createdAt"] == row["updatedAt"]
        else:
            assert row["id"] == old["id"]
            assert row["createdAt"] == old["createdAt"]
            assert row["updatedAt"] >= old["updatedAt"]
        self.meta[key] = {name: row[name] for name in ("id", "createdAt", "updatedAt")}

    @rule(
        items=st.lists(st.tuples(ITEM_ACCOUNTS, ITEM_TICKERS, OBJECTS, VERSION_CHOICES, CASES), min_size=1, max_size=3)
    )
    def post(self, items):
        self.write("POST", items)

    @rule(
        items=st.lists(st.tuples(ITEM_ACCOUNTS, ITEM_TICKERS, OBJECTS, VERSION_CHOICES, CASES), min_size=1, max_size=3)
    )
    def patch(self, items):
        self.write("PATCH", items)

    @rule(
        method=st.sampled_from(["POST", "PATCH"]),
        key=st.sampled_from(KEYS),
        member=st.sampled_from(["pad1", "pad2", "pad3"]),
        size=st.sampled_from([30_000, 70_000]),
        version_choice=VERSION_CHOICES,
    )
    def write_big(self, method, key, member, size, version_choice):
        """A state near the size limit: one that does not fit fails alone and writes nothing."""
        self.write(method, [(key[0], key[1], {member: "é" * (size // 2)}, version_choice, str.lower)])

    # Reads

    @rule(key=PATH_KEYS, choice=TAG_CHOICES, case=CASES)
    def get_one(self, key, choice, case):
        headers = dict(self.headers)
        row = self.model.get(key)
        if choice != "none":
            headers["If-None-Match"] = self.tag(choice, self.version_of(key))
        response = self.client.get(self.url(case(key[0]), case(key[1])), headers=headers)
        if row is None:
            assert response.status_code == 404
            assert response.get_json() == {"error": "State not found", "code": "NOT_FOUND"}
            return
        assert response.headers["ETag"] == f'"{row["version"]}"'
        if choice in ("right", "star"):
            assert response.status_code == 304
            assert response.data == b""
        else:
            assert response.status_code == 200, response.get_json()
            self.check_row(response.get_json()["data"], key, row)

    @rule(
        account=st.none() | st.sampled_from(ACCOUNTS + [ACCOUNT_2]),
        ticker=st.none() | st.sampled_from(TICKERS + [TICKER_UNKNOWN]),
        limit=st.integers(min_value=1, max_value=5),
        case=CASES,
    )
    def list_filtered(self, account, ticker, limit, case):
        """Page through a filtered list; the pages together are the matching model rows, in order."""
        query = {"limit": limit}
        if account is not None:
            query["accountId"] = case(account)
        if ticker is not None:
            query["tickerId"] = case(ticker)
        expected = [key for key in sorted(self.model) if account in (None, key[0]) and ticker in (None, key[1])]
        seen = []
        for _ in range(len(expected) // limit + 2):
            response = self.client.get(self.url(), query_string=query, headers=self.headers)
            assert response.status_code == 200, response.get_json()
            page = response.get_json()
            assert len(page["data"]) <= limit
            for row in page["data"]:
                key = (row["userBrokerAccountId"], row["tickerId"])
                assert key in self.model, row
                self.check_row(row, key, self.model[key])
                seen.append(key)
            if page["nextCursor"] is None:
                break
            assert len(page["data"]) == limit
            query["cursor"] = page["nextCursor"]
        else:
            raise AssertionError(f"paging did not end: {query}")
        assert seen == expected

    # Deletes

    @rule(key=PATH_KEYS, choice=TAG_CHOICES, case=CASES)
    def delete(self, key, choice, case):
        headers = dict(self.headers)
        row = self.model.get(key)
        version = self.version_of(key)
        if choice != "none":
            headers["If-Match"] = self.tag(choice, version)
        response = self.client.delete(self.url(case(key[0]), case(key[1])), headers=headers)
        if row is None:
            # Without a row the answer is 404 whatever If-Match says (RFC 9110 13.2.1).
            assert response.status_code == 404, response.get_json()
            assert response.get_json() == {"error": "State not found", "code": "NOT_FOUND"}
            return
        if choice in ("stale", "ahead"):
            sent = headers["If-Match"].strip('"')
            assert response.status_code == 412, response.get_json()
            assert response.get_json() == {
                "error": f"Version conflict: expected {sent}, found {version}",
                "code": "PRECONDITION_FAILED",
            }
            assert response.headers["ETag"] == f'"{version}"'
            return
        assert response.status_code == 200, response.get_json()
        self.check_row(response.get_json()["data"], key, row)
        del self.model[key]
        self.retired_ids.add(self.meta.pop(key)["id"])

    # After every step

    @invariant()
    def server_agrees_with_model(self):
        response = self.client.get(self.url(), query_string={"limit": 1000}, headers=self.headers)
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        assert page["nextCursor"] is None
        listed = [(row["userBrokerAccountId"], row["tickerId"]) for row in page["data"]]
        assert listed == sorted(self.model)
        for key, row in zip(listed, page["data"], strict=False):
            self.check_row(row, key, self.model[key])
        assert self.storage.count_states(self.bot_id) == len(self.model)


# No explain phase: it traces every line of Flask and SQLite while shrinking, which
# turns a 10-second shrink of a failure into Hypothesis's 5-minute give-up.
StateMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    phases=[phase for phase in Phase if phase is not Phase.explain],
)
TestStateMachine = StateMachine.TestCase
