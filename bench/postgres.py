"""The PostgreSQL part of `make bench`: throwaway databases on a server, and what the server is."""

import secrets
from urllib.parse import urlsplit


def postgres_database(server_url, cleanup):
    """Settings for a fresh database on `server_url`'s server, dropped when `cleanup` (an ExitStack) closes."""
    import psycopg  # only a run with a server needs it

    name = f"botstate_bench_{secrets.token_hex(6)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    cleanup.callback(drop_postgres_database, server_url, name)
    return {"DATABASE_URL": urlsplit(server_url)._replace(path=f"/{name}").geturl()}


def drop_postgres_database(server_url, name):
    """Drop a database that postgres_database made, whoever is still connected to it."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_server(server_url):
    """How the server is set up, for the line under the table: its version and whether it syncs to disk."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        fsync = conn.execute("SHOW fsync").fetchone()[0]
        synchronous = conn.execute("SHOW synchronous_commit").fetchone()[0]
    return f"PostgreSQL {version}, fsync {fsync}, synchronous_commit {synchronous}"
