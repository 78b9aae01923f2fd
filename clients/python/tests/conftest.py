"""Fixtures: a real botstate server per test session (and a rate-limited one), a new bot per test, clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from botstate_client import Client

from .botstate_server import Bot, Server, new_ids, start_server

# The ids the spec's examples name, registered so that README.md's examples run as they are written.
SPEC_ACCOUNTS = ["550e8400-e29b-41d4-a716-446655440000", "550e8400-e29b-41d4-a716-446655440001"]
SPEC_TICKERS = ["222e4567-e89b-12d3-a456-426614174002", "444e4567-e89b-12d3-a456-426614174004"]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server most tests share: 400 x 50 registered pairs, a short busy timeout, 1 MiB bodies at most."""
    folder = tmp_path_factory.mktemp("botstate")
    accounts, tickers = new_ids(400), new_ids(50)
    settings = {"BUSY_TIMEOUT_MS": "200", "MAX_BODY_BYTES": "1048576"}
    running = start_server(folder, accounts + SPEC_ACCOUNTS, tickers + SPEC_TICKERS, **settings)
    running.accounts, running.tickers = accounts, tickers  # take() leaves the spec's ids to the README
    yield running
    running.stop()


@pytest.fixture(scope="session")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that lets each bot make 4 requests a second, with two threads a worker (so a request
    that lands on the worker of one still waiting runs beside it)."""
    running = start_server(
        tmp_path_factory.mktemp("limited"), new_ids(10), new_ids(2), RATE_LIMIT="4/second", THREADS="2"
    )
    yield running
    running.stop()


@pytest.fixture(scope="session")
def bot(server: Server) -> Bot:
    """The bot most tests share; each writes pairs of its own (`server.take`)."""
    return server.new_bot("shared-bot")


@pytest.fixture
def client(server: Server, bot: Bot) -> Iterator[Client]:
    """A client of the shared bot, with a 10 s retry deadline."""
    with Client(server.url, bot.slug, bot.key, retry_deadline=10) as opened:
        yield opened


@pytest.fixture
def own_client(server: Server) -> Iterator[Client]:
    """A client of a new bot, for tests that list every row or change of their bot."""
    made = server.new_bot()
    with Client(server.url, made.slug, made.key, retry_deadline=10) as opened:
        yield opened
