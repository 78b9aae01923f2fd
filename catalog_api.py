"""The catalog a bot can read with any of its keys: the tickers (by symbol) and accounts it writes states for."""

from flask import Blueprint

from admin_api import page, query
from admin_schemas import AccountsQuerySchema, TickersQuerySchema
from auth import bot_endpoint, storage
from operations import catalog

bp = Blueprint("catalog", __name__)

ACCOUNTS_QUERY = AccountsQuerySchema()
TICKERS_QUERY = TickersQuerySchema()


@bp.get("/api/bots/<slug>/tickers", provide_automatic_options=False)
@bot_endpoint
def list_tickers(bot):
    """A page of the registered tickers by symbol; with symbol, that one only (to resolve a symbol to its id)."""
    loaded = query(TICKERS_QUERY)
    rows, after = bot.call(
        lambda credentials: catalog.list_tickers(
            storage(), loaded["limit"], loaded.get("cursor"), loaded.get("symbol"), credentials=credentials
        )
    )
    return page("tickers", rows, after)


@bp.get("/api/bots/<slug>/accounts", provide_automatic_options=False)
@bot_endpoint
def list_accounts(bot):
    """A page of the registered accounts by id."""
    loaded = query(ACCOUNTS_QUERY)
    rows, after = bot.call(
        lambda credentials: catalog.list_accounts(
            storage(), loaded["limit"], loaded.get("cursor"), credentials=credentials
        )
    )
    return page("accounts", rows, after)
