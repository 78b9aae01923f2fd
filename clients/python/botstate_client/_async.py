"""The asyncio (or trio) client: drives the same operations with httpx.AsyncClient and anyio.sleep."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx

from . import _ops, _state
from ._protocol import NoResponse, Op, Reply, Response, Send
from ._retry import Policy
from .models import Change, StateRow, WriteResult

T = TypeVar("T")


class AsyncStateHandle(_state.StateBase):
    """One state as a dict (from `AsyncClient.state`); `await save()` stores the changes made to it."""

    def __init__(self, client: AsyncClient, account_id: str, ticker_id: str, row: StateRow | None) -> None:
        super().__init__(account_id, ticker_id, row)
        self._client = client

    async def save(
        self, retry: Callable[[AsyncStateHandle], object] | None = None, *, attempts: int = _state.SAVE_ATTEMPTS
    ) -> StateRow:
        """Merge the changes at the loaded version; on a conflict raise VersionConflict, or re-apply `retry`."""
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        return await self._client._run(_state.save(self._client._ctx, self, retry, attempts))

    async def reload(self) -> AsyncStateHandle:
        """Load the stored row again, dropping unsaved changes."""
        self._load(await self._client.get(self.account_id, self.ticker_id))
        return self


class AsyncClient:
    """The async twin of Client: the same methods, awaited (iterators are async iterators).

    `base_url` is the server's (`https://botstate.example.com`), `slug` and `api_key` the bot's. `timeout` is each
    attempt's, in seconds; `retry_deadline` bounds each call's retries: none starts after it (0: never retry).
    """

    def __init__(
        self, base_url: str, slug: str, api_key: str, *, timeout: float = 10.0, retry_deadline: float = 30.0
    ) -> None:
        if timeout <= 0 or retry_deadline < 0:
            raise ValueError("timeout must be positive and retry_deadline not negative")
        self._ctx = _ops.Context(slug, api_key, Policy(timeout, retry_deadline))
        self._http = httpx.AsyncClient(base_url=_ops.base_url_checked(base_url), timeout=timeout)

    async def write(self, states: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None) -> WriteResult:
        """POST: store each state, replacing what was stored; any number of items, one result in your order."""
        return await self._run(_ops.write(self._ctx, "POST", states, idempotency_key))

    async def merge(self, states: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None) -> WriteResult:
        """PATCH: merge each state (RFC 7396) into what was stored; any number of items, one result in your order."""
        return await self._run(_ops.write(self._ctx, "PATCH", states, idempotency_key))

    async def get(self, account_id: str, ticker_id: str) -> StateRow | None:
        """The stored row of the pair, or None."""
        return await self._run(_ops.get(self._ctx, account_id, ticker_id))

    async def iter_states(
        self,
        account_id: str | None = None,
        ticker_id: str | None = None,
        updated_since: datetime | str | None = None,
        *,
        page_size: int = _ops.PAGE_SIZE,
    ) -> AsyncIterator[StateRow]:
        """Every row matching the filters, in (account, ticker) order, one page at a time."""
        query = _ops.state_query(account_id, ticker_id, updated_since)
        cursor: str | None = None
        while True:
            rows, cursor = await self._run(_ops.states_page(self._ctx, query, cursor, page_size))
            for row in rows:
                yield row
            if cursor is None:
                return

    async def delete(self, account_id: str, ticker_id: str, *, if_version: int | None = None) -> StateRow:
        """Delete the pair's row (only at `if_version`, when given: else PreconditionFailed); the deleted row."""
        return await self._run(_ops.delete(self._ctx, account_id, ticker_id, if_version))

    async def changes(
        self,
        after: int = 0,
        *,
        account_id: str | None = None,
        ticker_id: str | None = None,
        page_size: int = _ops.PAGE_SIZE,
    ) -> AsyncIterator[Change]:
        """The bot's changes after seq `after`, oldest first, until caught up; resume from the last `seq` you took."""
        query = _ops.state_query(account_id, ticker_id, None)
        while True:
            changes, next_after = await self._run(_ops.changes_page(self._ctx, after, query, page_size))
            for change in changes:
                yield change
            if next_after == after:
                return
            after = next_after

    async def state(self, account_id: str, ticker_id: str) -> AsyncStateHandle:
        """The pair's state as a dict to change and `await save()`, loaded once (empty when there is no row)."""
        return AsyncStateHandle(self, account_id, ticker_id, await self.get(account_id, ticker_id))

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self, op: Op[T]) -> T:
        """Drive an operation to its end: send what it sends, sleep what it sleeps."""
        reply: Reply = None
        try:
            while True:
                action = op.send(reply)
                if isinstance(action, Send):
                    reply = await self._send(action)
                else:
                    await anyio.sleep(action.seconds)
                    reply = None
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def _send(self, action: Send) -> Response | NoResponse:
        """One HTTP exchange; NoResponse when the connection failed, was cut or timed out."""
        request = action.request
        try:
            response = await self._http.request(
                request.method,
                request.path,
                params=request.params,
                headers=request.headers,
                content=request.content,
                timeout=action.timeout,
            )
        except httpx.TransportError as error:
            return NoResponse(error)
        return Response(response.status_code, response.headers, response.content)
