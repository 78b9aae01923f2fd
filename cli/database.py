"""`botstate db backup|restore` and `botstate init-db`: the database file itself."""

import os
import time

import click
from flask import current_app
from flask.cli import with_appcontext

from cli.common import OneLineCommand, OneLineGroup, emit, json_option, storage, storage_errors

db = OneLineGroup("db", help="Back up the live database, and restore a backup.")


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
    """Replace the database's content with the backup at PATH (made by `botstate db backup`).

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
