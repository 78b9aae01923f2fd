"""The admin API under /api/admin/: bots and their keys, accounts and tickers, with an admin key.

Each view is a thin wrapper: operations/ does the work, exactly as the CLI has it done.
"""

from flask import Blueprint, jsonify, request

import jsoncodec
from admin_auth import admin_endpoint
from admin_schemas import (
    AccountsQuerySchema,
    BotsQuerySchema,
    TickersQuerySchema,
    encode_list_cursor,
    load_query,
)
from auth import storage
from errors import APIError, bad_request
from operations import bots, catalog
from schemas import MAX_SLUG_LENGTH, is_valid_bot_slug
from storage import WRITE_SCOPE

bp = Blueprint("admin", __name__, url_prefix="/api/admin")

# An admin body holds at most 1000 short items: 1000 names of 200 characters, each written as a JSON escape
# pair (12 bytes), take 2.4 MB; far below the states' limit.
MAX_ADMIN_BODY_BYTES = 4 * 1024 * 1024
BOTS_QUERY = BotsQuerySchema()
ACCOUNTS_QUERY = AccountsQuerySchema()
TICKERS_QUERY = TickersQuerySchema()


def body():
    """The request's JSON object (none sent: {}), or a 400 or 413 saying why not."""
    too_large = APIError(413, f"Request body exceeds {MAX_ADMIN_BODY_BYTES} bytes", "PAYLOAD_TOO_LARGE")
    if (request.content_length or 0) > MAX_ADMIN_BODY_BYTES:
        raise too_large  # not read at all
    data = request.get_data(cache=False)
    if len(data) > MAX_ADMIN_BODY_BYTES:  # chunked: its length is known once read
        raise too_large
    if not data.strip():
        return {}
    try:
        value = jsoncodec.loads(data)
    except jsoncodec.InvalidJSON:
        raise bad_request("Invalid JSON in request body") from None
    if not isinstance(value, dict):
        raise bad_request("Request body must be a JSON object")
    return value


def given(value, name, default=None):
    """`value[name]` as sent, or `default` when it is absent or null: the operation checks it, as it does the CLI's."""
    found = value.get(name)
    return default if found is None else found


def field(value, name, kind, default=None):
    """`value[name]` when it is of `kind` (absent or null: `default`), else a 400 naming it."""
    found = given(value, name, default)
    if found is not None and not isinstance(found, kind):
        raise bad_request(f"{name} must be {KIND_NAMES[kind]}")
    return found


KIND_NAMES = {str: "a string", bool: "true or false"}


def query(schema):
    """The loaded query of a list, or a 400 naming the first bad parameter."""
    loaded, problem = load_query(schema, request.args.to_dict(flat=True))
    if problem is not None:
        raise bad_request(problem)
    return loaded


def page(kind, rows, after):
    """A list's answer: its rows and the cursor of the next page (null on the last)."""
    return jsonify(data=rows, nextCursor=None if after is None else encode_list_cursor(kind, after))


def known_slug(slug):
    """The slug of a path, once it could be a bot's: any other is a bot that does not exist (404)."""
    if not is_valid_bot_slug(slug):
        raise APIError(404, f"Bot {slug[:MAX_SLUG_LENGTH]!r} not found", "NOT_FOUND")
    return slug


# Bots


@bp.post("/bots", provide_automatic_options=False)
@admin_endpoint
def create_bot():
    """Create a bot; the answer holds its key, shown this once."""
    sent = body()
    slug = field(sent, "slug", str)
    if slug is None:
        raise bad_request("slug is required and must be a string")
    return jsonify(data=bots.create_bot(storage(), slug, field(sent, "name", str))), 201


@bp.get("/bots", provide_automatic_options=False)
@admin_endpoint
def list_bots():
    """A page of bots by slug."""
    loaded = query(BOTS_QUERY)
    return page("bots", *bots.list_bots(storage(), loaded["limit"], loaded.get("cursor")))


@bp.get("/bots/<slug>", provide_automatic_options=False)
@admin_endpoint
def get_bot(slug):
    """One bot, with how many states it keeps."""
    return jsonify(data=bots.get_bot(storage(), known_slug(slug)))


@bp.post("/bots/<slug>/rotate-key", provide_automatic_options=False)
@admin_endpoint
def rotate_key(slug):
    """A new key for the bot; its old keys of the scope stop at once or after graceSeconds."""
    sent = body()
    grace = given(sent, "graceSeconds", 0)
    if isinstance(grace, float) and grace.is_integer():
        grace = int(grace)  # 60.0 is an integer in JSON
    scope = given(sent, "scope", WRITE_SCOPE)
    return jsonify(data=bots.rotate_key(storage(), known_slug(slug), grace, scope))


@bp.post("/bots/<slug>/keys", provide_automatic_options=False)
@admin_endpoint
def add_key(slug):
    """One more key for the bot, beside its others; read keys may only GET."""
    scope = given(body(), "scope", WRITE_SCOPE)
    return jsonify(data=bots.add_key(storage(), known_slug(slug), scope)), 201


@bp.post("/bots/<slug>/revoke-key", provide_automatic_options=False)
@admin_endpoint
def revoke_key(slug):
    """Stop the bot's keys in a grace period; with all, every key; with fingerprint, that one."""
    sent = body()
    every = field(sent, "all", bool, False)
    fingerprint = given(sent, "fingerprint")
    return jsonify(data=bots.revoke_keys(storage(), known_slug(slug), every=every, fingerprint=fingerprint))


@bp.get("/bots/<slug>/keys", provide_automatic_options=False)
@admin_endpoint
def list_keys(slug):
    """The bot's working keys, newest first."""
    return jsonify(data=bots.list_keys(storage(), known_slug(slug)))


@bp.delete("/bots/<slug>", provide_automatic_options=False)
@admin_endpoint
def delete_bot(slug):
    """Delete the bot and every state it stored."""
    return jsonify(data=bots.delete_bot(storage(), known_slug(slug)))


# Accounts and tickers


@bp.post("/accounts", provide_automatic_options=False)
@admin_endpoint
def register_accounts():
    """Register up to 1000 accounts; each item succeeds or fails alone."""
    return jsonify(catalog.register_accounts(storage(), required_list(body(), "accounts")))


@bp.get("/accounts", provide_automatic_options=False)
@admin_endpoint
def list_accounts():
    """A page of accounts by id."""
    loaded = query(ACCOUNTS_QUERY)
    return page("accounts", *catalog.list_accounts(storage(), loaded["limit"], loaded.get("cursor")))


@bp.delete("/accounts/<account_id>", provide_automatic_options=False)
@admin_endpoint
def delete_account(account_id):
    """Delete the account and every bot's states of it."""
    return jsonify(data=catalog.delete_account(storage(), account_id))


@bp.post("/tickers", provide_automatic_options=False)
@admin_endpoint
def register_tickers():
    """Register up to 1000 tickers; each item succeeds or fails alone."""
    return jsonify(catalog.register_tickers(storage(), required_list(body(), "tickers")))


@bp.get("/tickers", provide_automatic_options=False)
@admin_endpoint
def list_tickers():
    """A page of tickers by symbol; with symbol, that one only."""
    loaded = query(TICKERS_QUERY)
    rows, after = catalog.list_tickers(storage(), loaded["limit"], loaded.get("cursor"), loaded.get("symbol"))
    return page("tickers", rows, after)


@bp.delete("/tickers/<ticker_id>", provide_automatic_options=False)
@admin_endpoint
def delete_ticker(ticker_id):
    """Delete the ticker and every bot's states of it."""
    return jsonify(data=catalog.delete_ticker(storage(), ticker_id))


def required_list(sent, name):
    """The body's `name` array, which the operation checks item by item; a 400 when it is missing."""
    if name not in sent:
        raise bad_request(f"{name} is required and must be an array")
    return sent[name]
