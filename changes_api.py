"""The HTTP API of a bot's past: its change feed and a row's history (as-of reads are in api.py)."""

from flask import Blueprint, jsonify, request

from api import load_params, state_key, state_not_found
from auth import bot_endpoint, storage
from change_schemas import ChangesQuerySchema, HistoryQuerySchema
from errors import APIError
from storage import ChangesAhead, ChangesGone
from views import change_json

bp = Blueprint("changes", __name__)

CHANGES_QUERY = ChangesQuerySchema()
HISTORY_QUERY = HistoryQuerySchema()


@bp.get("/api/bots/<slug>/changes", provide_automatic_options=False)
@bot_endpoint
def list_changes(bot):
    """The bot's changes after `after`, oldest first; store nextAfter and poll from it to see each once."""
    query = load_params(CHANGES_QUERY, request.args.to_dict(flat=True))
    try:
        changes, next_after = bot.call(
            storage().list_changes,
            query["after"],
            query["limit"],
            account_id=query.get("accountId"),
            ticker_id=query.get("tickerId"),
        )
    except ChangesGone as gone:
        raise APIError(
            410, f"Changes up to seq {gone.pruned_seq} are no longer kept; list the states to resync", "GONE"
        ) from None
    except ChangesAhead as ahead:
        raise APIError(410, f"No change has a seq past {ahead.largest}; list the states to resync", "GONE") from None
    return jsonify(data=[change_json(change) for change in changes], nextAfter=next_after)


@bp.get("/api/bots/<slug>/state/<account_id>/<ticker_id>/history", provide_automatic_options=False)
@bot_endpoint
def state_history(bot, account_id, ticker_id):
    """The row's kept versions, newest first, with its delete first when it was deleted."""
    key = state_key(account_id, ticker_id)
    query = load_params(HISTORY_QUERY, request.args.to_dict(flat=True))
    changes, next_before = bot.call(own_history, key, query)
    if not changes and query.get("before") is None:
        raise state_not_found()
    return jsonify(data=[change_json(change) for change in changes], nextBefore=next_before)


def own_history(credentials, key, query):
    """storage.state_history() of the bot's row, while its key works."""
    return storage().state_history(None, *key, query["limit"], before=query.get("before"), credentials=credentials)
