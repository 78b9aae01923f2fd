"""The HTTP API blueprint: POST /api/bots/:slug/state and the health check."""

import logging
from collections import Counter

from flask import Blueprint, current_app, g, jsonify, request
from marshmallow import ValidationError

import jsoncodec
import keys
from errors import APIError, bad_request
from schemas import first_error, is_valid_slug
from storage import StateRow, StateWrite, StorageError

log = logging.getLogger("botstate")

bp = Blueprint("api", __name__)

INVALID_SLUG = (
    "Invalid slug format. Only alphanumeric characters, hyphens, and underscores are allowed."
)


def storage():
    """The storage backend of the running app."""
    return current_app.extensions["botstate.storage"]


def authenticate(slug):
    """The id of the bot that `slug` names, once the x-api-key header proves the caller is it."""
    if not is_valid_slug(slug):
        raise bad_request(INVALID_SLUG)
    g.bot_slug = slug
    api_key = request.headers.get("x-api-key", "")
    if not api_key.strip():
        raise APIError(401, "API key required. Include x-api-key header.")
    credentials = storage().find_bot_credentials(slug)
    if credentials is None:
        raise APIError(404, f"Bot with slug '{slug}' not found", "NOT_FOUND")
    bot_id, key_hash = credentials
    if not keys.key_matches(api_key, key_hash):
        raise APIError(403, "Invalid API key for this bot")
    return bot_id


def json_body():
    """The request body parsed as strict JSON, whatever the Content-Type says."""
    data = request.get_data(cache=False)  # 413 past MAX_CONTENT_LENGTH
    try:
        return jsoncodec.loads(data)
    except jsoncodec.InvalidJSON:
        raise bad_request("Invalid JSON in request body") from None


def state_updates(body):
    """The validated items of the body, or a 400 naming the first problem."""
    schema = current_app.extensions["botstate.updates_schema"]
    try:
        return schema.load(body)["states"]
    except ValidationError as error:
        raise bad_request(first_error(error.messages)) from None


def item_error(update, index, message):
    """A failed item of the response, as the spec shows it."""
    return {
        "status": "error",
        "error": message,
        "accountId": update["accountId"],
        "tickerId": update["tickerId"],
        "index": index,
    }


def state_data(row, state):
    """A stored state row as the API shows it."""
    return {
        "id": row.id,
        "botId": row.bot_id,
        "userBrokerAccountId": row.account_id,
        "tickerId": row.ticker_id,
        "state": state,
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
    }


@bp.post("/api/bots/<slug>/state", provide_automatic_options=False)
def update_states(slug):
    """Upsert the state of each (account, ticker) item independently."""
    bot_id = authenticate(slug)
    updates = state_updates(json_body())
    config = current_app.config
    results = [None] * len(updates)
    writes, write_indexes = [], []
    for index, update in enumerate(updates):
        state = update["state"]
        if jsoncodec.depth_exceeds(state, config["MAX_STATE_DEPTH"]):
            results[index] = f"State exceeds {config['MAX_STATE_DEPTH']} levels of nesting"
            continue
        state_json = jsoncodec.dumps(state)
        if len(state_json.encode("utf-8")) > config["MAX_STATE_BYTES"]:
            results[index] = f"State exceeds {config['MAX_STATE_BYTES']} bytes"
            continue
        writes.append(
            StateWrite(update["accountId"].lower(), update["tickerId"].lower(), state_json)
        )
        write_indexes.append(index)
    if writes:
        for index, outcome in zip(write_indexes, storage().upsert_states(bot_id, writes)):
            results[index] = outcome

    response_items = []
    for index, (update, outcome) in enumerate(zip(updates, results)):
        if isinstance(outcome, StateRow):
            response_items.append(
                {
                    "status": "success",
                    "data": state_data(outcome, update["state"]),
                    "accountId": update["accountId"],
                    "tickerId": update["tickerId"],
                }
            )
        else:
            message = outcome if isinstance(outcome, str) else outcome.value
            response_items.append(item_error(update, index, message))
    failures = Counter(item["error"] for item in response_items if item["status"] == "error")
    failed = sum(failures.values())
    summary = {"total": len(updates), "succeeded": len(updates) - failed, "failed": failed}
    g.summary, g.failures = summary, failures
    return jsonify(success=True, summary=summary, results=response_items)


@bp.get("/healthz", provide_automatic_options=False)
def healthz():
    """200 when the database answers a read, 503 otherwise."""
    try:
        storage().ping()
    except (StorageError, OSError) as error:
        log.error("health check failed: %s", error)
        return jsonify(status="unavailable"), 503
    return jsonify(status="ok")
