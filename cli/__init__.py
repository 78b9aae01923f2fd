"""Admin commands: `flask bots|accounts|tickers|states|db ...` and `flask init-db`."""

from cli.bots import bots
from cli.catalog import accounts, tickers
from cli.database import db, init_db
from cli.states import states


def register_commands(app):
    """Add the admin command groups to `flask`."""
    for command in (bots, accounts, tickers, states, db, init_db):
        app.cli.add_command(command)
