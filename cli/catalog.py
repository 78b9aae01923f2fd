"""`botstate accounts` and `botstate tickers`: register them one at a time or from a file, list and delete them."""

import csv
import io

import click

from cli.common import (
    OneLineGroup,
    canonical_uuid,
    check_name,
    confirmed,
    emit,
    every_page,
    file_label,
    json_option,
    progress,
    storage,
    storage_errors,
)
from operations import catalog as operations
from operations.bots import bad_name
from schemas import is_uuid, is_valid_name
from symbols import SYMBOL_RULE, is_valid_symbol

IMPORT_BATCH = 500

accounts = OneLineGroup("accounts", help="Register user broker accounts that bots keep state for.")
tickers = OneLineGroup("tickers", help="Register tickers that bots keep state for.")


def csv_records(text):
    """(number of the line it starts on, cells) for each record of CSV text; a quoted
    cell may span lines, so records and lines are counted apart."""
    reader = csv.reader(io.StringIO(text))
    end = 0  # reader.line_num: the line where the record just read ends
    for cells in reader:
        yield end + 1, cells
        end = reader.line_num


def read_csv_rows(file):
    """(line number, cells) for each non-blank, non-comment record of a CSV file."""
    try:
        rows = list(csv_records(file.read()))
    except UnicodeDecodeError as error:
        raise click.ClickException(
            f"{file_label(file)} is not UTF-8 text (byte {error.start}): save it as UTF-8"
        ) from None
    except csv.Error as error:
        raise click.ClickException(f"{file_label(file)} is not a CSV file: {error}") from None
    for number, cells in rows:
        cells = [cell.strip() for cell in cells]
        if not any(cells) or cells[0].startswith("#"):
            continue
        yield number, cells


def batches(items, size):
    """Consecutive slices of `items` of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# accounts


@accounts.command("add")
@click.option("--id", "account_id", help="The account's UUID (default: a new one).")
@click.option("--name", help="A name to recognize the account by.")
@json_option
def accounts_add(account_id, name, as_json):
    """Register one user broker account (one already registered with that id and name is left as it is)."""
    item = {"name": name or None}
    if account_id is not None:
        item["id"] = canonical_uuid(account_id, "--id")
    check_name(name)
    account, created = registered_one(operations.register_accounts, item)
    shown = account["id"] + (f" ({account['name']})" if account["name"] else "")
    emit(as_json, account, f"Added account {shown}" if created else f"Account {shown} is already registered")


def registered_one(register, item):
    """(record, whether it is new) of registering one item with `register`, or its refusal as a CLI error."""
    with storage_errors():
        [result] = register(storage(), [item])["results"]
    if result["status"] == "error":
        raise click.ClickException(result["error"])
    return result["data"], result["created"]


def delete_confirmed(what, yes, as_json, deleted_states):
    """Go on only with --yes, or once confirmed on a terminal: deleting `what` deletes its states too."""
    confirmed(
        yes,
        as_json,
        f"Deleting {what} also deletes every bot's {deleted_states} states of it: add --yes to confirm",
        f"Delete {what} and every bot's {deleted_states} states of it?",
    )


@accounts.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))
@json_option
def accounts_import(file, as_json):
    """Register accounts from FILE: one UUID per line, or CSV with an id column and optional name.

    Accounts already registered are left as they are, so running it twice is harmless.
    Use - to read from standard input.
    """
    rows = parse_accounts(file)
    added = 0
    with storage_errors(), progress(len(rows), "Importing accounts", not as_json) as bar:
        for batch in batches(rows, IMPORT_BATCH):
            added += storage().import_accounts(batch)
            bar.update(len(batch))
    result = {"added": added, "existing": len(rows) - added, "total": len(rows)}
    emit(as_json, result, f"Added {added} accounts ({result['existing']} already registered).")


def columns(file, key, optional):
    """(line number, {column: cell}) per data row: by the header row when the first row
    names `key`, else positionally as `key`, `optional`."""
    names = [key, optional]
    for position, (number, cells) in enumerate(read_csv_rows(file)):
        header = [cell.lower() for cell in cells]
        if position == 0 and key in header:
            names = header
            continue
        yield number, dict(zip(names, cells, strict=False))


def parse_accounts(file):
    """Unique (id, name) rows from an account file, or a ClickException naming the bad line."""
    rows = {}
    for number, row in columns(file, "id", "name"):
        value = row.get("id", "")
        if not is_uuid(value):
            raise click.ClickException(f"{file_label(file)} line {number}: {value!r} is not a UUID")
        name = row.get("name") or None
        if name is not None and not is_valid_name(name):
            raise click.ClickException(f"{file_label(file)} line {number}: {bad_name(name)}")
        rows.setdefault(value.lower(), name)
    return list(rows.items())


@accounts.command("list")
@json_option
def accounts_list(as_json):
    """List registered accounts."""
    with storage_errors():
        rows = every_page(lambda limit, after: operations.list_accounts(storage(), limit, after))
    lines = [f"{r['id']}\t{r['name'] or ''}" for r in rows]
    emit(as_json, rows, "\n".join(lines) if lines else "No accounts yet.")


@accounts.command("delete")
@click.argument("account_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Confirm: every bot's states of the account are deleted too.")
@json_option
def accounts_delete(account_id, yes, as_json):
    """Delete an account and every bot's states of it (each delete is in the bots' change feeds)."""
    account_id = canonical_uuid(account_id, "ID")
    with storage_errors():
        account = operations.get_account(storage(), account_id)
        delete_confirmed(f"account {account_id}", yes, as_json, account["states"])
        deleted = operations.delete_account(storage(), account_id)
    emit(as_json, deleted, f"Deleted account {account_id} and {deleted['deletedStates']} states of it.")


# tickers


@tickers.command("add")
@click.argument("symbol")
@click.option("--id", "ticker_id", help="The ticker's UUID (default: a new one).")
@json_option
def tickers_add(symbol, ticker_id, as_json):
    """Register one ticker by its symbol (one already registered with that symbol and id is left as it is)."""
    if not is_valid_symbol(symbol):
        raise click.ClickException(f"invalid symbol {symbol!r}: {SYMBOL_RULE}")
    item = {"symbol": symbol}
    if ticker_id is not None:
        item["id"] = canonical_uuid(ticker_id, "--id")
    ticker, created = registered_one(operations.register_tickers, item)
    shown = f"{ticker['symbol']} ({ticker['id']})"
    emit(as_json, ticker, f"Added ticker {shown}" if created else f"Ticker {shown} is already registered")


@tickers.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))
@json_option
def tickers_import(file, as_json):
    """Register tickers from a CSV FILE of symbol[,id] rows (a header row is optional).

    Tickers already registered with the same symbol (and id, when given) are skipped.
    Use - to read from standard input.
    """
    rows = parse_tickers(file)
    # One transaction: a conflict with a registered ticker undoes the whole import.
    with storage_errors(), progress(len(rows), "Importing tickers", not as_json) as bar:
        added = storage().import_tickers(rows, on_progress=bar.update)
    result = {"added": added, "existing": len(rows) - added, "total": len(rows)}
    emit(as_json, result, f"Added {added} tickers ({result['existing']} already registered).")


def parse_tickers(file):
    """Unique (symbol, id or None) rows from a ticker CSV, or a ClickException naming the bad line."""
    rows = {}
    for number, row in columns(file, "symbol", "id"):
        symbol = row.get("symbol", "")
        if not is_valid_symbol(symbol):
            raise click.ClickException(f"{file_label(file)} line {number}: {symbol!r} is not a ticker symbol")
        ticker_id = row.get("id") or None
        if ticker_id is not None:
            if not is_uuid(ticker_id):
                raise click.ClickException(f"{file_label(file)} line {number}: {ticker_id!r} is not a UUID")
            ticker_id = ticker_id.lower()
        if rows.get(symbol, ticker_id) != ticker_id:
            raise click.ClickException(f"{file_label(file)} line {number}: {symbol} appears twice with different ids")
        rows[symbol] = ticker_id
    return list(rows.items())


@tickers.command("list")
@json_option
def tickers_list(as_json):
    """List registered tickers."""
    with storage_errors():
        rows = every_page(lambda limit, after: operations.list_tickers(storage(), limit, after))
    lines = [f"{r['symbol']}\t{r['id']}" for r in rows]
    emit(as_json, rows, "\n".join(lines) if lines else "No tickers yet.")


@tickers.command("delete")
@click.argument("ticker")
@click.option("--yes", is_flag=True, help="Confirm: every bot's states of the ticker are deleted too.")
@json_option
def tickers_delete(ticker, yes, as_json):
    """Delete a ticker, named by its symbol or id, and every bot's states of it (each delete is in the change feeds)."""
    with storage_errors():
        if is_uuid(ticker):
            ticker_id = ticker.lower()
        else:
            found, _ = operations.list_tickers(storage(), 1, symbol=ticker)
            if not found:
                raise click.ClickException(f"Ticker {ticker!r} not found")
            ticker_id = found[0]["id"]
        found = operations.get_ticker(storage(), ticker_id)
        delete_confirmed(f"ticker {found['symbol']}", yes, as_json, found["states"])
        deleted = operations.delete_ticker(storage(), ticker_id)
    emit(as_json, deleted, f"Deleted ticker {deleted['symbol']} and {deleted['deletedStates']} states of it.")
