"""The write endpoint and the app around it, through the Flask test client: answers, bad JSON, limits, logs."""

import json
import shutil

import pytest
from conftest import BACKEND_INDEPENDENT, holding_write_lock, settings_of
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, TICKER_MSFT, item

from app import create_app
from version import VERSION


def post(client, bot, body, **headers):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(f"/api/bots/{bot['slug']}/state", data=data, headers={"x-api-key": bot["apiKey"], **headers})


def nested(depth):
    """A state object nested `depth` levels deep (the state itself is level 1)."""
    state = {}
    for _ in range(depth - 1):
        state = {"n": state}
    return state


@pytest.mark.parametrize(
    "raw",
    (
        b"",
        b"{",
        b'{"states": [}',
        b'{"states": NaN}',
        b'{"states": [{"accountId": "x", "tickerId": "y", "state": {"v": Infinity}}]}',
        b'{"states": [{"accountId": "x", "tickerId": "y", "state": {"v": -Infinity}}]}',
        b'{"states": [], "v": 1e999}',
        b'{"states": [], "v": -1e-400}',
        b'{"v": "\\ud800"}',
        b'{"v": "\\udc00\\ud800"}',
        b'{"v": "\xff\xfe"}',
        b"\xef\xbb\xbf{}",
        b'{"v": ' + b"9" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        '{"states": []}'.encode("utf-16"),
        b"states=1",
    ),
)
def test_hostile_json_is_refused_and_changes_nothing(client, bot, registered, storage, raw):
    response = post(client, bot, raw)
    assert response.status_code == 400
    assert response.get_json() == {"error": "Invalid JSON in request body", "code": "BAD_REQUEST"}
    assert storage.count_states() == 0


def test_an_escaped_surrogate_pair_is_one_valid_character(client, bot, registered, storage):
    response = post(
        client,
        bot,
        b'{"states": [{"accountId": "%s", "tickerId": "%s", "state": {"e": "\\ud83d\\ude00"}}]}'
        % (ACCOUNT_0.encode(), TICKER_AAPL.encode()),
    )
    assert response.get_json()["results"][0]["data"]["state"] == {"e": "\U0001f600"}


def test_validation_errors_change_nothing(client, bot, registered, storage):
    response = post(client, bot, {"states": [item(), item(account="bad")]})
    assert response.status_code == 400
    assert storage.count_states() == 0


@pytest.mark.parametrize("depth,accepted", ((100, True), (101, False), (400, False)))
def test_state_nesting_limit_is_validated(client, bot, registered, storage, depth, accepted):
    response = post(client, bot, {"states": [item(ACCOUNT_1, TICKER_MSFT), item(state=nested(depth))]})
    if accepted:
        assert response.get_json()["summary"]["succeeded"] == 2
    else:
        assert response.status_code == 400
        assert response.get_json() == {
            "error": "states[1].state is nested more than 100 levels deep",
            "code": "BAD_REQUEST",
        }
        assert storage.count_states() == 0


def test_state_size_is_measured_as_stored_utf8_json(configured):
    client, bot, _ = configured(MAX_STATE_BYTES=20)
    # {"k":"ééééééé"} is 12 + 7*2 = 26 bytes stored, 19 characters.
    fits = post(client, bot, {"states": [item(state={"k": "é" * 4})]}).get_json()
    too_big = post(client, bot, {"states": [item(state={"k": "é" * 7})]}).get_json()
    assert fits["results"][0]["status"] == "success"
    assert too_big["results"][0]["error"] == "State exceeds 20 bytes"


def test_too_many_states_uses_the_configured_limit(configured):
    client, bot, _ = configured(MAX_STATES=2)
    response = post(client, bot, {"states": [item()] * 3})
    assert response.status_code == 400
    assert response.get_json() == {"error": "states array cannot contain more than 2 items", "code": "BAD_REQUEST"}


def test_body_over_the_limit_is_413_json(configured):
    client, bot, _ = configured(MAX_BODY_BYTES=2048)
    response = post(client, bot, {"states": [item(state={"x": "y" * 3000})]})
    assert response.status_code == 413
    assert response.get_json() == {"error": "Request body exceeds 2048 bytes", "code": "PAYLOAD_TOO_LARGE"}


def test_response_keeps_state_key_order_and_unicode(client, bot, registered):
    state = {"z": 1, "a": {"y": [3, 2, 1], "b": None}, "m": "日本語 é"}
    response = post(client, bot, {"states": [item(state=state)]})
    raw = response.get_data(as_text=True)
    assert '"state":{"z":1,"a":{"y":[3,2,1],"b":null},"m":"日本語 é"}' in raw


def test_unexpected_error_is_the_spec_500_with_a_logged_traceback(
    client, bot, registered, storage, monkeypatch, caplog
):
    def explode(*args, **kwargs):
        raise RuntimeError("disk gremlin")

    caplog.set_level("ERROR", logger="botstate")
    monkeypatch.setattr(storage, "write_states", explode)
    response = post(client, bot, {"states": [item()]})
    assert response.status_code == 500
    assert response.get_json() == {"error": "Internal server error", "code": "INTERNAL_SERVER_ERROR"}
    assert "disk gremlin" not in response.get_data(as_text=True)
    assert any(record.exc_info and "disk gremlin" in str(record.exc_info[1]) for record in caplog.records)


def test_database_locked_past_the_timeout_is_503_with_retry_after(configured):
    client, bot, storage = configured(BUSY_TIMEOUT_MS=100)
    with holding_write_lock(settings_of(storage)):
        response = post(client, bot, {"states": [item()]})
    after = post(client, bot, {"states": [item()]})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json() == {"error": "Database is busy, retry later", "code": "SERVICE_UNAVAILABLE"}
    assert after.status_code == 200


def test_healthz_reports_a_database_that_cannot_be_opened(tmp_path):
    folder = tmp_path / "data"
    app = create_app({"DATABASE": str(folder / "db.sqlite")})
    client = app.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok", "version": VERSION}
    app.extensions["botstate.storage"].close()
    shutil.rmtree(folder)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable"}


@pytest.mark.parametrize(
    "method,path,status,code",
    (
        ("GET", "/nowhere", 404, "NOT_FOUND"),
        ("PUT", "/api/bots/my-bot/state", 405, "METHOD_NOT_ALLOWED"),
        ("DELETE", "/api/bots/my-bot/state", 405, "METHOD_NOT_ALLOWED"),
        ("OPTIONS", "/api/bots/my-bot/state", 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/healthz", 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/api/bots//state", 404, "NOT_FOUND"),
    ),
)
@BACKEND_INDEPENDENT
def test_routing_errors_are_json(client, method, path, status, code):
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.is_json and response.get_json()["code"] == code


def test_one_log_line_per_request_without_key_or_state(client, bot, registered, caplog):
    caplog.set_level("INFO", logger="botstate")
    post(client, bot, {"states": [item(state={"secret": "marker-4242"})]})
    lines = [r.getMessage() for r in caplog.records if r.name == "botstate"]
    assert lines == [f"POST /api/bots/my-bot/state 200 {lines[0].split()[3]} bot=my-bot items=1 succeeded=1 failed=0"]
    assert bot["apiKey"] not in lines[0] and "marker-4242" not in lines[0]


def test_log_line_escapes_control_characters_in_the_path(client, caplog):
    caplog.set_level("INFO", logger="botstate")
    client.post("/api/bots/a%0Afake%20line/state")
    [line] = [r.getMessage() for r in caplog.records if r.name == "botstate"]
    assert "\n" not in line and "\\n" in line
