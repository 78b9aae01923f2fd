"""Admin commands: `flask bots|accounts|tickers ...` and `flask init-db`."""

import contextlib
import csv
import io
import json
import os
import sys
import time
import uuid

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

import clock
import jsoncodec
import keys
from api import row_json
from schemas import (
    MAX_NAME_LENGTH,
    MAX_SLUG_LENGTH,
    MAX_SYMBOL_LENGTH,
    is_uuid,
    is_valid_bot_slug,
    is_valid_name,
    is_valid_symbol,
)
from storage import TRANSFER_KINDS, StorageError
from transfer import BadRecord, dump_record, parse_record

IMPORT_BATCH = 500
# `flask states show`: rows shown by default, and characters of each state.
SHOW_LIMIT = 100
STATE_WIDTH = 60
MAX_GRACE_SECONDS = 30 * 24 * 3600

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON value on stdout and nothing else.")


class OneLineUsageError(click.UsageError):
    """A usage error that shows as one `Error: ...` line, like every other error of the CLI."""

    def show(self, file=None):
        """Print `Error: <message>` alone, without click's usage and hint lines."""
        click.ClickException.show(self, file)


def one_line_usage_error(error):
    """A UsageError's message on one line, ending with where the command's help is."""
    message = " ".join(error.format_message().splitlines())
    ctx = error.ctx
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        message = message if message.endswith((".", "?", "!")) else f"{message}."
        message += f" Try '{ctx.command_path} --help' for help."
    return OneLineUsageError(message, ctx)


class OneLineUsage:
    """Mixin for click commands and groups: their usage errors, and those of every command
    under them, show as one line (parsing happens in make_context, subcommands in invoke)."""

    def make_context(self, *args, **kwargs):
        """Parse the command line, as click does; a usage error becomes one line."""
        with _one_line_usage():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        """Run the command, as click does; a usage error becomes one line."""
        with _one_line_usage():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line_usage():
    try:
        yield
    except (OneLineUsageError, click.exceptions.NoArgsIsHelpError):  # the latter shows help, on purpose
        raise
    except click.UsageError as error:
        raise one_line_usage_error(error) from None


class OneLineCommand(OneLineUsage, click.Command):
    """A click command whose usage errors are one line."""


class OneLineGroup(OneLineUsage, AppGroup):
    """A Flask command group whose usage errors, and its commands', are one line."""

    command_class = OneLineCommand


bots = OneLineGroup("bots", help="Create, list, re-key and delete bots.")
accounts = OneLineGroup("accounts", help="Register user broker accounts that bots keep state for.")
tickers = OneLineGroup("tickers", help="Register tickers that bots keep state for.")
db = OneLineGroup("db", help="Back up the live database, and restore a backup.")
states = OneLineGroup("states", help="Export every row to JSON Lines, and import such a file (to move databases).")


def storage():
    """The storage backend of the current app, once its schema is known to be current."""
    outdated = current_app.extensions["botstate.outdated"]
    if outdated:
        raise click.ClickException(
            f"the database {current_app.extensions['botstate.storage'].location}"
            " needs an upgrade to this version of botstate"
            f" ({', '.join(outdated)}): stop the server that uses it, then run `flask init-db`"
            " (or start the new server, which upgrades it)"
        )
    return current_app.extensions["botstate.storage"]


def emit(as_json, value, text):
    """Print `value` as JSON, or the friendly `text`."""
    click.echo(json.dumps(value) if as_json else text)


@contextlib.contextmanager
def storage_errors():
    """Turn storage failures into one-line CLI errors."""
    try:
        yield
    except StorageError as error:
        raise click.ClickException(str(error)) from None


def canonical_uuid(value, what):
    """The lowercase form of a UUID option, or a clear usage error."""
    if not is_uuid(value):
        raise click.ClickException(f"{what}: {value!r} is not a UUID like 550e8400-e29b-41d4-a716-446655440000")
    return value.lower()


def bad_name(name):
    """Why a name is refused."""
    return f"name {name[:40]!r} must be 1 to {MAX_NAME_LENGTH} characters without control characters"


def check_name(name):
    """A usage error unless `name` (None or empty: none given) is a valid display name."""
    if name and not is_valid_name(name):
        raise click.ClickException(bad_name(name))


def progress(length, label, enabled):
    """A progress bar on stderr when it is a terminal, else a silent stand-in."""
    if enabled and sys.stderr.isatty():
        return click.progressbar(length=length, label=label, file=sys.stderr)
    return contextlib.nullcontext(_NoProgress())


class _NoProgress:
    def update(self, steps):
        pass


def file_label(file):
    """How to name an input file in an error message."""
    return getattr(file, "name", None) or "<stdin>"


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


# bots


@bots.command("create")
@click.argument("slug")
@click.option("--name", help="A display name (default: the slug).")
@json_option
def bots_create(slug, name, as_json):
    """Create a bot and print its API key (shown only this once)."""
    if not is_valid_bot_slug(slug):
        raise click.ClickException(
            f"invalid slug {slug[:MAX_SLUG_LENGTH]!r}: use only letters, digits, hyphens and underscores"
            f" (at most {MAX_SLUG_LENGTH})"
        )
    check_name(name)
    api_key = keys.generate_key()
    with storage_errors():
        bot = storage().create_bot(slug, name or slug, keys.hash_key(api_key))
    emit(
        as_json,
        {"id": bot["id"], "slug": bot["slug"], "name": bot["name"], "apiKey": api_key},
        f"Created bot '{bot['slug']}' (id {bot['id']}).\n"
        f"API key: {api_key}\n"
        "Store it now: only its hash is kept, so it cannot be shown again.",
    )


@bots.command("list")
@json_option
def bots_list(as_json):
    """List bots with their number of stored states."""
    with storage_errors():
        rows = storage().list_bots()
    lines = [f"{r['slug']}\t{r['name']}\t{r['states']} states\t{r['id']}" for r in rows]
    emit(as_json, rows, "\n".join(lines) if lines else "No bots yet. Create one with: flask bots create SLUG")


@bots.command("rotate-key")
@click.argument("slug")
@click.option(
    "--grace",
    type=click.IntRange(0, MAX_GRACE_SECONDS),
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="How long the old key keeps working beside the new one (0: it stops at once).",
)
@json_option
def bots_rotate_key(slug, grace, as_json):
    """Give a bot a new API key; the old one stops at once, or after --grace seconds."""
    api_key = keys.generate_key()
    with storage_errors():
        bot = storage().replace_bot_key(slug, keys.hash_key(api_key), grace_seconds=grace)
    expires_at = bot["oldKeysExpireAt"]
    if expires_at is None:
        old_keys = "The old key no longer works."
    else:
        old_keys = f"The old key keeps working until {expires_at}; `flask bots revoke-key {slug}` stops it sooner."
    emit(
        as_json,
        {
            "id": bot["id"],
            "slug": bot["slug"],
            "name": bot["name"],
            "apiKey": api_key,
            "oldKeysExpireAt": expires_at,
        },
        f"New API key for '{bot['slug']}': {api_key}\n{old_keys}",
    )


@bots.command("revoke-key")
@click.argument("slug")
@click.option(
    "--all", "every", is_flag=True, help="Revoke the current key too: the bot is locked out until rotate-key."
)
@json_option
def bots_revoke_key(slug, every, as_json):
    """Stop a bot's old keys at once, ending their --grace period (with --all, every key)."""
    with storage_errors():
        revoked = storage().revoke_bot_keys(slug, every=every)
    if every:
        text = (
            f"Revoked {revoked} key(s) of '{slug}': every request gets 403 until"
            f" `flask bots rotate-key {slug}` gives it a new key."
        )
    elif revoked:
        text = f"Revoked {revoked} old key(s) of '{slug}': only its newest key works."
    else:
        text = f"'{slug}' has no old keys in a grace period: nothing revoked."
    emit(as_json, {"slug": slug, "revoked": revoked}, text)


@bots.command("keys")
@click.argument("slug")
@json_option
def bots_keys(slug, as_json):
    """List a bot's working keys: fingerprint, created, expires and last used."""
    with storage_errors():
        rows = storage().list_bot_keys(slug)
    lines = [
        f"{r['fingerprint']}\tcreated {r['createdAt']}\texpires {r['expiresAt'] or 'never'}"
        f"\tlast used {r['lastUsedAt'] or 'never'}"
        for r in rows
    ]
    if not lines:
        lines = [f"'{slug}' has no working key. Give it one with: flask bots rotate-key {slug}"]
    emit(as_json, rows, "\n".join(lines))


@bots.command("delete")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Confirm: the bot and all its states are deleted.")
@json_option
def bots_delete(slug, yes, as_json):
    """Delete a bot and every state it stored."""
    with storage_errors():
        bot = storage().get_bot(slug)
        if bot is None:
            raise click.ClickException(f"Bot {slug!r} not found")
        if not yes:
            if as_json or not sys.stdin.isatty():
                raise click.ClickException(
                    f"Deleting bot {slug!r} also deletes its {bot['states']} states: add --yes to confirm"
                )
            click.confirm(f"Delete bot '{slug}' and its {bot['states']} states?", abort=True, err=True)
        storage().delete_bot(slug)
    emit(
        as_json,
        {"id": bot["id"], "slug": bot["slug"], "deletedStates": bot["states"]},
        f"Deleted bot '{slug}' and its {bot['states']} states.",
    )


# accounts


@accounts.command("add")
@click.option("--id", "account_id", help="The account's UUID (default: a new one).")
@click.option("--name", help="A name to recognize the account by.")
@json_option
def accounts_add(account_id, name, as_json):
    """Register one user broker account."""
    account_id = str(uuid.uuid4()) if account_id is None else canonical_uuid(account_id, "--id")
    check_name(name)
    with storage_errors():
        account = storage().add_account(account_id, name)
    emit(as_json, account, f"Added account {account_id}" + (f" ({name})" if name else ""))


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
        rows = storage().list_accounts()
    lines = [f"{r['id']}\t{r['name'] or ''}" for r in rows]
    emit(as_json, rows, "\n".join(lines) if lines else "No accounts yet.")


# tickers


@tickers.command("add")
@click.argument("symbol")
@click.option("--id", "ticker_id", help="The ticker's UUID (default: a new one).")
@json_option
def tickers_add(symbol, ticker_id, as_json):
    """Register one ticker by its symbol."""
    if not is_valid_symbol(symbol):
        raise click.ClickException(
            f"invalid symbol {symbol!r}: 1 to {MAX_SYMBOL_LENGTH} characters, no spaces or commas"
        )
    ticker_id = str(uuid.uuid4()) if ticker_id is None else canonical_uuid(ticker_id, "--id")
    with storage_errors():
        ticker = storage().add_ticker(symbol, ticker_id)
    emit(as_json, ticker, f"Added ticker {symbol} ({ticker_id})")


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
        rows = storage().list_tickers()
    lines = [f"{r['symbol']}\t{r['id']}" for r in rows]
    emit(as_json, rows, "\n".join(lines) if lines else "No tickers yet.")


# states


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
    """Make the rows of FILE (from `flask states export`) exist exactly as it says.

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
        bot = database.get_bot(slug)
        if bot is None:
            raise click.ClickException(f"Bot {slug!r} not found")
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
    widths = [max(len(line[column]) for line in table) for column in range(4)]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[4])
    if more:
        click.echo(f"(first {limit} rows; --limit shows more)", err=True)


def _ticker_named(ticker, symbols):
    """The id of a ticker given by UUID or by symbol, or a usage error."""
    if is_uuid(ticker):
        return ticker.lower()
    for ticker_id, symbol in symbols.items():
        if symbol == ticker:
            return ticker_id
    raise click.ClickException(f"--ticker: no ticker {ticker!r} (give its symbol or UUID; see `flask tickers list`)")


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


# database


@db.command("backup")
@click.argument("path", type=click.Path(dir_okay=False))
@json_option
def db_backup(path, as_json):
    """Copy the live database to PATH, a new file: consistent even while the server writes."""
    if os.path.exists(path):
        raise click.ClickException(f"{path} exists: give a new file name (a backup never overwrites)")
    started = time.monotonic()
    with storage_errors():
        storage().backup(path)
    size, seconds = os.path.getsize(path), time.monotonic() - started
    emit(
        as_json,
        {"backup": path, "bytes": size, "seconds": round(seconds, 3)},
        f"Backed up to {path} ({size:,} bytes in {seconds:.1f} s; integrity_check ok).",
    )


@db.command("restore")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--force", is_flag=True, help="Restore even though a server is running on the database.")
@json_option
def db_restore(path, force, as_json):
    """Replace the database's content with the backup at PATH (made by `flask db backup`).

    Stop the server first: with a server running it refuses, unless --force.
    """
    database = storage()
    under_a_server = database.servers_running()
    if under_a_server and not force:
        raise click.ClickException(
            f"a botstate server is running on {database.location}: stop it first (or pass --force to restore under it)"
        )

    def warn():
        click.echo(
            f"Warning: restoring under a running server. From its next request it serves the backup's"
            f" data, and every write it acknowledged since {path} was made is gone.",
            err=True,
        )

    with storage_errors():  # the warning comes once PATH is known to be a backup it will restore
        applied = database.restore(path, before_copy=warn if under_a_server else None)
    emit(as_json, {"restored": path, "applied": applied}, f"Restored {database.location} from {path}.")


# init-db


@click.command("init-db", cls=OneLineCommand)
@json_option
@with_appcontext
def init_db(as_json):
    """Create the database or upgrade its schema (safe to run any time)."""
    database = current_app.extensions["botstate.storage"]
    with storage_errors():
        applied = current_app.extensions["botstate.migrated"] or database.migrate()
        version = database.schema_version()
    path = database.location
    text = f"Database ready at {path} (schema {version[-1]})"
    if applied:
        text += f"; applied {', '.join(applied)}"
    emit(as_json, {"database": path, "schema": version[-1], "applied": applied}, text)


def register_commands(app):
    """Add the admin command groups to `flask`."""
    for command in (bots, accounts, tickers, states, db, init_db):
        app.cli.add_command(command)
