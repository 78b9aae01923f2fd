"""The OpenAPI document matches what the server does: schemathesis against a live server."""

import os
import re
import uuid

import pytest
import requests
import schemathesis
from conftest import BACKEND_INDEPENDENT
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from spec_data import ACCOUNT_0, ACCOUNT_1, TICKER_AAPL, TICKER_MSFT

import admin_schemas
import idempotency
import keys
import schemas

SEED = 20261124
# Generated requests per operation: `make test` runs 50, `make soak` many more.
EXAMPLES_PER_OPERATION = int(os.environ.get("OPENAPI_EXAMPLES", "50"))

# A cursor's MAC is beyond JSON Schema: valid ones are what the server makes.
schemathesis.openapi.format(
    schemas.Cursor.DOC["format"], st.builds(schemas.encode_cursor, st.uuids().map(str), st.uuids().map(str))
)


@pytest.fixture
def api_schema(live_server, bot, registered, storage):
    # Rows to read, merge and delete, so generated requests reach stored data too.
    requests.post(
        f"{live_server.url}/api/bots/my-bot/state",
        json={
            "states": [
                {"accountId": a, "tickerId": t, "state": {"n": 1}}
                for a in (ACCOUNT_0, ACCOUNT_1)
                for t in (TICKER_AAPL, TICKER_MSFT)
            ]
        },
        headers={"x-api-key": bot["apiKey"]},
        timeout=10,
    ).raise_for_status()
    admin_key = keys.generate_key(keys.ADMIN_KEY_PREFIX)
    storage.create_admin_key("schemathesis", keys.hash_key(admin_key))
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "base-url": live_server.url,
            # Bot endpoints read the one, the admin API the other.
            "headers": {"x-api-key": bot["apiKey"], "Authorization": f"Bearer {admin_key}"},
            # The real bot, so that requests pass authentication and reach the database.
            "parameters": {"path.slug": "my-bot"},
            "generation": {"max-examples": EXAMPLES_PER_OPERATION, "mode": "all"},
            # A valid poll of the change feed from past every seq handed out is told to resync (410).
            "checks": {
                # Every request carries the real key (the headers above), also the ones this check
                # makes with an invalid key of its own: it would see them answered. The key checks
                # are tests/test_keys.py's and tests/test_state_api.py's.
                "ignored_auth": {"enabled": False},
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "410", "429", "5xx"]
                },
            },
        }
    )
    return schemathesis.openapi.from_url(f"{live_server.url}/openapi.json", config=config)


# Likewise for the lists' cursors: the last key of a page, as the server encodes it.
for _kind, _keys in (
    ("bots", st.from_regex(r"\A[a-z0-9_-]{1,20}\Z")),
    ("accounts", st.uuids().map(str)),
    ("tickers", st.from_regex(r"\A[A-Z.]{1,8}\Z")),
):
    schemathesis.openapi.format(
        f"botstate-{_kind}-cursor", _keys.map(lambda key, kind=_kind: admin_schemas.encode_list_cursor(kind, key))
    )

schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_server_conforms_to_its_openapi_document(case):
    # Generated keys repeat ("0", "00", ...): each valid one is made unique, so that a write reaches
    # its validation instead of the 422 of a key used before (tests/test_idempotency.py tests that).
    key = (case.headers or {}).get(idempotency.HEADER)
    if key is not None and 0 < len(key.strip()) <= idempotency.MAX_KEY_LENGTH and key.isascii() and key.isprintable():
        case.headers[idempotency.HEADER] = str(uuid.uuid4())
    case.call_and_validate()


@BACKEND_INDEPENDENT
def test_document_is_openapi_3_1_with_the_key_scheme(app, client):
    document = client.get("/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
    }
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    # Every route the app serves, each method of it, and nothing else (/metrics is off by default).
    camel = {"account_id": "accountId", "ticker_id": "tickerId"}  # Flask's path names, the API's
    served = {
        (re.sub(r"<(\w+)>", lambda name: "{" + camel.get(name[1], name[1]) + "}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert ("/api/bots/{slug}/changes", "get") in served and operations == served


def test_document_states_the_configured_limit(tmp_path):
    from app import create_app

    app = create_app({"DATABASE": str(tmp_path / "x.db"), "MAX_STATES": 7})
    document = app.test_client().get("/openapi.json").get_json()
    app.extensions["botstate.storage"].close()
    assert document["components"]["schemas"]["StateUpdates"]["properties"]["states"]["maxItems"] == 7


@BACKEND_INDEPENDENT
def test_document_describes_the_cursors_the_server_makes(client):
    document = client.get("/openapi.json").get_json()
    [cursor] = [p for p in document["paths"]["/api/bots/{slug}/state"]["get"]["parameters"] if p["name"] == "cursor"]
    next_cursor = document["components"]["schemas"]["StatePage"]["properties"]["nextCursor"]
    for schema in (cursor["schema"], next_cursor):
        assert schema["pattern"] == schemas.Cursor.PATTERN == "^[A-Za-z0-9_-]{60}$"
        assert re.fullmatch(schema["pattern"], schemas.encode_cursor(ACCOUNT_0, TICKER_AAPL))
        assert schemas.decode_cursor(schema["example"]) == (ACCOUNT_0, TICKER_AAPL)  # a cursor the server takes
