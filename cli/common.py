"""What every admin command shares: one-line errors, the storage, --json output, progress, ids and names."""

import contextlib
import json
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from operations import Refused
from operations.bots import bad_name
from schemas import MAX_PAGE_SIZE, is_uuid, is_valid_name
from storage import StorageError
from symbols import SURROGATE

PAGE_SIZE = MAX_PAGE_SIZE

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
        """Run the command, as click does, once its arguments are text; a usage error becomes one line."""
        with _one_line_usage():
            refuse_undecodable(self, ctx)
            return super().invoke(ctx)


def refuse_undecodable(command, ctx):
    """A usage error for an argument with bytes that are not UTF-8 (Python holds them as lone surrogates,
    which no database takes)."""
    for param in command.params:
        value = ctx.params.get(param.name)
        if isinstance(value, str) and SURROGATE.search(value):
            shown = param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
            raise click.UsageError(f"{shown} is not UTF-8 text", ctx)


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


def storage():
    """The storage backend of the current app, once its schema is known to be current."""
    outdated = current_app.extensions["botstate.outdated"]
    if outdated:
        raise click.ClickException(
            f"the database {current_app.extensions['botstate.storage'].location}"
            " needs an upgrade to this version of botstate"
            f" ({', '.join(outdated)}): stop the server that uses it, then run `botstate init-db`"
            " (or start the new server, which upgrades it)"
        )
    return current_app.extensions["botstate.storage"]


def emit(as_json, value, text):
    """Print `value` as JSON, or the friendly `text`."""
    click.echo(json.dumps(value) if as_json else text)


@contextlib.contextmanager
def storage_errors():
    """Turn storage failures and refused operations into one-line CLI errors."""
    try:
        yield
    except (StorageError, Refused) as error:
        raise click.ClickException(str(error)) from None


def every_page(list_page):
    """Every row that list_page(limit, after) gives, a page at a time, as one list (the CLI prints them all)."""
    rows, after = list_page(PAGE_SIZE, None)
    while after is not None:
        page, after = list_page(PAGE_SIZE, after)
        rows.extend(page)
    return rows


def existing_bot(database, slug):
    """The bot `slug` of `database`, or the one-line error that it does not exist."""
    bot = database.get_bot(slug)
    if bot is None:
        raise click.ClickException(f"Bot {slug!r} not found")
    return bot


def confirmed(yes, as_json, refusal, question):
    """Go on only with --yes, or once the user says yes on a terminal; else the one-line `refusal`."""
    if yes:
        return
    if as_json or not sys.stdin.isatty():
        raise click.ClickException(refusal)
    click.confirm(question, abort=True, err=True)


def canonical_uuid(value, what):
    """The lowercase form of a UUID option, or a clear usage error."""
    if not is_uuid(value):
        raise click.ClickException(f"{what}: {value!r} is not a UUID like 550e8400-e29b-41d4-a716-446655440000")
    return value.lower()


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
