"""The blocking client: drives the operations with httpx.Client and time.sleep."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from . import _ops, _state
from ._protocol import NoResponse, Op, Reply, Response, Send
from ._retry import Policy
from .models import Change, StateRow, WriteResult

T = TypeVar("T")


class StateHandle(_state.StateBase):
    """One state as a dict (from `Client.state`); `save()` stores the changes made to it."""

    def __init__(self, client: Client, account_id: str, ticker_id: str, row: StateRow | None) -> None:
        super().__init__(account_id, ticker_id, row)
        self._client = client

    def save(
        self, retry: Callable[[StateHandle], object] | None = None, *, attempts: int = _state.SAVE_ATTEMPTS
    ) -> StateRow:
        """Merge the changes at the loaded version; on a conflict raise VersionConflict, or re-apply `retry`."""
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        return self._client._run(_state.save(self._client._ctx, self, retry, attempts))

    def reload(self) -> StateHandle:
        """Load the stored row again, dropping unsaved changes."""
        self._load(self._client.get(self.account_id, self.ticker_id))
        return self


class Client:
    """A bot's client for botstate: writes of any length, reads, paging, deletes and the change feed, with retries.

    `base_url` is the server's (`https://botstate.example.com`), `slug` and `api_key` the bot's. `timeout` is each
    attempt's, in seconds; `retry_deadline` bounds each call's retries: none starts after it (0: never retry).
    """

    def __init__(
        self, base_url: str, slug: str, api_key: str, *, timeout: float = 10.0, retry_deadline: float = 30.0
    ) -> None:
        if timeout <= 0 or retry_deadline < 0:
            raise ValueError("timeout must be positive and retry_deadline not negative")
        self._ctx = _ops.Context(slug, api_key, Policy(timeout, retry_deadline))
        self._http = httpx.Client(base_url=_ops.base_url_checked(base_url), timeout=timeout)

    def write(self, states: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None) -> WriteResult:
        """POST: store each state, replacing what was stored; any number of items, one result in your order."""
        return self._run(_ops.write(self._ctx, "POST", states, idempotency_key))

    def merge(self, states: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None) -> WriteResult:
        """PATCH: merge each state (RFC 7396) into what was stored; any number of items, one result in your order."""
        return self._run(_ops.write(self._ctx, "PATCH", states, idempotency_key))

    def get(self, account_id: str, ticker_id: str) -> StateRow | None:
        """The stored row of the pair, or None."""
        return self._run(_ops.get(self._ctx, account_id, ticker_id))

    def iter_states(
        self,
        account_id: str | None = None,
        ticker_id: str | None = None,
        updated_since: datetime | str | None = None,
        *,
        page_size: int = _ops.PAGE_SIZE,
    ) -> Iterator[StateRow]:
        """Every row matching the filters, in (account, ticker) order, one page at a time."""
        query = _ops.state_query(account_id, ticker_id, updated_since)
        cursor: str | None = None
        while True:
            rows, cursor = self._run(_ops.states_page(self._ctx, query, cursor, page_size))
            yield from rows
            if cursor is None:
                return

    def delete(self, account_id: str, ticker_id: str, *, if_version: int | None = None) -> StateRow:
        """Delete the pair's row (only at `if_version`, when given: else PreconditionFailed); the deleted row."""
        return self._run(_ops.delete(self._ctx, account_id, ticker_id, if_version))

    def changes(
        self,
        after: int = 0,
        *,
        account_id: str | None = None,
        ticker_id: str | None = None,
        page_size: int = _ops.PAGE_SIZE,
    ) -> Iterator[Change]:
        """The bot's changes after seq `after`, oldest first, until caught up; resume from the last `seq` you took."""
        query = _ops.state_query(account_id, ticker_id, None)
        while True:
            changes, next_after = self._run(_ops.changes_page(self._ctx, after, query, page_size))
            yield from changes
            if next_after == after:
                return
            after = next_after

    def state(self, account_id: str, ticker_id: str) -> StateHandle:
        """The pair's state as a dict to change and `save()`, loaded once (empty when there is no row)."""
        return StateHandle(self, account_id, ticker_id, self.get(account_id, ticker_id))

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, op: Op[T]) -> T:
        """Drive an operation to its end: send what it sends, sleep what it sleeps."""
        reply: Reply = None
        try:
            while True:
                action = op.send(reply)
                if isinstance(action, Send):
                    reply = self._send(action)
                else:
                    time.sleep(action.seconds)
                    reply = None
        except StopIteration as stop:
            result: T = stop.value
            return result

    def _send(self, action: Send) -> Response | NoResponse:
        """One HTTP exchange; NoResponse when the connection failed, was cut or timed out."""
        request = action.request
        try:
            response = self._http.request(
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
