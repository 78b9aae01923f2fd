"""`botstate states`: show a bot's states, export every row to JSON Lines and import such a file."""

import contextlib
import os
import sys
import time

import click

import clock
import jsoncodec
from cli.common import (
    OneLineGroup,
    canonical_uuid,
    emit,
    existing_bot,
    file_label,
    json_option,
    progress,
    storage,
    storage_errors,
)
from schemas import is_uuid
from storage import TRANSFER_KINDS
from transfer import BadRecord, dump_record, parse_record
from views import change_json, row_json

# `botstate states show`: rows shown by default, and characters of each state.
SHOW_LIMIT = 100
STATE_WIDTH = 60

states = OneLineGroup("states", help="Show states and a row's history; export and import rows as JSON Lines.")


@states.command("export")
@click.option(
    "--output",
    "-o",
    default="-",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="The file to write (default: standard output).",
)
@json_option
def states_export(output, as_json):
    """Write every bot, key hash, account, ticker and state row as JSON Lines.

    One consistent snapshot, taken while the server may go on writing. The file
    holds the bots' key hashes (never the keys): keep it as private as the database.
    With --json (and --output), print what was exported as one JSON value.
    """
    if as_json and output == "-":
        raise click.UsageError("--json needs --output FILE: standard output carries the rows")
    database = storage()
    counts = dict.fromkeys(TRANSFER_KINDS, 0)
    with (
        storage_errors(),
        _output(output) as out,
        progress(database.count_states(), "Exporting states", not as_json) as bar,
        contextlib.closing(database.export_records()) as records,
    ):
        for kind, record in records:
            out.write(dump_record(kind, record))
            counts[kind] += 1
            if kind == "state":
                bar.update(1)
    if as_json:
        emit(True, {"exported": counts, "total": sum(counts.values()), "file": output}, "")
    else:
        click.echo(f"Exported {_counted(counts)} to {'standard output' if output == '-' else output}.", err=True)


@contextlib.contextmanager
def _output(path):
    """Standard output, or a new private file that replaces `path` only once complete."""
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.flush()
        return
    partial = f"{path}.partial"
    try:
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            yield out
        os.replace(partial, path)
    except OSError as error:
        raise click.ClickException(f"cannot write {path}: {error.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)


def _counted(counts):
    """'3 rows (1 bot, 0 keys, ...)' for a kind -> count mapping."""
    parts = ", ".join(f"{n} {kind}{'' if n == 1 else 's'}" for kind, n in counts.items())
    return f"{sum(counts.values())} rows ({parts})"


@states.command("import")
@click.argument("file", type=click.File("rb"))
@json_option
def states_import(file, as_json):
    """Make the rows of FILE (from `botstate states export`) exist exactly as it says.

    Rows with the same key are overwritten, other rows are left alone, so running
    it twice changes nothing the second time. Every line is checked before anything
    is written, all in one transaction: an error imports nothing.
    Use - to read from standard input.
    """
    records, counts = [], dict.fromkeys(TRANSFER_KINDS, 0)
    for number, line in enumerate(file, start=1):
        if not line.strip():
            continue
        try:
            kind, record = parse_record(line)
        except BadRecord as error:
            raise click.ClickException(f"{file_label(file)} line {number}: {error}") from None
        records.append((kind, record))
        counts[kind] += 1
    with storage_errors(), progress(len(records), "Importing", not as_json) as bar:
        storage().import_records(records, on_progress=bar.update)
    emit(as_json, {"imported": counts, "total": len(records)}, f"Imported {_counted(counts)}.")


@states.command("show")
@click.argument("slug")
@click.option("--account", help="Only this account (its UUID).")
@click.option("--ticker", help="Only this ticker (its UUID or symbol).")
@click.option(
    "--limit", default=SHOW_LIMIT, show_default=True, type=click.IntRange(1, 100_000), help="Most rows to show."
)
@json_option
def states_show(slug, account, ticker, limit, as_json):
    """Show a bot's states as a table: tickers by symbol, accounts by name, age of each update."""
    database = storage()
    with storage_errors():
        bot = existing_bot(database, slug)
        symbols = {row["id"]: row["symbol"] for row in database.list_tickers()}
        names = {row["id"]: row["name"] for row in database.list_accounts()}
        account_id = None if account is None else canonical_uuid(account, "--account")
        ticker_id = None if ticker is None else _ticker_named(ticker, symbols)
        rows, more = database.list_states(
            bot["id"],
            limit,
            account_id=account_id,
            ticker_id=ticker_id,
            max_bytes=None,  # --limit alone bounds it
        )
    if as_json:
        shown = [
            {**row_json(row), "accountName": names.get(row.account_id), "tickerSymbol": symbols.get(row.ticker_id)}
            for row in rows
        ]
        click.echo(jsoncodec.dumps(shown))
        return
    if not rows:
        click.echo(f"No states for bot {slug} yet." if account is None and ticker is None else "No states match.")
        return
    now = time.time()
    table = [("ACCOUNT", "TICKER", "VERSION", "UPDATED", "STATE")] + [
        (
            names.get(row.account_id) or row.account_id,
            symbols.get(row.ticker_id, row.ticker_id),
            str(row.version),
            age(row.updated_at, now),
            _shortened(row.state_json),
        )
        for row in rows
    ]
    print_table(table)
    if more:
        click.echo(f"(first {limit} rows; --limit shows more)", err=True)


def print_table(table):
    """Rows of cells in aligned columns, the last (a state) as it is."""
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]) - 1)]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1])


def _ticker_named(ticker, symbols):
    """The id of a ticker given by UUID or by symbol, or a usage error."""
    if is_uuid(ticker):
        return ticker.lower()
    for ticker_id, symbol in symbols.items():
        if symbol == ticker:
            return ticker_id
    raise click.ClickException(f"--ticker: no ticker {ticker!r} (give its symbol or UUID; see `botstate tickers list`)")


def age(stored_time, now):
    """How long ago a stored time was: "just now", "42s ago", "5m ago", "3h ago", "2d ago"."""
    seconds = int(now - clock.parse_stored_time(stored_time).timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return "just now"


def _shortened(state_json, width=STATE_WIDTH):
    """The state's JSON, cut to `width` characters."""
    return state_json if len(state_json) <= width else state_json[: width - 1] + "…"


@states.command("history")
@click.argument("slug")
@click.option("--account", required=True, help="The row's account (its UUID).")
@click.option("--ticker", required=True, help="The row's ticker (its UUID or symbol).")
@click.option(
    "--limit", default=SHOW_LIMIT, show_default=True, type=click.IntRange(1, 1000), help="Show at most this many."
)
@json_option
def states_history(slug, account, ticker, limit, as_json):
    """Show a row's kept versions, newest first, with its delete first when it was deleted."""
    database = storage()
    with storage_errors():
        bot = existing_bot(database, slug)
        account_id = canonical_uuid(account, "--account")
        ticker_id = _ticker_named(ticker, {row["id"]: row["symbol"] for row in database.list_tickers()})
        changes, more = database.state_history(bot["id"], account_id, ticker_id, limit)
    if as_json:
        click.echo(jsoncodec.dumps([change_json(change) for change in changes]))
        return
    if not changes:
        click.echo(f"No history for that row of bot {slug}.")
        return
    now = time.time()
    table = [("SEQ", "OP", "VERSION", "AT", "STATE")] + [
        (str(c.seq), c.op, str(c.version), age(c.at, now), "" if c.state_json is None else _shortened(c.state_json))
        for c in changes
    ]
    print_table(table)
    if more is not None:
        click.echo(f"(newest {limit} versions; --limit shows more)", err=True)
