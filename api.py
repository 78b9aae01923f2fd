"""The HTTP API blueprint: write, merge, read, page and delete bot state; the health check."""

import logging
import re
from collections import Counter

from flask import Blueprint, current_app, g, jsonify, request
from marshmallow import ValidationError

import idempotency
import jsoncodec
import writebody
from auth import bot_endpoint, storage
from change_schemas import AsOfQuerySchema
from errors import APIError, bad_request
from schemas import StateKeySchema, StateQuerySchema, encode_cursor, first_param_error
from storage import (
    AnsweredBefore,
    HistoryGone,
    IdempotentWrite,
    ItemError,
    RequestInProgress,
    StateRow,
    StateWrite,
    StorageError,
    VersionConflict,
)
from version import VERSION
from views import row_json

log = logging.getLogger("botstate")

bp = Blueprint("api", __name__)

STATE_QUERY = StateQuerySchema()
STATE_KEY = StateKeySchema()
AS_OF_QUERY = AsOfQuerySchema()


def state_updates(data, merge, app=None):
    """The body's validated items, each state as its text (None: provably too large),
    or the 400 naming the first problem. The body is strict JSON, whatever the Content-Type says."""
    app = app or current_app._get_current_object()
    schema = app.extensions["botstate.updates_schema"]
    try:
        return writebody.load_items(data, schema, merge, app.config["MAX_STATE_BYTES"])
    except jsoncodec.InvalidJSON:
        raise bad_request("Invalid JSON in request body") from None
    except ValidationError as error:
        raise bad_request(error.messages[0]) from None


def oversized_state(max_state_bytes):
    """A state text over the limit, stored in place of one too large to build.

    Storage refuses it as it would that one.
    """
    return '{"":"' + "x" * max_state_bytes + '"}'


def load_params(schema, data):
    """Path or query parameters loaded by `schema`, or a 400 naming the first bad one."""
    try:
        return schema.load(data)
    except ValidationError as error:
        raise bad_request(first_param_error(error.messages, schema)) from None


def etag(version):
    """The strong validator of a row: its quoted version."""
    return f'"{version}"'


def item_error(account_id, ticker_id, index, outcome):
    """A failed item of the response, as the spec shows it."""
    if isinstance(outcome, VersionConflict):
        message = f"Version conflict: expected {outcome.expected}, found {outcome.found}"
    elif outcome is ItemError.STATE_TOO_LARGE:
        message = outcome.value.format(max_state_bytes=current_app.config["MAX_STATE_BYTES"])
    else:
        message = outcome.value
    failed = {
        "status": "error",
        "error": message,
        "accountId": account_id,
        "tickerId": ticker_id,
        "index": index,
    }
    # After the spec's fields: a client written against the spec sees nothing change.
    if isinstance(outcome, VersionConflict):
        return {**failed, "code": outcome.code, "currentVersion": outcome.found}
    return {**failed, "code": outcome.code}


def write_states(bot, merge):
    """Validate the items, write each independently, and answer the spec's bulk response;
    with an Idempotency-Key, the answer kept for it when it has one (see idempotency.py)."""
    if bot.read_only:
        state_updates(request.get_data(cache=False), merge)  # the spec's 400s come first
        bot.check_writes()
    key = idempotency.requested_key()
    data = request.get_data(cache=False)  # 413 past MAX_CONTENT_LENGTH
    app = current_app._get_current_object()  # looked up once
    max_state_bytes = app.config["MAX_STATE_BYTES"]
    if key is None:
        updates = state_updates(data, merge, app)
        writes = state_writes(updates, max_state_bytes)
        database = app.extensions["botstate.storage"]
        outcomes = bot.call(database.write_states, writes, merge=merge, max_state_bytes=max_state_bytes)
        return jsonify(write_answer(updates, outcomes))
    digest = idempotency.fingerprint(data)
    with idempotency.running().holding(bot.credentials.bot_id, key):
        answer = bot.call(storage().find_answer, key)
        if answer is not None:
            return idempotency.replay(answer, digest)
        updates = state_updates(data, merge)
        sent = []

        def kept(outcomes):
            sent.append(jsonify(write_answer(updates, outcomes)))
            return idempotency.stored_body(sent[-1].get_data())

        writes = state_writes(updates, max_state_bytes)
        idempotent = IdempotentWrite(key, digest, kept)
        try:
            bot.call(
                storage().write_states, writes, merge=merge, max_state_bytes=max_state_bytes, idempotent=idempotent
            )
        except AnsweredBefore as before:  # by another server process, since the look above
            return idempotency.replay(before.answer, digest)
        except RequestInProgress:
            raise idempotency.in_progress() from None
        return sent[-1]


def state_writes(updates, max_state_bytes):
    """The StateWrites of validated items: canonical ids, and a state known to be too large as one over the limit."""
    too_large = None
    if any(update["state"] is None for update in updates):
        too_large = oversized_state(max_state_bytes)
    return [
        StateWrite(
            update["accountId"].lower(),
            update["tickerId"].lower(),
            too_large if update["state"] is None else update["state"],
            update["expectedVersion"],
        )
        for update in updates
    ]


def write_answer(updates, outcomes):
    """The spec's bulk response to validated items, given their outcomes; its summary noted for the log."""
    results = []
    for index, (update, outcome) in enumerate(zip(updates, outcomes, strict=False)):
        account_id, ticker_id = update["accountId"], update["tickerId"]
        if not isinstance(outcome, StateRow):
            results.append(item_error(account_id, ticker_id, index, outcome))
            continue
        results.append(
            {
                "status": "success",
                "data": row_json(outcome),
                "accountId": account_id,
                "tickerId": ticker_id,
                "index": index,
            }
        )
    failures = Counter(item["error"] for item in results if item["status"] == "error")
    failed = sum(failures.values())
    summary = {"total": len(updates), "succeeded": len(updates) - failed, "failed": failed}
    g.summary, g.failures = summary, failures
    return {"success": True, "summary": summary, "results": results}


@bp.post("/api/bots/<slug>/state", provide_automatic_options=False)
@bot_endpoint
def replace_states(bot):
    """Upsert each (account, ticker) state, replacing what was stored."""
    return write_states(bot, merge=False)


@bp.patch("/api/bots/<slug>/state", provide_automatic_options=False)
@bot_endpoint
def merge_states(bot):
    """Apply each state as an RFC 7396 merge patch to what was stored (or to {})."""
    return write_states(bot, merge=True)


@bp.get("/api/bots/<slug>/state", provide_automatic_options=False)
@bot_endpoint
def list_states(bot):
    """A page of the bot's states, filtered, in a stable order, with the cursor of the next."""
    query = load_params(STATE_QUERY, request.args.to_dict(flat=True))
    rows, more = bot.call(list_own_states, query)
    next_cursor = encode_cursor(rows[-1].account_id, rows[-1].ticker_id) if more else None
    return jsonify(data=[row_json(row) for row in rows], nextCursor=next_cursor)


def list_own_states(credentials, query):
    """storage.list_states() for the bot's loaded query, while its key works."""
    return storage().list_states(
        None,
        query["limit"],
        account_id=query.get("accountId"),
        ticker_id=query.get("tickerId"),
        updated_since=query.get("updatedSince"),
        after=query.get("cursor"),
        credentials=credentials,
        max_bytes=current_app.config["MAX_PAGE_BYTES"],
    )


def state_key(account_id, ticker_id):
    """The canonical (account, ticker) of a state path, or a 400 naming the bad one."""
    key = load_params(STATE_KEY, {"accountId": account_id, "tickerId": ticker_id})
    return key["accountId"], key["tickerId"]


def state_not_found():
    """The 404 for a row that does not exist (or belongs to another bot)."""
    return APIError(404, "State not found", "NOT_FOUND")


@bp.get("/api/bots/<slug>/state/<account_id>/<ticker_id>", provide_automatic_options=False)
@bot_endpoint
def get_state(bot, account_id, ticker_id):
    """One state row, with its version as ETag; 304 when If-None-Match has it; with asOf, as it was then."""
    key = state_key(account_id, ticker_id)
    as_of = load_params(AS_OF_QUERY, request.args.to_dict(flat=True)).get("asOf")
    if as_of is None:
        row = bot.call(storage().read_state, *key)
    else:
        try:
            row = bot.call(storage().state_as_of, *key, as_of)
        except HistoryGone as gone:
            raise APIError(404, f"State history before {gone.kept_since} is no longer kept", "NOT_FOUND") from None
    if row is None:
        raise state_not_found()
    if if_none_match_names(request.headers.get("If-None-Match"), row.version):
        response = current_app.response_class(status=304)
    else:
        response = jsonify(data=row_json(row))
    response.headers["ETag"] = etag(row.version)
    return response


# RFC 9110 8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text.
ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')
# Between list elements: optional whitespace (SP, HTAB) and commas, empty elements allowed (RFC 9110 5.6.1).
LIST_GAP = re.compile(r"[ \t]*(?:,[ \t]*)*")
VERSION_TAG = re.compile(r"[1-9][0-9]{0,17}")
ANY_TAG = "*"


def entity_tags(header):
    """An If-Match or If-None-Match value as RFC 9110 reads it: None without the header,
    ANY_TAG for `*`, else its (weak, opaque-tag) pairs; [] when it is not a list of
    entity-tags (an unquoted 3 is not one), which matches nothing."""
    if header is None:
        return None
    if header.strip(" \t") == ANY_TAG:
        return ANY_TAG
    tags, position = [], LIST_GAP.match(header).end()
    while position < len(header):
        tag = ENTITY_TAG.match(header, position)
        if tag is None:
            return []
        gap = LIST_GAP.match(header, tag.end())
        if gap.end() < len(header) and "," not in gap.group():
            return []  # two tags with no comma between them
        tags.append((tag.group(1) is not None, tag.group(2)))
        position = gap.end()
    return tags


def if_match_versions(header):
    """The versions an If-Match header allows: None without the header or with `*`.

    Entity-tags compare strongly and as exact strings (RFC 9110): "3" matches
    version 3, while W/"3", "03" and anything that is not a list of tags match nothing.
    """
    tags = entity_tags(header)
    if tags is None or tags == ANY_TAG:
        return None
    return [int(opaque) for weak, opaque in tags if not weak and VERSION_TAG.fullmatch(opaque)]


def if_none_match_names(header, version):
    """Whether an If-None-Match header is `*` or names `version`, compared weakly (RFC 9110):
    "3" and W/"3" both name version 3; a header that is not a list of tags names nothing."""
    tags = entity_tags(header)
    if tags is None:
        return False
    return tags == ANY_TAG or any(opaque == str(version) for _, opaque in tags)


def expected_by_if_match(header, found):
    """What an If-Match header that did not match version `found` asked for, as the 412 words it."""
    strong = [opaque for weak, opaque in entity_tags(header) if not weak and opaque]
    if not strong:  # only weak or empty tags, or not a list of tags at all
        return f'a strong entity-tag such as "{found}"'
    return " or ".join(strong)[:100]


@bp.delete("/api/bots/<slug>/state/<account_id>/<ticker_id>", provide_automatic_options=False)
@bot_endpoint
def delete_state(bot, account_id, ticker_id):
    """Delete one state row; with If-Match, only while its version is one of those given."""
    key = state_key(account_id, ticker_id)
    bot.check_writes()
    expected = if_match_versions(request.headers.get("If-Match"))
    outcome = bot.call(storage().delete_state, *key, expected_versions=expected)
    if outcome is None:
        raise state_not_found()
    if isinstance(outcome, VersionConflict):
        wanted = expected_by_if_match(request.headers["If-Match"], outcome.found)
        raise APIError(
            412,
            f"Version conflict: expected {wanted}, found {outcome.found}",
            "PRECONDITION_FAILED",
            {"ETag": etag(outcome.found)},
        )
    return jsonify(data=row_json(outcome))


@bp.get("/healthz", provide_automatic_options=False)
def healthz():
    """200 when the database answers a read, 503 otherwise."""
    try:
        storage().ping()
    except StorageError as error:
        log.error("health check failed: %s", error)
        return jsonify(status="unavailable"), 503
    return jsonify(status="ok", version=VERSION)
