"""BOTSTATE_RATE_LIMIT: a per-bot budget counted after authentication, answered with a JSON 429."""

import json
import time
import types

import pytest
import requests
from conftest import BACKEND_INDEPENDENT, start_server, stop_server
from spec_data import ACCOUNT_0, TICKER_AAPL, item

import ratelimit
from keys import generate_key, hash_key

ROW_PATH = f"/api/bots/b/state/{ACCOUNT_0}/{TICKER_AAPL}"
EXCEEDED = {"error": "Rate limit exceeded: 3 per 1 minute", "code": "TOO_MANY_REQUESTS"}


@pytest.fixture(autouse=True)
def no_rate_limit_in_environment(monkeypatch):
    monkeypatch.delenv("BOTSTATE_RATE_LIMIT", raising=False)


def send(client, bot, method, path="/api/bots/b/state", key=None, states=None):
    """One request of `bot`'s (with its own key unless `key` is given)."""
    headers = {"x-api-key": bot["apiKey"] if key is None else key}
    body = None if states is None else {"states": states}
    return client.open(path.replace("/b/", f"/{bot['slug']}/"), method=method, json=body, headers=headers)


# Each bot endpoint, as (method, path, states): the ones that write send one item.
ENDPOINTS = (
    ("POST", "/api/bots/b/state", [item(state={"v": "refused"})]),
    ("PATCH", "/api/bots/b/state", [item(state={"v": "refused"})]),
    ("GET", "/api/bots/b/state", None),
    ("GET", ROW_PATH, None),
    ("DELETE", ROW_PATH, None),
)


def stored_states(storage):
    """The stored state rows of bot 'b', as (state JSON, version)."""
    rows, _ = storage.list_states(storage.get_bot("b")["id"], 10)
    return [(row.state_json, row.version) for row in rows]


def assert_rate_limited(response, body=EXCEEDED):
    """A JSON 429 with Retry-After in whole seconds, at least 1, and no limiter headers."""
    assert (response.status_code, response.get_json()) == (429, body)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert not [name for name, _ in response.headers if name.lower().startswith("x-ratelimit")]


@pytest.mark.parametrize("method,path,states", ENDPOINTS, ids=("POST", "PATCH", "GET list", "GET one", "DELETE"))
def test_past_the_limit_every_bot_endpoint_is_429_and_changes_nothing(configured, method, path, states):
    client, bot, storage = configured(RATE_LIMIT="3/minute")
    for n in (1, 2, 3):
        assert send(client, bot, "POST", states=[item(state={"v": n})]).status_code == 200
    assert_rate_limited(send(client, bot, method, path, states=states))
    assert stored_states(storage) == [('{"v":3}', 3)]


def test_all_endpoints_share_one_budget_per_bot(configured):
    client, bot, storage = configured(RATE_LIMIT="3/minute")
    assert send(client, bot, "POST", states=[item()]).status_code == 200
    assert send(client, bot, "GET", ROW_PATH).status_code == 200
    assert send(client, bot, "GET").status_code == 200
    assert_rate_limited(send(client, bot, "DELETE", ROW_PATH))
    assert stored_states(storage) == [('{"position":"long"}', 1)]


@pytest.mark.parametrize("remembered", (False, True), ids=("bot not yet read", "bot remembered"))
def test_requests_without_the_bots_key_do_not_use_up_its_budget(configured, remembered):
    client, bot, storage = configured(RATE_LIMIT="3/minute")
    if remembered:
        assert send(client, bot, "GET").status_code == 200
    for _ in range(20):
        assert send(client, bot, "POST", key=generate_key(), states=[item()]).status_code == 403
        assert send(client, bot, "GET", ROW_PATH, key="").status_code == 401
    allowed = 2 if remembered else 3
    for _ in range(allowed):
        assert send(client, bot, "POST", states=[item()]).status_code == 200
    assert_rate_limited(send(client, bot, "POST", states=[item()]))


def test_requests_for_unknown_bots_and_bad_slugs_count_for_nobody(configured):
    client, bot, _ = configured(RATE_LIMIT="3/minute")
    for _ in range(10):
        assert client.get("/api/bots/nobody/state", headers={"x-api-key": bot["apiKey"]}).status_code == 404
        assert client.get("/api/bots/b!/state", headers={"x-api-key": bot["apiKey"]}).status_code == 400
    for _ in range(3):
        assert send(client, bot, "GET").status_code == 200


def test_each_bot_has_its_own_budget(configured):
    client, bot, storage = configured(RATE_LIMIT="3/minute")
    other = {"slug": "c", "apiKey": generate_key()}
    storage.create_bot("c", "c", hash_key(other["apiKey"]))
    for _ in range(3):
        assert send(client, bot, "GET").status_code == 200
    assert_rate_limited(send(client, bot, "GET"))
    for _ in range(3):
        assert send(client, other, "POST", states=[item()]).status_code == 200
    assert_rate_limited(send(client, other, "GET"))


def test_several_rates_each_apply_and_the_429_names_the_one_exceeded(configured):
    client, bot, _ = configured(RATE_LIMIT="2/minute;100/hour")
    for _ in range(2):
        assert send(client, bot, "GET").status_code == 200
    assert_rate_limited(
        send(client, bot, "GET"), {"error": "Rate limit exceeded: 2 per 1 minute", "code": "TOO_MANY_REQUESTS"}
    )


def test_health_check_and_document_are_not_limited(configured):
    client, bot, _ = configured(RATE_LIMIT="1/minute")
    assert send(client, bot, "GET").status_code == 200
    assert send(client, bot, "GET").status_code == 429
    for _ in range(5):
        assert client.get("/healthz").status_code == 200
        assert client.get("/openapi.json").status_code == 200


def test_no_limit_by_default_and_nothing_of_the_limiter_is_installed(configured):
    client, bot, storage = configured()
    app = client.application
    assert app.config["RATE_LIMIT"] == ""
    assert "limiter" not in app.extensions and ratelimit.EXTENSION not in app.extensions
    hooks = [hook for hooks in app.before_request_funcs.values() for hook in hooks]
    assert len(hooks) == 1, "only the request timer"
    for n in range(50):
        response = send(client, bot, "POST", states=[item(state={"v": n})])
        assert response.status_code == 200
        assert "Retry-After" not in response.headers
        assert not [name for name, _ in response.headers if name.lower().startswith("x-ratelimit")]
    assert stored_states(storage) == [('{"v":49}', 50)]


def test_retry_after_is_at_least_one_second(app):
    # A window that ends while the 429 is being made must not say "retry after 0 seconds".
    ended = types.SimpleNamespace(window=types.SimpleNamespace(reset_time=time.time() - 5), limit="3 per 1 minute")
    with app.app_context():
        response = ratelimit._too_many_requests(ended)
    assert response.headers["Retry-After"] == "1"


@BACKEND_INDEPENDENT
def test_the_document_lists_429_with_retry_after_on_every_bot_and_admin_operation(client):
    document = client.get("/openapi.json").get_json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            answer = operation["responses"].get("429")
            if path.startswith(("/api/bots/", "/api/admin/")):
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
                assert "Retry-After" in answer["headers"], (path, method)
            else:
                assert answer is None, (path, method)


def test_a_server_answers_429_over_http_past_the_limit(database, storage, bot, registered):
    process, url, log_path = start_server(database, RATE_LIMIT="3/minute")
    try:
        headers = {"x-api-key": bot["apiKey"]}
        write = {"states": [item(state={"v": 1})]}
        answers = [
            requests.post(f"{url}/api/bots/my-bot/state", json=write, headers=headers, timeout=10) for _ in range(3)
        ]
        refused = requests.post(
            f"{url}/api/bots/my-bot/state", json={"states": [item(state={"v": 2})]}, headers=headers, timeout=10
        )
        read = requests.get(f"{url}/api/bots/my-bot/state/{ACCOUNT_0}/{TICKER_AAPL}", headers=headers, timeout=10)
    finally:
        stop_server(process)
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["Content-Type"] == "application/json"
    assert json.loads(refused.text) == EXCEEDED
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert read.status_code == 429
    assert "POST /api/bots/my-bot/state 429" in log_path.read_text()
    rows, _ = storage.list_states(bot["id"], 10)
    assert [(row.state_json, row.version) for row in rows] == [('{"v":1}', 3)]


def test_a_key_rotated_away_gets_403_not_429(configured):
    # The bot is remembered with its old key hash; past the limit the old key
    # must still learn that it is no longer the bot's.
    client, bot, storage = configured(RATE_LIMIT="3/minute")
    for _ in range(3):
        assert send(client, bot, "GET", ROW_PATH).status_code == 404
    new_key = generate_key()
    storage.replace_bot_key("b", hash_key(new_key))
    old_key_answer = send(client, bot, "GET", ROW_PATH)
    assert (old_key_answer.status_code, old_key_answer.get_json()) == (403, {"message": "Invalid API key for this bot"})
    assert_rate_limited(send(client, bot, "GET", ROW_PATH, key=new_key))
