"""Accounts and tickers: register up to MAX_REGISTER at once, list them a page at a time, delete them."""

import uuid

from operations import Refused, page_after, refusing
from operations.bots import bad_name
from schemas import is_uuid, is_valid_name
from storage import Registered
from symbols import SYMBOL_RULE, is_valid_symbol

MAX_REGISTER = 1000


def register_accounts(storage, items):
    """Register accounts ({"id"?, "name"?} each; no id: a new one): the spec's bulk answer, one result per item."""
    rows = [_account_row(index, item) for index, item in enumerate(_items("accounts", items))]
    return _answer(storage.register_accounts(rows))


def register_tickers(storage, items):
    """Register tickers ({"symbol", "id"?} each; no id: a new one): the spec's bulk answer, one result per item."""
    rows = [_ticker_row(index, item) for index, item in enumerate(_items("tickers", items))]
    return _answer(storage.register_tickers(rows))


def _items(kind, items):
    if not isinstance(items, list):
        raise Refused(400, f"{kind} must be an array")
    if not items:
        raise Refused(400, f"{kind} array cannot be empty")
    if len(items) > MAX_REGISTER:
        raise Refused(400, f"{kind} array cannot contain more than {MAX_REGISTER} items")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Refused(400, f"{kind}[{index}] must be an object")
    return items


def _account_row(index, item):
    account_id = _optional_uuid(f"accounts[{index}].id", item.get("id"))
    name = item.get("name")
    if name is not None and not (isinstance(name, str) and is_valid_name(name)):
        raise Refused(400, f"accounts[{index}].{bad_name(name if isinstance(name, str) else repr(name))}")
    return account_id or str(uuid.uuid4()), name


def _ticker_row(index, item):
    symbol = item.get("symbol")
    if not isinstance(symbol, str) or not is_valid_symbol(symbol):
        raise Refused(
            400,
            f"tickers[{index}].symbol is required: {SYMBOL_RULE}",
        )
    return symbol, _optional_uuid(f"tickers[{index}].id", item.get("id"))


def _optional_uuid(field, value):
    if value is None:
        return None
    if not is_uuid(value):
        raise Refused(400, f"{field} must be a valid UUID")
    return value.lower()


def _answer(outcomes):
    """The spec's bulk answer: success, summary, and per item its status, index, data or error."""
    results = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, Registered):
            results.append({"status": "success", "index": index, "created": outcome.created, "data": outcome.record})
        else:
            results.append({"status": "error", "index": index, "error": outcome.message, "code": outcome.code})
    failed = sum(result["status"] == "error" for result in results)
    return {
        "success": True,
        "summary": {"total": len(results), "succeeded": len(results) - failed, "failed": failed},
        "results": results,
    }


def list_accounts(storage, limit, after=None, credentials=None):
    """A page of accounts by id, and the id to list after next (None: the last)."""
    rows, more = storage.page_accounts(limit, after, credentials=credentials)
    return rows, page_after(rows, more, "id")


def list_tickers(storage, limit, after=None, symbol=None, credentials=None):
    """A page of tickers by symbol (only `symbol`'s, when given), and the symbol to list after next (None: the last)."""
    rows, more = storage.page_tickers(limit, after, symbol=symbol, credentials=credentials)
    return rows, page_after(rows, more, "symbol")


def get_account(storage, account_id):
    """The account, with its number of states (of every bot); Refused (404) when there is none."""
    account = storage.get_account(account_id)
    if account is None:
        raise Refused(404, f"Account {account_id} not found")
    return account


def get_ticker(storage, ticker_id):
    """The ticker, with its number of states (of every bot); Refused (404) when there is none."""
    ticker = storage.get_ticker(ticker_id)
    if ticker is None:
        raise Refused(404, f"Ticker {ticker_id} not found")
    return ticker


def delete_account(storage, account_id):
    """Delete the account and every bot's states of it: the account as it was, with deletedStates."""
    if not is_uuid(account_id):
        raise Refused(400, "id must be a valid UUID")
    with refusing():
        return storage.delete_account(account_id.lower())


def delete_ticker(storage, ticker_id):
    """Delete the ticker and every bot's states of it: the ticker as it was, with deletedStates."""
    if not is_uuid(ticker_id):
        raise Refused(400, "id must be a valid UUID")
    with refusing():
        return storage.delete_ticker(ticker_id.lower())
