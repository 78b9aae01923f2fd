"""BOTSTATE_LOG_FORMAT=json: one JSON object per log line, with a request's fields, never a key or a body."""

import io
import json
import logging
import time

import pytest
import requests
from conftest import start_server, stop_server
from spec_data import ACCOUNT_0, TICKER_AAPL, TICKER_UNKNOWN, item

from clock import stored_time_of
from logs import JSONFormatter, LineFormatter, LineHandler, log_request


def test_json_logs_give_one_object_per_line_with_each_requests_fields(database, bot, registered):
    process, url, log_path = start_server(database, LOG_FORMAT="json")
    headers = {"x-api-key": bot["apiKey"]}
    states = [item(state={"secret-state": 1}), item(ACCOUNT_0, TICKER_UNKNOWN)]
    try:
        assert (
            requests.post(f"{url}/api/bots/my-bot/state", json={"states": states}, headers=headers).status_code == 200
        )
        assert (
            requests.get(f"{url}/api/bots/my-bot/state/{ACCOUNT_0}/{TICKER_AAPL}", headers=headers).status_code == 200
        )
        assert requests.get(f"{url}/no/such\tpath").status_code == 404
    finally:
        stop_server(process)
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]  # every line is JSON
    assert all(set(entry) >= {"time", "level"} for entry in entries)
    assert entries[0]["message"].startswith("botstate listening on http://127.0.0.1:")
    assert entries[-1]["message"] == "botstate stopped"
    requests_logged = [
        {k: v for k, v in e.items() if k not in ("time", "duration_ms")} for e in entries if "method" in e
    ]
    assert requests_logged == [
        {
            "level": "INFO",
            "method": "POST",
            "path": "/api/bots/my-bot/state",
            "status": 200,
            "bot": "my-bot",
            "summary": {"total": 2, "succeeded": 1, "failed": 1, "errors": {"Ticker not found": 1}},
        },
        {
            "level": "INFO",
            "method": "GET",
            "path": f"/api/bots/my-bot/state/{ACCOUNT_0}/{TICKER_AAPL}",
            "status": 200,
            "bot": "my-bot",
        },
        {"level": "INFO", "method": "GET", "path": "/no/such\tpath", "status": 404},
    ]
    assert all(isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0 for e in entries if "method" in e)
    log = log_path.read_text()
    assert bot["apiKey"] not in log and "secret-state" not in log


@pytest.mark.parametrize(
    "unix_time,text",
    ((0, "1970-01-01T00:00:00.000Z"), (1764043800.1239, "2025-11-25T04:10:00.123Z")),
)
def test_times_are_utc_to_the_millisecond(unix_time, text):
    assert stored_time_of(unix_time) == text


@pytest.mark.parametrize("formatter", (LineFormatter, JSONFormatter))
def test_a_request_line_written_at_once_is_the_line_logging_would_write(formatter, monkeypatch):
    fields = {"method": "POST", "path": "/api/bots/b/state", "status": 200, "duration_ms": 1.5, "bot": "b"}
    lines = []
    for direct in (True, False):
        stream = io.StringIO()
        handler = LineHandler(stream)
        handler.setFormatter(formatter())
        logger = logging.getLogger(f"botstate.test-{formatter.__name__}-{direct}")
        logger.handlers, logger.propagate = [handler], False
        logger.setLevel(logging.INFO)
        if direct:  # written at once: logging is not asked
            monkeypatch.setattr(logger, "info", lambda *args, **kwargs: pytest.fail("went through logging"))
        else:
            logger.addFilter(lambda record: True)  # any filter: the line goes through logging
        monkeypatch.setattr(time, "time", lambda: 1764043800.1239)
        log_request(logger, "POST /api/bots/b/state 200 1.5ms bot=b", fields)
        monkeypatch.undo()
        lines.append(stream.getvalue())
    assert lines[0] == lines[1] and lines[0].count("\n") == 1
