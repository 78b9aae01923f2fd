"""Every exception the client raises, each from a real answer of a real server (or from no answer at all)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable

import botstate_client
import pytest
from botstate_client import (
    BadRequest,
    BotNotFound,
    BotStateError,
    Client,
    Gone,
    IdempotencyConflict,
    InvalidKey,
    MissingKey,
    NetworkError,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    RequestInProgress,
    Unavailable,
    VersionConflict,
    WriteFailed,
)

from .botstate_server import Bot, Server

Case = Callable[[Server, Bot], object]
OPENED: list[Client] = []  # closed after each case


def _opened(client: Client) -> Client:
    OPENED.append(client)
    return client


def _client(server: Server, bot: Bot, *, slug: str | None = None, key: str | None = None) -> Client:
    """A client that gives up at once (retry_deadline=0), so that a retryable answer is raised."""
    slug, key = bot.slug if slug is None else slug, bot.key if key is None else key
    return _opened(Client(server.url, slug, key, retry_deadline=0))


def _one(server: Server, **state: object) -> list[dict[str, object]]:
    [(account, ticker)] = server.take(1)
    return [{"accountId": account, "tickerId": ticker, "state": dict(state)}]


def missing_key(server: Server, bot: Bot) -> object:
    return _client(server, bot, key="").write(_one(server))


def invalid_key(server: Server, bot: Bot) -> object:
    return _client(server, bot, key="bsk_not-this-bots-key").get(*server.take(1)[0])


def bot_not_found(server: Server, bot: Bot) -> object:
    return _client(server, bot, slug="no-such-bot").write(_one(server))


def bad_slug(server: Server, bot: Bot) -> object:
    return _client(server, bot, slug="not a slug!").write(_one(server))


def bad_item(server: Server, bot: Bot) -> object:
    return _client(server, bot).write([{"accountId": "nope", "tickerId": str(uuid.uuid4()), "state": {}}])


def too_large(server: Server, bot: Bot) -> object:
    return _client(server, bot).write(_one(server, blob="x" * 1_100_000))  # the server takes 1 MiB bodies


def rate_limited(server: Server, bot: Bot) -> object:
    limited = server.limited  # type: ignore[attr-defined]
    made = limited.new_bot()
    client = _opened(Client(limited.url, made.slug, made.key, retry_deadline=0))
    pair = limited.take(1)[0]
    for _ in range(10):
        client.get(*pair)
    return None


def unavailable(server: Server, bot: Bot) -> object:
    with server.locked(5):
        return _client(server, bot).write(_one(server))


def in_progress(server: Server, bot: Bot) -> object:
    # A keyed write waits for the locked database (the limited server waits 5 s for it): the same write meets it.
    limited = server.limited  # type: ignore[attr-defined]
    made = limited.new_bot()
    [(account, ticker)] = limited.take(1)
    states, key = [{"accountId": account, "tickerId": ticker, "state": {}}], str(uuid.uuid4())
    waiting = _opened(Client(limited.url, made.slug, made.key, retry_deadline=10))
    first = threading.Thread(target=waiting.write, args=(states,), kwargs={"idempotency_key": key})
    try:
        with limited.locked(5):
            first.start()
            time.sleep(0.5)
            return _opened(Client(limited.url, made.slug, made.key, retry_deadline=0)).write(
                states, idempotency_key=key
            )
    finally:
        first.join(10)


def state_not_found(server: Server, bot: Bot) -> object:
    return _client(server, bot).delete(*server.take(1)[0])


def precondition_failed(server: Server, bot: Bot) -> object:
    client = _client(server, bot)
    [item] = _one(server)
    client.write([item])
    return client.delete(str(item["accountId"]), str(item["tickerId"]), if_version=7)


def gone(server: Server, bot: Bot) -> object:
    return list(_client(server, bot).changes(after=2**62))


def idempotency_conflict(server: Server, bot: Bot) -> object:
    client, key = _client(server, bot), str(uuid.uuid4())
    client.write(_one(server, a=1), idempotency_key=key)
    return client.write(_one(server, a=2), idempotency_key=key)


def version_conflict(server: Server, bot: Bot) -> object:
    client = _client(server, bot)
    [item] = _one(server)
    state = client.state(str(item["accountId"]), str(item["tickerId"]))
    client.write([item])
    state["mine"] = True
    return state.save()


def write_failed(server: Server, bot: Bot) -> object:
    state = _client(server, bot).state(server.take(1)[0][0], str(uuid.uuid4()))
    state["x"] = 1
    return state.save()


def no_answer(server: Server, bot: Bot) -> object:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    return _opened(Client(f"http://127.0.0.1:{port}", bot.slug, bot.key, retry_deadline=0)).get(*server.take(1)[0])


CASES = [
    (missing_key, MissingKey, 401, None, "API key required. Include x-api-key header."),
    (invalid_key, InvalidKey, 403, None, "Invalid API key for this bot"),
    (bot_not_found, BotNotFound, 404, "NOT_FOUND", "Bot with slug 'no-such-bot' not found"),
    (
        bad_slug,
        BadRequest,
        400,
        "BAD_REQUEST",
        "Invalid slug format. Only alphanumeric characters, hyphens, and underscores are allowed.",
    ),
    (bad_item, BadRequest, 400, "BAD_REQUEST", "states[0].accountId must be a valid UUID"),
    (too_large, PayloadTooLarge, 413, "PAYLOAD_TOO_LARGE", "Request body exceeds 1048576 bytes"),
    (rate_limited, RateLimited, 429, "TOO_MANY_REQUESTS", "Rate limit exceeded: 4 per 1 second"),
    (unavailable, Unavailable, 503, "SERVICE_UNAVAILABLE", "Database is busy, retry later"),
    (in_progress, RequestInProgress, 409, "CONFLICT", "A request with this Idempotency-Key is in progress"),
    (state_not_found, NotFound, 404, "NOT_FOUND", "State not found"),
    (precondition_failed, PreconditionFailed, 412, "PRECONDITION_FAILED", "Version conflict: expected 7, found 1"),
    (gone, Gone, 410, "GONE", None),
    (
        idempotency_conflict,
        IdempotencyConflict,
        422,
        "UNPROCESSABLE_ENTITY",
        "Idempotency-Key was used with a different request body",
    ),
    (version_conflict, VersionConflict, None, "VERSION_CONFLICT", "Version conflict: expected 0, found 1"),
    (write_failed, WriteFailed, None, "TICKER_NOT_FOUND", "Ticker not found"),
    (no_answer, NetworkError, None, None, None),
]


@pytest.mark.parametrize("case,error,status,code,message", CASES, ids=[case[0].__name__ for case in CASES])
def test_a_real_answer_raises_its_exception(
    server: Server,
    limited: Server,
    bot: Bot,
    case: Case,
    error: type[BotStateError],
    status: int | None,
    code: str | None,
    message: str | None,
) -> None:
    server.limited = limited  # type: ignore[attr-defined]
    try:
        with pytest.raises(error) as raised:
            case(server, bot)
    finally:
        while OPENED:
            OPENED.pop().close()
    assert type(raised.value) is error and isinstance(raised.value, BotStateError)
    assert (raised.value.status, raised.value.code) == (status, code)
    if message is not None:
        assert raised.value.message == message


def test_every_exception_is_raised_by_a_case() -> None:
    exported = {
        value
        for value in vars(botstate_client).values()
        if isinstance(value, type) and issubclass(value, BotStateError)
    }
    # ServerError (500) answers only a bug of the server's: no request of a client's makes one. UnexpectedAnswer is
    # for answers botstate never sends (a proxy's): test_client_hardening.py raises it with a stand-in server.
    assert exported - {case[1] for case in CASES} == {
        BotStateError,
        botstate_client.ServerError,
        botstate_client.UnexpectedAnswer,
    }
