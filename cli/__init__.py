"""Admin commands: `botstate init-db` and `botstate bots|accounts|tickers|states|db|admin-keys ...`."""

from cli.admin_keys import admin_keys
from cli.bots import bots
from cli.catalog import accounts, tickers
from cli.database import db, init_db
from cli.states import states

# In the order `botstate --help` lists them, after serve.
COMMANDS = (init_db, bots, accounts, tickers, states, db, admin_keys)


def register_commands(app):
    """Add the admin command groups to `flask`."""
    for command in COMMANDS:
        app.cli.add_command(command)
