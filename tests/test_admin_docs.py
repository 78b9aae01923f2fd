"""The admin API's page (docs/admin-api.md) against the server: its curl examples run in order, on both backends,
and it names every admin route."""

import json
import os
import re
import shutil
import subprocess

import pytest
from conftest import ROOT

from operations import admin_keys

PAGE = ROOT / "docs" / "admin-api.md"
CURL_EXAMPLES = re.compile(r"<!-- curl-examples -->(.*?)<!-- /curl-examples -->", re.S)
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
ACCOUNT = "550e8400-e29b-41d4-a716-446655440000"
AAPL = "222e4567-e89b-12d3-a456-426614174002"


def json_values(text):
    """Each JSON value printed one after another (a block of two curls prints two)."""
    decoder, values, position = json.JSONDecoder(), [], 0
    while position < len(text.rstrip()):
        value, position = decoder.raw_decode(text, position)
        values.append(value)
        while position < len(text) and text[position].isspace():
            position += 1
    return values


def test_the_page_names_every_admin_route(app):
    text = PAGE.read_text()
    named = 0
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/admin"):
            path = re.sub(r"<(\w+)>", lambda name: ":" + ("id" if name[1].endswith("_id") else name[1]), rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert f"`{method} {path}" in text, f"{method} {path}"
                named += 1
    assert named


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_pages_curl_examples_work_in_order(live_server, storage):
    admin_key = admin_keys.create_admin_key(storage, "platform")["adminKey"]
    env = dict(os.environ, ADMIN_KEY=admin_key)
    answers = []
    for block in BASH_BLOCK.findall(CURL_EXAMPLES.search(PAGE.read_text()).group(1)):
        result = subprocess.run(
            ["bash", "-e", "-c", block.replace("http://127.0.0.1:8080", live_server.url)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        answers.append(json_values(result.stdout))
        if len(answers) == 1:
            env["BOT_KEY"] = answers[0][0]["data"]["apiKey"]
        if len(answers) == 7:
            env["READ_KEY"] = answers[6][0]["data"]["apiKey"]
            env["READ_FINGERPRINT"] = answers[6][0]["data"]["fingerprint"]
    created, accounts, tickers, listed, resolved, written, read_key, reads, key_work, deleted, anonymous = answers

    assert created[0]["data"]["slug"] == "price-bot" and created[0]["data"]["apiKey"].startswith("bsk_")
    [account_results] = [answer["results"] for answer in accounts]
    assert [(r["status"], r.get("created")) for r in account_results] == [
        ("success", True),
        ("success", False),
        ("success", True),
    ]
    [ticker_answer] = tickers
    assert ticker_answer["summary"] == {"total": 3, "succeeded": 2, "failed": 1}
    assert ticker_answer["results"][2] == {
        "status": "error",
        "index": 2,
        "error": f"Ticker 'AAPL' already exists with id {AAPL}",
        "code": "CONFLICT",
    }
    assert [t["symbol"] for t in listed[0]["data"]] == ["AAPL"] and listed[0]["nextCursor"]
    assert [t["id"] for t in resolved[0]["data"]] == [AAPL]
    assert written[0]["summary"] == {"total": 1, "succeeded": 1, "failed": 0}
    assert read_key[0]["data"]["scope"] == "read"
    listing, refused = reads
    assert [row["state"] for row in listing["data"]] == [{"position": "long"}]
    assert refused == {"message": "This API key is read-only"}
    keys_listed, revoked = key_work
    assert sorted(k["scope"] for k in keys_listed["data"]) == ["read", "write"]
    assert revoked == {"data": {"slug": "price-bot", "revoked": 1}}
    assert deleted[0]["data"]["id"] == ACCOUNT and deleted[0]["data"]["deletedStates"] == 1
    assert anonymous == [{"error": "Admin key required", "code": "UNAUTHORIZED"}]
    assert storage.count_states() == 0
    assert [key["scope"] for key in storage.list_bot_keys("price-bot")] == ["write"]
