"""The admin CLI and the admin API are one implementation: the same operations, run through each on a database
of its own (the CLI's in this process, the API's over HTTP on a real server), give the same answers and the same
refusals, word for word, step by step."""

import json

import requests
from conftest import start_server, stop_server
from spec_data import ACCOUNT_0, TICKER_AAPL, TICKER_MSFT

from operations import admin_keys

OTHER = "00000000-0000-4000-8000-000000000000"
# What differs between two databases that are told the same: made-up ids and keys, times, fingerprints.
VOLATILE = {"id", "apiKey", "createdAt", "fingerprint", "lastUsedAt", "expiresAt", "oldKeysExpireAt"}
FIXED_IDS = {ACCOUNT_0, TICKER_AAPL, TICKER_MSFT, OTHER}


def bare(value):
    """`value` with every volatile field's value (that is not one the steps gave) replaced by what kind it is."""
    if isinstance(value, (list, tuple)):
        return [bare(item) for item in value]
    if isinstance(value, dict):
        return {
            key: ("<set>" if key in VOLATILE and item is not None and item not in FIXED_IDS else bare(item))
            for key, item in value.items()
        }
    return value


def registered(answer):
    """What the CLI's one-item add says of the bulk answer: the item's record, or its refusal."""
    [result] = answer["results"]
    return ("ok", result["data"]) if result["status"] == "success" else ("refused", result["error"])


def data(answer):
    """The `data` of an answer."""
    return ("ok", answer["data"])


# Each step: a name, the CLI's arguments, the API request (method, path, body) and how the API's answer reads as
# the CLI's; `{read}` is the fingerprint of the read key the step "add a read key" made on that side.
STEPS = [
    (
        "create a bot",
        ["bots", "create", "alpha", "--name", "Alpha"],
        ("POST", "/bots", {"slug": "alpha", "name": "Alpha"}),
        data,
    ),
    ("create it again", ["bots", "create", "alpha"], ("POST", "/bots", {"slug": "alpha"}), None),
    ("an invalid slug", ["bots", "create", "bad slug"], ("POST", "/bots", {"slug": "bad slug"}), None),
    (
        "an invalid name",
        ["bots", "create", "beta", "--name", "a\x07b"],
        ("POST", "/bots", {"slug": "beta", "name": "a\x07b"}),
        None,
    ),
    ("create another", ["bots", "create", "beta"], ("POST", "/bots", {"slug": "beta"}), data),
    ("list bots", ["bots", "list"], ("GET", "/bots", None), data),
    (
        "rotate with grace",
        ["bots", "rotate-key", "alpha", "--grace", "60"],
        ("POST", "/bots/alpha/rotate-key", {"graceSeconds": 60}),
        data,
    ),
    ("rotate an unknown bot", ["bots", "rotate-key", "nope"], ("POST", "/bots/nope/rotate-key", {}), None),
    (
        "add a read key",
        ["bots", "add-key", "alpha", "--scope", "read"],
        ("POST", "/bots/alpha/keys", {"scope": "read"}),
        data,
    ),
    ("add a key to an unknown bot", ["bots", "add-key", "nope"], ("POST", "/bots/nope/keys", {}), None),
    ("list its keys", ["bots", "keys", "alpha"], ("GET", "/bots/alpha/keys", None), data),
    (
        "revoke the read key",
        ["bots", "revoke-key", "alpha", "--key", "{read}"],
        ("POST", "/bots/alpha/revoke-key", {"fingerprint": "{read}"}),
        data,
    ),
    (
        "revoke it again",
        ["bots", "revoke-key", "alpha", "--key", "{read}"],
        ("POST", "/bots/alpha/revoke-key", {"fingerprint": "{read}"}),
        None,
    ),
    (
        "a fingerprint that is none",
        ["bots", "revoke-key", "alpha", "--key", "XYZ"],
        ("POST", "/bots/alpha/revoke-key", {"fingerprint": "XYZ"}),
        None,
    ),
    (
        "one key and all",
        ["bots", "revoke-key", "alpha", "--all", "--key", "{read}"],
        ("POST", "/bots/alpha/revoke-key", {"all": True, "fingerprint": "{read}"}),
        None,
    ),
    ("end the grace period", ["bots", "revoke-key", "alpha"], ("POST", "/bots/alpha/revoke-key", {}), data),
    ("keys of an unknown bot", ["bots", "keys", "nope"], ("GET", "/bots/nope/keys", None), None),
    (
        "add an account",
        ["accounts", "add", "--id", ACCOUNT_0, "--name", "alice"],
        ("POST", "/accounts", {"accounts": [{"id": ACCOUNT_0, "name": "alice"}]}),
        registered,
    ),
    (
        "add the account again",
        ["accounts", "add", "--id", ACCOUNT_0, "--name", "alice"],
        ("POST", "/accounts", {"accounts": [{"id": ACCOUNT_0, "name": "alice"}]}),
        registered,
    ),
    (
        "another name for it",
        ["accounts", "add", "--id", ACCOUNT_0, "--name", "bob"],
        ("POST", "/accounts", {"accounts": [{"id": ACCOUNT_0, "name": "bob"}]}),
        registered,
    ),
    ("list accounts", ["accounts", "list"], ("GET", "/accounts", None), data),
    (
        "add a ticker",
        ["tickers", "add", "AAPL", "--id", TICKER_AAPL],
        ("POST", "/tickers", {"tickers": [{"symbol": "AAPL", "id": TICKER_AAPL}]}),
        registered,
    ),
    (
        "add it by symbol again",
        ["tickers", "add", "AAPL"],
        ("POST", "/tickers", {"tickers": [{"symbol": "AAPL"}]}),
        registered,
    ),
    (
        "its symbol, another id",
        ["tickers", "add", "AAPL", "--id", OTHER],
        ("POST", "/tickers", {"tickers": [{"symbol": "AAPL", "id": OTHER}]}),
        registered,
    ),
    (
        "its id, another symbol",
        ["tickers", "add", "APPLE", "--id", TICKER_AAPL],
        ("POST", "/tickers", {"tickers": [{"symbol": "APPLE", "id": TICKER_AAPL}]}),
        registered,
    ),
    (
        "add another",
        ["tickers", "add", "MSFT", "--id", TICKER_MSFT],
        ("POST", "/tickers", {"tickers": [{"symbol": "MSFT", "id": TICKER_MSFT}]}),
        registered,
    ),
    ("list tickers", ["tickers", "list"], ("GET", "/tickers", None), data),
    ("delete a ticker", ["tickers", "delete", TICKER_MSFT, "--yes"], ("DELETE", f"/tickers/{TICKER_MSFT}", None), data),
    (
        "delete the ticker again",
        ["tickers", "delete", TICKER_MSFT, "--yes"],
        ("DELETE", f"/tickers/{TICKER_MSFT}", None),
        None,
    ),
    ("delete an account", ["accounts", "delete", ACCOUNT_0, "--yes"], ("DELETE", f"/accounts/{ACCOUNT_0}", None), data),
    (
        "delete the account again",
        ["accounts", "delete", ACCOUNT_0, "--yes"],
        ("DELETE", f"/accounts/{ACCOUNT_0}", None),
        None,
    ),
    ("lock a bot out", ["bots", "revoke-key", "beta", "--all"], ("POST", "/bots/beta/revoke-key", {"all": True}), data),
    ("delete a bot", ["bots", "delete", "alpha", "--yes"], ("DELETE", "/bots/alpha", None), data),
    ("delete the bot again", ["bots", "delete", "alpha", "--yes"], ("DELETE", "/bots/alpha", None), None),
    ("list bots at the end", ["bots", "list"], ("GET", "/bots", None), data),
]


# The steps refused, by both alike; the others succeed.
REFUSED = {
    "create it again",
    "an invalid slug",
    "an invalid name",
    "rotate an unknown bot",
    "add a key to an unknown bot",
    "revoke it again",
    "a fingerprint that is none",
    "one key and all",
    "keys of an unknown bot",
    "another name for it",
    "its symbol, another id",
    "its id, another symbol",
    "delete the ticker again",
    "delete the account again",
    "delete the bot again",
}


def through_the_cli(runner, args):
    """("ok", the --json answer) or ("refused", the one error line's message) of `botstate ARGS --json`."""
    result = runner.invoke(args=[*args, "--json"])
    if result.exit_code == 0:
        return "ok", json.loads(result.stdout)
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ") and result.stdout == "", result.output
    return "refused", line.removeprefix("Error: ")


def through_the_api(url, admin_key, request, reads_as):
    """The API's answer to `request`, read as the CLI's: ("ok", ...) for a 2xx, ("refused", message) else."""
    method, path, body = request
    answer = requests.request(
        method, f"{url}/api/admin{path}", json=body, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
    )
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        return "refused", answer.json()["error"]
    return reads_as(answer.json())


def fill(value, read):
    """`value` (arguments, a body) with `{read}` replaced by the fingerprint of the read key."""
    if isinstance(value, (list, tuple)):
        return [fill(item, read) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, read) for key, item in value.items()}
    return value.replace("{read}", read) if isinstance(value, str) else value


def named(answer, read):
    """`answer` with the read key's fingerprint written `{read}`, as the steps write it."""
    return json.loads(json.dumps(answer).replace(read, "{read}")) if read else answer


def test_the_cli_and_the_api_answer_each_operation_alike(runner, new_database):
    database = new_database()
    process, url, _ = start_server(database)
    try:
        from app import create_app

        api_app = create_app(dict(database))  # for its admin key only
        admin_key = admin_keys.create_admin_key(api_app.extensions["botstate.storage"], "parity")["adminKey"]
        api_app.extensions["botstate.storage"].close()
        read = {"cli": "", "api": ""}
        for name, args, request, reads_as in STEPS:
            by_cli = through_the_cli(runner, fill(args, read["cli"]))
            by_api = through_the_api(url, admin_key, fill(request, read["api"]), reads_as or data)
            if name == "add a read key":
                read = {"cli": by_cli[1]["fingerprint"], "api": by_api[1]["fingerprint"]}
            assert bare(named(by_cli, read["cli"])) == bare(named(by_api, read["api"])), name
            assert by_cli[0] == ("refused" if name in REFUSED else "ok"), (name, by_cli)
    finally:
        stop_server(process)


def test_the_steps_are_named_once():
    names = [name for name, *_ in STEPS]
    assert len(set(names)) == len(names)
    assert set(names) > REFUSED
