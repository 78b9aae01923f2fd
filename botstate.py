"""The `botstate` command: serve, init-db and the admin groups, from any folder, with --env-file and --version."""

import errno
import os
import re
import sys

import click
from flask.cli import ScriptInfo

import envfile
from cli import COMMANDS
from cli.common import OneLineCommand, OneLineUsage
from config import INT_RANGES, WORKERS_RANGE
from version import VERSION


class BotstateGroup(OneLineUsage, click.Group):
    """botstate's commands, in the order a newcomer meets them; usage errors on one line."""

    def list_commands(self, ctx):
        """serve first, then init-db, then the admin groups."""
        return list(self.commands)

    def main(self, *args, prog_name=None, complete_var=None, **kwargs):
        """Run as `botstate` however it was started (console script, single file, `python -m`),
        so that usage lines, hints and shell completion all name the command the docs name."""
        complete_var = complete_var or "_BOTSTATE_COMPLETE"
        try:
            return super().main(*args, prog_name=prog_name or "botstate", complete_var=complete_var, **kwargs)
        except OSError as error:
            # Every other error a command meets is told in its own words before it gets here.
            if error.errno not in OUTPUT_ERRNOS:
                raise
            output_failed(error)
        finally:
            try:
                sys.stdout.flush()
            except OSError as error:
                output_failed(error)


# What writing the output meets when it goes to a full disk or a file past its size limit.
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def output_failed(error):
    """Say in one line that the output could not be written, and exit 1."""
    # What the failed write left would fail again at exit, with Python's own traceback.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    print(f"botstate: cannot write its output: {error.strerror}", file=sys.stderr)
    sys.exit(1)


# The admin commands that may make the database they act on; every other one refuses a SQLite
# file that does not exist (one made by mistake would be a database no server reads). Each but
# init-db names its database on stderr first, unless it prints --json.
MAKE_THE_DATABASE = ("init-db", "restore")


def app_closed_with(ctx):
    """A factory of the app the admin commands use, configured from the environment; its
    storage is closed when the command ends (SQLite's WAL folded in then, not at the
    interpreter's teardown)."""

    def create_app():
        from app import create_app as create

        command = click.get_current_context()  # the admin command that asks for the app
        app = create(existing_only=command.command.name not in MAKE_THE_DATABASE)
        if command.command.name != "init-db" and not command.params.get("as_json"):  # init-db's answer names it
            click.echo(f"botstate: database {app.extensions['botstate.storage'].location}", err=True)
        ctx.call_on_close(app.extensions["botstate.storage"].close)
        return app

    return create_app


@click.group("botstate", cls=BotstateGroup)
@click.version_option(VERSION, "--version", prog_name="botstate", message="%(prog)s %(version)s")
@click.option(
    "--env-file",
    metavar="FILE",
    help="Read settings from FILE (systemd EnvironmentFile syntax) first; the environment wins over it.",
)
@click.pass_context
def main(ctx, env_file):
    """botstate keeps trading bots' state: one JSON document per (account, ticker), over HTTP.

    Settings come from BOTSTATE_* environment variables (docs/configuration.md).
    """
    if env_file is not None:
        try:
            warnings = envfile.load(env_file)
        except envfile.EnvFileError as error:
            raise click.ClickException(f"--env-file {env_file}: {error}") from None
        for warning in warnings:
            click.echo(f"botstate: warning: --env-file {env_file} {warning}", err=True)
    # The admin groups are Flask command groups: they find the app through this (a test gives its own).
    if not isinstance(ctx.obj, ScriptInfo):
        ctx.obj = ScriptInfo(create_app=app_closed_with(ctx), set_debug_flag=False, load_dotenv_defaults=False)


class Integer(click.IntRange):
    """An integer in a range, named so in click's messages ("'http' is not a valid integer")."""

    name = "integer"


class CountOrAuto(click.ParamType):
    """auto, or an integer from low to high (plain digits): an option for a setting that takes both."""

    name = "count"

    def __init__(self, low, high):
        self.low, self.high = low, high

    def convert(self, value, param, ctx):
        """The value as its BOTSTATE_* setting takes it, or click's usage error."""
        text = str(value).strip()
        if text.lower() == "auto":
            return "auto"
        if re.fullmatch(r"[0-9]+", text) and self.low <= int(text) <= self.high:
            return text
        self.fail(f"{value!r} is not auto or an integer from {self.low} to {self.high}", param, ctx)


@main.command(cls=OneLineCommand)
@click.option("--host", help="Listen on this address instead of BOTSTATE_HOST.")
@click.option("--port", type=Integer(*INT_RANGES["PORT"]), help="Listen on this port instead of BOTSTATE_PORT.")
@click.option(
    "--threads",
    type=CountOrAuto(*INT_RANGES["THREADS"]),
    metavar="N|auto",
    help="Serve with this many threads per process instead of BOTSTATE_THREADS (auto: 4 alone, 1 per worker).",
)
@click.option(
    "--workers",
    type=CountOrAuto(*WORKERS_RANGE),
    metavar="N|auto",
    help="Serve from this many processes instead of BOTSTATE_WORKERS (auto: one per CPU, at most 4).",
)
def serve(host, port, threads, workers):
    """Serve the API with waitress until Ctrl-C or SIGTERM."""
    for name, value in (("HOST", host), ("PORT", port), ("THREADS", threads), ("WORKERS", workers)):
        if value is not None:
            os.environ[f"BOTSTATE_{name}"] = str(value)  # the host is checked as the setting is
    import serve as server

    server.main()


for admin_command in COMMANDS:
    main.add_command(admin_command)


if __name__ == "__main__":
    sys.exit(main())
