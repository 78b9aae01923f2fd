"""`botstate states export` and `import`: data moves between SQLite and PostgreSQL without a byte changing."""

import contextlib
import json
import os

import pytest
import requests
from conftest import BotstateCliRunner, run_botstate, start_server, stop_server, told_the_database
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, TICKER_MSFT

from app import create_app

BOTSTATE = ["-m", "botstate"]

# States that a careless copy would change: key order, unicode, escapes, big and tiny numbers.
STATES = [
    {"z": 1, "a": {"y": [3, 2, 1], "b": None}, "m": '日本語 é \u0000 "quoted" \\ /'},
    {"big": 123456789012345678901234567890, "tiny": 1e-300, "neg": -0.0, "f": 1.5, "e": 2.5e20},
    {"nested": [[[{"deep": True}]], []], "empty": {}, "emoji": "📈"},
]


# Three requests of (account, ticker, index in STATES): four rows, one of them at version 2.
WRITES = [
    [(ACCOUNT_0, TICKER_AAPL, 0), (ACCOUNT_0, TICKER_MSFT, 1)],
    [(ACCOUNT_1, TICKER_AAPL, 2), (ACCOUNT_1, TICKER_MSFT, 0)],
    [(ACCOUNT_0, TICKER_AAPL, 2)],
]
STORED = {
    (ACCOUNT_0, TICKER_AAPL): 2,
    (ACCOUNT_0, TICKER_MSFT): 1,
    (ACCOUNT_1, TICKER_AAPL): 2,
    (ACCOUNT_1, TICKER_MSFT): 0,
}


def flask(database, *args):
    """Run the real `botstate ARGS` on a database; the finished process, which must succeed."""
    completed = run_botstate([*BOTSTATE, *args], **database)
    assert completed.returncode == 0, completed.stderr
    return completed


# The rows a test starts from are made through the app's CLI in this process: a real `flask`
# process each would cost these tests most of their time. What a test checks runs as the real `flask`.


@contextlib.contextmanager
def cli_of(database):
    """The CLI runner of an app on `database`, in this process."""
    app = create_app(dict(database))
    try:
        yield BotstateCliRunner(app)
    finally:
        app.extensions["botstate.storage"].close()


def in_process(runner, *args):
    """Run `botstate ARGS` in this process, on the test app's database; the result, which must succeed."""
    result = runner.invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result


def populate(database):
    """Two bots (one mid-rotation, so with two keys; the other with a read key too), accounts, tickers and states
    written over HTTP."""
    with cli_of(database) as runner:
        bot = json.loads(in_process(runner, "bots", "create", "alpha", "--name", "Alpha Ünïcode", "--json").stdout)
        in_process(runner, "bots", "create", "beta", "--json")
        in_process(runner, "bots", "add-key", "beta", "--scope", "read", "--json")
        in_process(runner, "accounts", "add", "--id", ACCOUNT_0, "--name", 'Alice, "the" trader')
        in_process(runner, "accounts", "add", "--id", ACCOUNT_1)
        in_process(runner, "tickers", "add", "AAPL", "--id", TICKER_AAPL)
        in_process(runner, "tickers", "add", "MSFT", "--id", TICKER_MSFT)
    process, url, _ = start_server(database)
    try:
        headers = {"x-api-key": bot["apiKey"]}
        for request in WRITES:
            items = [{"accountId": a, "tickerId": t, "state": STATES[n]} for a, t, n in request]
            answer = requests.post(f"{url}/api/bots/alpha/state", json={"states": items}, headers=headers, timeout=30)
            assert answer.status_code == 200 and answer.json()["success"], answer.text
    finally:
        stop_server(process)  # stores the key's last use
    with cli_of(database) as runner:
        rotated = json.loads(in_process(runner, "bots", "rotate-key", "alpha", "--grace", "3600", "--json").stdout)
    return bot["apiKey"], rotated["apiKey"]


def exported(database, path):
    """`botstate states export -o PATH`: the file's bytes."""
    flask(database, "states", "export", "-o", str(path))
    return path.read_bytes()


def read_all(url, api_key):
    """Every state of bot alpha as the API gives it, raw."""
    answer = requests.get(f"{url}/api/bots/alpha/state", headers={"x-api-key": api_key}, timeout=30)
    assert answer.status_code == 200
    return answer.content


def test_data_moves_from_sqlite_to_either_backend_and_back_unchanged(tmp_path, new_database, backend):
    source = {"DATABASE": str(tmp_path / "source.sqlite")}
    old_key, new_key = populate(source)
    original = exported(source, tmp_path / "source.jsonl")
    kinds = [json.loads(line)["kind"] for line in original.splitlines()]
    logged = sum(len(request) for request in WRITES)  # the change log: an upsert per item written
    assert kinds == ["bot"] * 2 + ["key"] * 4 + ["account"] * 2 + ["ticker"] * 2 + ["state"] * 4 + ["change"] * logged

    target = new_database()
    flask(target, "init-db")
    imported = json.loads(flask(target, "states", "import", str(tmp_path / "source.jsonl"), "--json").stdout)
    assert sorted(json.loads(line).get("scope") for line in original.splitlines() if b'"kind":"key"' in line) == [
        "read",
        "write",
        "write",
        "write",
    ]
    counts = {"bot": 2, "key": 4, "account": 2, "ticker": 2, "state": 4, "change": logged}
    assert imported == {"imported": counts, "total": sum(counts.values())}
    assert exported(target, tmp_path / "target.jsonl") == original  # every row, every byte

    flask(target, "states", "import", str(tmp_path / "target.jsonl"))  # again: changes nothing
    assert exported(target, tmp_path / "again.jsonl") == original

    back = {"DATABASE": str(tmp_path / "back.sqlite")}
    flask(back, "init-db")
    flask(back, "states", "import", str(tmp_path / "target.jsonl"))
    assert exported(back, tmp_path / "back.jsonl") == original

    # Both keys work on the target, and its API answers exactly as the source's did.
    answers = {}
    for name, database in (("source", source), ("target", target)):
        process, url, _ = start_server(database)
        try:
            answers[name] = (read_all(url, old_key), read_all(url, new_key))
        finally:
            stop_server(process)
    assert answers["target"] == answers["source"]
    rows = json.loads(answers["target"][0])["data"]
    assert [row["state"] for row in rows] == [STATES[STORED[key]] for key in sorted(STORED)]


def test_an_export_file_is_private_and_stdout_gets_the_same_lines(tmp_path, database, runner):
    in_process(runner, "bots", "create", "alpha")
    path = tmp_path / "out.jsonl"
    completed = flask(database, "states", "export", "-o", str(path))
    assert os.stat(path).st_mode & 0o777 == 0o600  # it holds key hashes
    assert "Exported 2 rows (1 bot, 1 key, 0 accounts, 0 tickers, 0 states, 0 changes)" in completed.stderr
    assert flask(database, "states", "export").stdout.encode() == path.read_bytes()
    summary = json.loads(flask(database, "states", "export", "-o", str(path), "--json").stdout)
    assert summary == {
        "exported": {"bot": 1, "key": 1, "account": 0, "ticker": 0, "state": 0, "change": 0},
        "total": 2,
        "file": str(path),
    }
    refused = run_botstate([*BOTSTATE, "states", "export", "--json"], **database)
    assert refused.returncode == 2 and "--json needs --output FILE" in refused.stderr


def nested(depth):
    """A state object `depth` levels deep (the state itself is level 1)."""
    state = {}
    for _ in range(depth - 1):
        state = {"n": state}
    return state


BOT = {"kind": "bot", "id": ACCOUNT_0, "slug": "alpha", "name": "Alpha", "createdAt": "2026-01-02T03:04:05.678Z"}

CHANGE = {
    "kind": "change",
    "botId": ACCOUNT_0,
    "accountId": ACCOUNT_1,
    "tickerId": TICKER_AAPL,
    "rowId": TICKER_MSFT,
    "op": "upsert",
    "version": 1,
    "state": {"a": 1},
    "createdAt": "2026-01-02T03:04:05.678Z",
    "at": "2026-01-02T03:04:05.678Z",
}

BAD_LINES = [
    ("not json", b"{nope", "line 2: not JSON"),
    ("not an object", b"[1]", "line 2: not a JSON object"),
    (
        "unknown kind",
        json.dumps({**BOT, "kind": "robot"}).encode(),
        "line 2: kind must be one of bot, key, account, ticker, state, change, got 'robot'",
    ),
    (
        "change of no op",
        json.dumps({**CHANGE, "op": "merge"}).encode(),
        "line 2: op must be one of upsert, delete, got 'merge'",
    ),
    (
        "delete with a state",
        json.dumps({**CHANGE, "op": "delete"}).encode(),
        "line 2: a change has a state if it is an upsert, and none if it is a delete",
    ),
    (
        "upsert without a state",
        json.dumps({**CHANGE, "state": None}).encode(),
        "line 2: a change has a state if it is an upsert, and none if it is a delete",
    ),
    (
        "missing field",
        json.dumps({k: v for k, v in BOT.items() if k != "name"}).encode(),
        "line 2: a bot record has the fields id, slug, name, createdAt; missing name",
    ),
    (
        "unknown field",
        json.dumps({**BOT, "colour": "red"}).encode(),
        "line 2: a bot record has the fields id, slug, name, createdAt; unknown colour",
    ),
    ("bad uuid", json.dumps({**BOT, "id": "42"}).encode(), "line 2: id '42' is not valid"),
    ("bad time", json.dumps({**BOT, "createdAt": "yesterday"}).encode(), "line 2: createdAt 'yesterday' is not valid"),
    ("bad slug", json.dumps({**BOT, "slug": "a b"}).encode(), "line 2: slug 'a b' is not valid"),
    (
        "bad version",
        json.dumps(
            {
                "kind": "state",
                "id": ACCOUNT_0,
                "botId": ACCOUNT_0,
                "accountId": ACCOUNT_0,
                "tickerId": TICKER_AAPL,
                "state": {},
                "version": 0,
                "createdAt": BOT["createdAt"],
                "updatedAt": BOT["createdAt"],
            }
        ).encode(),
        "line 2: version must be an integer from 1 to 9007199254740992, got 0",
    ),
    (
        "no such day",
        json.dumps({**BOT, "createdAt": "2026-02-30T10:00:00.000Z"}).encode(),
        "line 2: createdAt '2026-02-30T10:00:00.000Z' is not valid",
    ),
    (
        "hour 24",
        json.dumps({**BOT, "createdAt": "2026-01-01T24:00:00.000Z"}).encode(),
        "line 2: createdAt '2026-01-01T24:00:00.000Z' is not valid",
    ),
    (
        "control character in a name",
        json.dumps({**BOT, "name": "a\u0000b"}).encode(),
        "line 2: name 'a\\x00b' is not valid",
    ),
    ("slug too long", json.dumps({**BOT, "slug": "s" * 101}).encode(), f"line 2: slug '{'s' * 80}' is not valid"),
    (
        "state not an object",
        json.dumps(
            {
                "kind": "state",
                "id": ACCOUNT_0,
                "botId": ACCOUNT_0,
                "accountId": ACCOUNT_0,
                "tickerId": TICKER_AAPL,
                "state": [1],
                "version": 1,
                "createdAt": BOT["createdAt"],
                "updatedAt": BOT["createdAt"],
            }
        ).encode(),
        "line 2: state must be a JSON object",
    ),
    (
        "state too deep",
        json.dumps(
            {
                "kind": "state",
                "id": ACCOUNT_0,
                "botId": ACCOUNT_0,
                "accountId": ACCOUNT_0,
                "tickerId": TICKER_AAPL,
                "state": nested(300),
                "version": 1,
                "createdAt": BOT["createdAt"],
                "updatedAt": BOT["createdAt"],
            }
        ).encode(),
        "line 2: state is nested more than 254 levels deep",
    ),
    (
        "missing references",
        json.dumps(
            {
                "kind": "state",
                "id": ACCOUNT_0,
                "botId": ACCOUNT_0,
                "accountId": ACCOUNT_1,
                "tickerId": TICKER_AAPL,
                "state": {},
                "version": 1,
                "createdAt": BOT["createdAt"],
                "updatedAt": BOT["createdAt"],
            }
        ).encode(),
        "state "
        + ACCOUNT_0
        + " names a bot, account or ticker that is neither before it in the file nor in the database",
    ),
    (
        "a key of no scope botstate has",
        json.dumps(
            {
                "kind": "key",
                "botId": BOT["id"],
                "keyHash": "a" * 64,
                "createdAt": BOT["createdAt"],
                "expiresAt": None,
                "lastUsedAt": None,
                "scope": "admin",
            }
        ).encode(),
        "line 2: scope 'admin' is not valid",
    ),
    (
        "slug taken by another bot",
        json.dumps({**BOT, "id": ACCOUNT_1}).encode(),
        "bot alpha clashes with another bot in the database (same slug or symbol, another id)",
    ),
]


def test_a_key_record_of_an_earlier_version_without_a_scope_is_a_write_key(tmp_path, storage, runner):
    path = tmp_path / "old.jsonl"
    key = {"kind": "key", "botId": BOT["id"], "keyHash": "b" * 64, "createdAt": BOT["createdAt"]}
    path.write_text(json.dumps(BOT) + "\n" + json.dumps({**key, "expiresAt": None, "lastUsedAt": None}) + "\n")
    in_process(runner, "states", "import", str(path))
    assert [(k["fingerprint"], k["scope"]) for k in storage.list_bot_keys(BOT["slug"])] == [("b" * 12, "write")]


@pytest.mark.parametrize("line,error", [row[1:] for row in BAD_LINES], ids=[row[0] for row in BAD_LINES])
def test_a_bad_file_is_refused_with_its_reason_and_imports_nothing(tmp_path, database, storage, runner, line, error):
    good, path = tmp_path / "good.jsonl", tmp_path / "in.jsonl"
    good.write_bytes(json.dumps(BOT).encode() + b"\n")
    path.write_bytes(json.dumps(BOT).encode() + b"\n" + line + b"\n")
    # The refused import is the real `flask`; the rows before it and the exports around it need not be.
    in_process(runner, "states", "import", str(good))
    in_process(runner, "accounts", "add", "--id", ACCOUNT_1, "--name", "before")
    before = in_process(runner, "states", "export").stdout_bytes
    completed = run_botstate([*BOTSTATE, "states", "import", str(path)], **database)
    assert completed.returncode == 1
    expected = f"Error: {path} {error}" if error.startswith("line") else f"Error: {error}"
    stderr = told_the_database(completed.stderr, storage.location)
    assert stderr.strip().startswith(expected), completed.stderr
    assert len(stderr.strip().splitlines()) == 1, completed.stderr
    assert in_process(runner, "states", "export").stdout_bytes == before


def test_a_rows_history_moves_with_it_deletes_and_new_lives_too(tmp_path, new_database, backend):
    source = {"DATABASE": str(tmp_path / "source.sqlite")}
    key, _ = populate(source)
    process, url, _ = start_server(source)
    try:
        row = f"{url}/api/bots/alpha/state/{ACCOUNT_0}/{TICKER_AAPL}"
        assert requests.delete(row, headers={"x-api-key": key}, timeout=30).status_code == 200
        body = {"states": [{"accountId": ACCOUNT_0, "tickerId": TICKER_AAPL, "state": {"again": True}}]}
        assert requests.post(f"{url}/api/bots/alpha/state", json=body, headers={"x-api-key": key}, timeout=30).ok
        before = history_and_feed(url, key)
    finally:
        stop_server(process)
    flask(source, "states", "export", "-o", str(tmp_path / "moved.jsonl"))
    target = new_database()
    flask(target, "init-db")
    flask(target, "states", "import", str(tmp_path / "moved.jsonl"))
    flask(target, "states", "import", str(tmp_path / "moved.jsonl"))  # again: adds nothing
    process, url, _ = start_server(target)
    try:
        assert history_and_feed(url, key) == before
    finally:
        stop_server(process)


def history_and_feed(url, key):
    """Bot alpha's feed (without seqs, which a move renumbers) and the history of its first row."""
    headers = {"x-api-key": key}
    feed = requests.get(f"{url}/api/bots/alpha/changes", params={"limit": 1000}, headers=headers, timeout=30).json()
    history = requests.get(
        f"{url}/api/bots/alpha/state/{ACCOUNT_0}/{TICKER_AAPL}/history", headers=headers, timeout=30
    ).json()
    strip = [{k: v for k, v in change.items() if k != "seq"} for change in feed["data"]]
    assert [c["op"] for c in strip].count("delete") == 1
    return strip, [{k: v for k, v in change.items() if k != "seq"} for change in history["data"]]
