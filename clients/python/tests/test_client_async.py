"""AsyncClient against the same real server: the same operations, awaited."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from urllib.parse import urlsplit

import pytest
from botstate_client import (
    AsyncClient,
    AsyncStateHandle,
    BotNotFound,
    MissingKey,
    NotFound,
    PreconditionFailed,
    Unavailable,
    VersionConflict,
)

from .botstate_server import Bot, Server, items
from .cutting_proxy import CuttingProxy


def bump(state: AsyncStateHandle) -> None:
    """The caller's change: one more fill."""
    state["fills"] = state.get("fills", 0) + 1


def test_writes_reads_paging_and_deletes(server: Server) -> None:
    made = server.new_bot()
    pairs = server.take(2500)

    async def main() -> None:
        async with AsyncClient(server.url, made.slug, made.key, retry_deadline=10) as client:
            result = await client.write(items(pairs))
            assert [r.index for r in result.results] == list(range(2500)) and result.summary.succeeded == 2500
            rows = [row async for row in client.iter_states()]
            assert [(row.account_id, row.ticker_id) for row in rows] == sorted(pairs)
            account, ticker = pairs[0]
            merged = await client.merge([{"accountId": account, "tickerId": ticker, "state": {"more": 1}}])
            row = await client.get(account, ticker)
            assert row is not None and row == merged.rows[0] and (row.version, row.etag) == (2, '"2"')
            with pytest.raises(PreconditionFailed):
                await client.delete(account, ticker, if_version=1)
            assert (await client.delete(account, ticker, if_version=2)).state == {"n": 0, "more": 1}
            assert await client.get(account, ticker) is None
            with pytest.raises(NotFound):
                await client.delete(account, ticker)
            changes = [change async for change in client.changes(after=rows[-1].version)]
            assert [change.op for change in changes][-2:] == ["upsert", "delete"]

    asyncio.run(main())


def test_state_save_under_a_conflict(server: Server, bot: Bot) -> None:
    [(account, ticker)] = server.take(1)

    async def main() -> None:
        async with AsyncClient(server.url, bot.slug, bot.key) as client:
            mine, theirs = await client.state(account, ticker), await client.state(account, ticker)
            bump(theirs)
            await theirs.save()
            bump(mine)
            with pytest.raises(VersionConflict) as raised:
                await mine.save()
            assert raised.value.current is not None and raised.value.current.version == 1
            row = await mine.save(retry=bump)
            assert (row.version, row.state) == (2, {"fills": 2})
            assert dict(await mine.reload()) == {"fills": 2}

    asyncio.run(main())


def test_retries_after_a_locked_database_and_a_cut_answer(
    server: Server, bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "botstate_client")
    pairs = server.take(2)
    address = urlsplit(server.url)
    assert address.hostname and address.port
    proxy = CuttingProxy((address.hostname, address.port))

    async def main() -> None:
        async with AsyncClient(proxy.url, bot.slug, bot.key, retry_deadline=10) as client:
            with server.locked(1.2):
                started = time.monotonic()
                result = await client.write(items(pairs[:1]))
                assert time.monotonic() - started > 1.0
            assert result.results[0].row is not None and result.results[0].row.version == 1
            proxy.cut_answer("POST", proxy.requests["POST"] + 1)
            cut = await client.write(items(pairs[1:]))
            assert cut.replayed and cut.results[0].row is not None and cut.results[0].row.version == 1

    try:
        asyncio.run(main())
    finally:
        proxy.close()
    messages = [record.getMessage() for record in caplog.records]
    assert any("HTTP 503" in message for message in messages) and any("no answer" in message for message in messages)
    assert proxy.cut == 1


def test_errors(server: Server, bot: Bot) -> None:
    async def main() -> None:
        async with AsyncClient(server.url, "no-such-bot", bot.key) as client:
            with pytest.raises(BotNotFound):
                await client.get(*server.take(1)[0])
        async with AsyncClient(server.url, bot.slug, "") as client:
            with pytest.raises(MissingKey):
                await client.write(items(server.take(1)))
        async with AsyncClient(server.url, bot.slug, bot.key, retry_deadline=0) as client:
            with server.locked(3), pytest.raises(Unavailable):
                await client.merge([{"accountId": str(uuid.uuid4()), "tickerId": str(uuid.uuid4()), "state": {}}])

    asyncio.run(main())
