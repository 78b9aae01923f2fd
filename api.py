"""The HTTP API blueprint: write, merge, read, page and delete bot state; the health check."""

import contextlib
import logging
import re
from collections import Counter

from flask import Blueprint, current_app, g, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

import jsoncodec
import keys
import ratelimit
import writebody
from errors import APIError, bad_request
from schemas import (
    INVALID_SLUG,
    StateKeySchema,
    StateQuerySchema,
    encode_cursor,
    first_param_error,
    is_valid_slug,
)
from storage import (
    ItemError,
    NotFound,
    StaleKey,
    StateRow,
    StateWrite,
    StorageError,
    VersionConflict,
)

log = logging.getLogger("botstate")

bp = Blueprint("api", __name__)

STATE_QUERY = StateQuerySchema()
STATE_KEY = StateKeySchema()


def storage():
    """The storage backend of the running app."""
    return current_app.extensions["botstate.storage"]


def bot_not_found(slug):
    """The spec's 404 for an unknown bot."""
    return APIError(404, f"Bot with slug '{slug}' not found", "NOT_FOUND")


def invalid_key():
    """The spec's 403 for a key that is not the bot's."""
    return APIError(403, "Invalid API key for this bot")


# Bots remembered per slug: (bot id, its working keys) as last read. A remembered
# login saves a read per request; it is never the last word, since every storage
# call made with it checks the key again (see as_bot).
REMEMBERED_BOTS_MAX = 10_000


def remembered_bots():
    """The app's slug -> (bot id, keys) memory, keys as storage.find_bot_credentials gives them."""
    return current_app.extensions.setdefault("botstate.bots", {})


def authenticate(slug, fresh=False):
    """(bot id, key hash) of the bot `slug` names, once the x-api-key header proves the caller is it.

    Without `fresh`, a bot remembered from an earlier request is not read again.
    """
    if not is_valid_slug(slug):
        raise bad_request(INVALID_SLUG)
    g.bot_slug = slug
    api_key = request.headers.get("x-api-key", "")
    if not api_key.strip():
        raise APIError(401, "API key required. Include x-api-key header.")
    key_hash = keys.hash_key(api_key)
    bots = remembered_bots()
    remembered = None if fresh else bots.get(slug)
    if remembered is None or not keys.works(key_hash, remembered[1]):
        remembered = storage().find_bot_credentials(slug)
        if remembered is None:
            bots.pop(slug, None)
            raise bot_not_found(slug)
        if len(bots) >= REMEMBERED_BOTS_MAX:
            bots.clear()
        bots[slug] = remembered
        if not keys.works(key_hash, remembered[1]):
            raise invalid_key()
    storage().record_key_use(remembered[0], key_hash)
    return remembered[0], key_hash


def as_bot(slug, bot_id, key_hash, call, *args, **kwargs):
    """call(bot_id, key_hash, ...), a storage call that checks the key itself; should it
    find the bot gone or re-keyed, answer what a fresh authentication says."""
    try:
        return call(bot_id, key_hash, *args, **kwargs)
    except (NotFound, StaleKey):
        pass
    bot_id, key_hash = authenticate(slug, fresh=True)  # 404 or 403, unless it changed back
    try:
        return call(bot_id, key_hash, *args, **kwargs)
    except NotFound:
        raise bot_not_found(slug) from None
    except StaleKey:
        raise invalid_key() from None


@contextlib.contextmanager
def outranked_by_authentication(slug):
    """Let a bad request through only once a fresh read confirms the key: 404 and 403 come first."""
    try:
        yield
    except (APIError, HTTPException):
        authenticate(slug, fresh=True)
        raise


def admit(slug):
    """What authenticate(slug) returns, once the request is counted against the bot's rate limit.

    Only a request that proved its key counts, so nobody else can use up a bot's budget.
    """
    bot_id, key_hash = authenticate(slug)
    try:
        ratelimit.count_request()
    except HTTPException:  # the 429; a key rotated away since the bot was remembered gets its 403
        authenticate(slug, fresh=True)
        raise
    return bot_id, key_hash


def state_updates(merge):
    """The request body's validated items, each state as its text (None: provably too large),
    or the 400 naming the first problem. The body is strict JSON, whatever the Content-Type says."""
    data = request.get_data(cache=False)  # 413 past MAX_CONTENT_LENGTH
    schema = current_app.extensions["botstate.updates_schema"]
    try:
        return writebody.load_items(data, schema, merge, current_app.config["MAX_STATE_BYTES"])
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


def row_json(row):
    """A stored state row as the API shows it: the state is the stored JSON text, as is."""
    return {
        "id": row.id,
        "botId": row.bot_id,
        "userBrokerAccountId": row.account_id,
        "tickerId": row.ticker_id,
        "state": jsoncodec.Raw(row.state_json),
        "version": row.version,
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
    }


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
    return {
        "status": "error",
        "error": message,
        "accountId": account_id,
        "tickerId": ticker_id,
        "index": index,
    }


def write_states(slug, merge):
    """Validate the items, write each independently, and answer the spec's bulk response."""
    bot_id, key_hash = admit(slug)
    with outranked_by_authentication(slug):
        updates = state_updates(merge)
    max_state_bytes = current_app.config["MAX_STATE_BYTES"]
    too_large = None
    if any(update["state"] is None for update in updates):
        too_large = oversized_state(max_state_bytes)
    writes = [
        StateWrite(
            update["accountId"].lower(),
            update["tickerId"].lower(),
            too_large if update["state"] is None else update["state"],
            update["expectedVersion"],
        )
        for update in updates
    ]
    updates = [(update["accountId"], update["tickerId"]) for update in updates]
    outcomes = as_bot(
        slug,
        bot_id,
        key_hash,
        storage().write_states,
        writes,
        merge=merge,
        max_state_bytes=max_state_bytes,
    )
    results = []
    for index, ((account_id, ticker_id), outcome) in enumerate(zip(updates, outcomes, strict=False)):
        if not isinstance(outcome, StateRow):
            results.append(item_error(account_id, ticker_id, index, outcome))
            continue
        results.append(
            {
                "status": "success",
                "data": row_json(outcome),
                "accountId": account_id,
                "tickerId": ticker_id,
            }
        )
    failures = Counter(item["error"] for item in results if item["status"] == "error")
    failed = sum(failures.values())
    summary = {"total": len(updates), "succeeded": len(updates) - failed, "failed": failed}
    g.summary, g.failures = summary, failures
    return jsonify(success=True, summary=summary, results=results)


@bp.post("/api/bots/<slug>/state", provide_automatic_options=False)
def replace_states(slug):
    """Upsert each (account, ticker) state, replacing what was stored."""
    return write_states(slug, merge=False)


@bp.patch("/api/bots/<slug>/state", provide_automatic_options=False)
def merge_states(slug):
    """Apply each state as an RFC 7396 merge patch to what was stored (or to {})."""
    return write_states(slug, merge=True)


@bp.get("/api/bots/<slug>/state", provide_automatic_options=False)
def list_states(slug):
    """A page of the bot's states, filtered, in a stable order, with the cursor of the next."""
    bot_id, key_hash = admit(slug)
    with outranked_by_authentication(slug):
        query = load_params(STATE_QUERY, request.args.to_dict(flat=True))
    rows, more = as_bot(slug, bot_id, key_hash, list_own_states, query)
    next_cursor = encode_cursor(rows[-1].account_id, rows[-1].ticker_id) if more else None
    return jsonify(data=[row_json(row) for row in rows], nextCursor=next_cursor)


def list_own_states(bot_id, key_hash, query):
    """storage.list_states() for the bot's loaded query, while its key works."""
    return storage().list_states(
        bot_id,
        query["limit"],
        account_id=query.get("accountId"),
        ticker_id=query.get("tickerId"),
        updated_since=query.get("updatedSince"),
        after=query.get("cursor"),
        key_hash=key_hash,
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
def get_state(slug, account_id, ticker_id):
    """One state row, with its version as ETag; 304 when If-None-Match has it."""
    bot_id, key_hash = admit(slug)
    with outranked_by_authentication(slug):
        key = state_key(account_id, ticker_id)
    row = as_bot(slug, bot_id, key_hash, storage().read_state, *key)
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
def delete_state(slug, account_id, ticker_id):
    """Delete one state row; with If-Match, only while its version is one of those given."""
    bot_id, key_hash = admit(slug)
    with outranked_by_authentication(slug):
        key = state_key(account_id, ticker_id)
    expected = if_match_versions(request.headers.get("If-Match"))
    outcome = as_bot(slug, bot_id, key_hash, storage().delete_state, *key, expected_versions=expected)
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
    return jsonify(status="ok")
