"""GET /metrics (BOTSTATE_METRICS=1): Prometheus's text format, labelled by route and kind, never by who."""

import re

import pytest
from conftest import execute_sql, holding_write_lock, settings_of
from spec_data import ACCOUNT_0, TICKER_AAPL, TICKER_UNKNOWN, item

import config
from app import create_app


def sample(text, name, **labels):
    """The value of one sample of the exposition, or None."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    match = re.search(rf"^{re.escape(name)}{{{re.escape(wanted)}}} (\S+)$", text, re.M)
    return None if match is None else float(match.group(1))


def test_metrics_are_off_unless_asked_for(configured):
    client, _, _ = configured()
    assert client.get("/metrics").status_code == 404


def test_metrics_count_requests_by_route_items_by_outcome_and_never_name_who(configured):
    client, bot, storage = configured(METRICS=1)
    headers = {"x-api-key": bot["apiKey"]}
    items = [item(state={"v": 1}), item(ACCOUNT_0, TICKER_UNKNOWN)]
    assert client.post("/api/bots/b/state", json={"states": items}, headers=headers).status_code == 200
    conflict = [{**item(state={"v": 2}), "expectedVersion": 7}]
    assert client.patch("/api/bots/b/state", json={"states": conflict}, headers=headers).status_code == 200
    assert client.get(f"/api/bots/b/state/{ACCOUNT_0}/{TICKER_AAPL}", headers=headers).status_code == 200
    assert client.get("/no/such/page").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain; version=0.0.4")
    text = response.get_data(as_text=True)
    route = "/api/bots/<slug>/state"
    assert sample(text, "botstate_requests_total", method="POST", route=route, status="200") == 1
    assert (
        sample(text, "botstate_requests_total", method="GET", route=route + "/<account_id>/<ticker_id>", status="200")
        == 1
    )
    assert sample(text, "botstate_requests_total", method="GET", route="(no route)", status="404") == 1
    assert sample(text, "botstate_request_duration_seconds_count", method="PATCH", route=route) == 1
    assert sample(text, "botstate_state_items_total", outcome="succeeded") == 1
    assert sample(text, "botstate_state_items_total", outcome="Ticker not found") == 1
    assert sample(text, "botstate_state_items_total", outcome="Version conflict") == 1  # not one series per version
    for who in (bot["apiKey"], '"b"', ACCOUNT_0, TICKER_AAPL, TICKER_UNKNOWN, "/no/such/page"):
        assert who not in text


def test_metrics_count_database_faults(configured):
    client, bot, storage = configured(METRICS=1, BUSY_TIMEOUT_MS=100)
    with holding_write_lock(settings_of(storage)):
        answer = client.post("/api/bots/b/state", json={"states": [item()]}, headers={"x-api-key": bot["apiKey"]})
    assert answer.status_code == 503
    assert sample(client.get("/metrics").get_data(as_text=True), "botstate_database_faults_total", kind="busy") == 1


def test_a_metrics_setting_other_than_0_or_1_stops_the_start(tmp_path):
    with pytest.raises(config.ConfigError, match="BOTSTATE_METRICS must be an integer from 0 to 1"):
        create_app({"DATABASE": str(tmp_path / "x.db"), "METRICS": "yes"})


def test_metrics_show_the_storages_retries(configured):
    client, _, storage = configured(METRICS=1)
    assert re.search(r"^botstate_database_retries_total 0\.0$", client.get("/metrics").get_data(as_text=True), re.M)
    storage.retries = 3
    text = client.get("/metrics").get_data(as_text=True)
    assert re.search(r"^botstate_database_retries_total 3\.0$", text, re.M), text


def test_metrics_count_the_change_log_entries_pruned(configured):
    client, bot, storage = configured(METRICS=1, HISTORY_DAYS=0)
    body = {"states": [{"accountId": ACCOUNT_0, "tickerId": TICKER_AAPL, "state": {"n": n}} for n in range(1)]}
    for _ in range(3):
        assert client.post("/api/bots/b/state", json=body, headers={"x-api-key": bot["apiKey"]}).status_code == 200
    assert re.search(r"^botstate_changes_pruned_total 0\.0$", client.get("/metrics").get_data(as_text=True), re.M)
    assert storage.prune_changes() == 2
    text = client.get("/metrics").get_data(as_text=True)
    assert re.search(r"^botstate_changes_pruned_total 2\.0$", text, re.M), text


def test_metrics_count_the_idempotency_answers_pruned(configured):
    client, bot, storage = configured(METRICS=1)
    headers = {"x-api-key": bot["apiKey"]}
    body = {"states": [{"accountId": ACCOUNT_0, "tickerId": TICKER_AAPL, "state": {}}]}
    for key in ("a", "b"):
        client.post("/api/bots/b/state", json=body, headers={**headers, "Idempotency-Key": key})
    execute_sql(settings_of(storage), "UPDATE idempotent_requests SET created_at = '2020-01-01T00:00:00.000Z'")
    assert storage.prune_answers() == 2
    text = client.get("/metrics").get_data(as_text=True)
    assert re.search(r"^botstate_idempotency_answers_pruned_total 2\.0$", text, re.M), text
