"""What the admin API's end-to-end tests share: requests with the admin key and the refusals' wording (its
fixtures, admin_key and admin, are in conftest.py)."""

import re

import requests
from conftest import execute_sql
from spec_data import ACCOUNT_0, TICKER_AAPL, item

from operations import Refused
from operations.bots import MAX_GRACE_SECONDS
from schemas import MAX_NAME_LENGTH

ADMIN = "/api/admin"
TIMEOUT = 30
OTHER = "00000000-0000-4000-8000-000000000000"
BAD_NAME = "a\x07b"
REQUIRED = (401, {"error": "Admin key required", "code": "UNAUTHORIZED"})
INVALID = (403, {"error": "Invalid admin key", "code": "FORBIDDEN"})
EXCEEDED = {"error": "Rate limit exceeded: 3 per 1 minute", "code": "TOO_MANY_REQUESTS"}
GRACE_RULE = f"graceSeconds must be an integer from 0 to {MAX_GRACE_SECONDS}"
FINGERPRINT_RULE = "fingerprint must be the 12 lowercase hex digits that the bot's keys list shows"
NOT_A_CURSOR = "cursor is not a cursor this service returned"
# What each list is ordered and paged by; what a registration stores and shows of an item.
LIST_KEYS = {"bots": "slug", "accounts": "id", "tickers": "symbol"}
REGISTERED = {"accounts": ("id", "name"), "tickers": ("id", "symbol")}
# What the keys list shows of a key, but createdAt and lastUsedAt (which a use may set).
KEY_FIELDS = ("fingerprint", "scope", "expiresAt")


def refusal(status, message):
    """The answer of an operation's refusal: its status, and its message with the status's code."""
    return status, {"error": message, "code": Refused.CODES[status]}


def bad_name(name, field="name"):
    """The refusal of a display name, as the operations word it."""
    return f"{field} {name[:40]!r} must be 1 to {MAX_NAME_LENGTH} characters without control characters"


def request(url, method, path, admin_key=None, headers=None, body=None):
    """One request to the server at `url`: `admin_key` as Bearer, `body` as JSON (bytes or chunks: as they are)."""
    headers = dict(headers or {})
    if admin_key is not None:
        headers["Authorization"] = f"Bearer {admin_key}"
    sent = {} if body is None else {"json" if isinstance(body, (dict, list)) else "data": body}
    return requests.request(method, url + path, headers=headers, timeout=TIMEOUT, **sent)


def as_bot(url, method, path, api_key, body=None):
    """A request to a bot endpoint with `api_key` as x-api-key: (status, JSON body)."""
    response = request(url, method, path, headers={"x-api-key": api_key}, body=body)
    return response.status_code, response.json()


def write_states(url, slug, api_key, pairs):
    """Store a state for each (account, ticker) of `pairs` as the bot `slug`."""
    status, answer = as_bot(url, "POST", f"/api/bots/{slug}/state", api_key, {"states": [item(*p) for p in pairs]})
    assert (status, answer["summary"]["failed"]) == (200, 0), answer


def rows(database, sql, params=()):
    """The rows of `sql` on the database itself, each value as text (PostgreSQL's uuids too), None as None."""
    return [tuple(None if v is None else str(v) for v in row) for row in execute_sql(database, sql, params)]


def registered_rows(database, kind):
    """The stored accounts (id, name) or tickers (id, symbol), as a set."""
    return set(rows(database, f"SELECT {', '.join(REGISTERED[kind])} FROM {kind}"))


def admin_routes(app):
    """(method, path) of every admin route, its path's parts filled in with 'my-bot' and the spec's ids."""
    values = {"slug": "my-bot", "account_id": ACCOUNT_0, "ticker_id": TICKER_AAPL}
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        if rule.rule.startswith(ADMIN + "/"):
            path = re.sub(r"<(\w+)>", lambda match: values[match[1]], rule.rule)
            yield from ((method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"}))
