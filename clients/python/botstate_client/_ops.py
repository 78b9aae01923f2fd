"""The operations, sans-IO: each builds its requests, has them sent through `call`, and parses the answers."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

from ._protocol import Op, Request, Response
from ._retry import Deadline, Kind, Policy, call
from ._version import __version__
from .errors import BadRequest, BotStateError, NetworkError, NotFound, UnexpectedAnswer, error_from_response
from .models import Change, ItemResult, StateRow, Summary, WriteResult

# Used when the server's OpenAPI document cannot be read: its default BOTSTATE_MAX_STATES.
FALLBACK_MAX_ITEMS = 1000
PAGE_SIZE = 1000  # the most the server's list and feed endpoints take
_ITEM_INDEX = re.compile(r"^states\[(\d+)\]")
T = TypeVar("T")


@dataclass(slots=True)
class Context:
    """One client's bot, key and retry policy, and what it learnt of the server."""

    slug: str
    api_key: str
    policy: Policy
    max_items: int | None = None

    @property
    def prefix(self) -> str:
        """The path of the bot's endpoints."""
        return f"/api/bots/{quote(self.slug, safe='')}"

    def headers(self, **extra: str) -> dict[str, str]:
        """The headers of every request to the bot's endpoints, with `extra`."""
        return {"x-api-key": self.api_key, "user-agent": f"botstate-client/{__version__}", **extra}

    def deadline(self) -> Deadline:
        """A new call's deadline."""
        return Deadline.after(self.policy.retry_deadline)


def base_url_checked(base_url: str) -> str:
    """`base_url` when it is an http:// or https:// URL; ValueError saying what one looks like otherwise."""
    if not re.match(r"https?://[^/?#\s]+", base_url):
        raise ValueError(f"base_url must be an http:// or https:// URL, e.g. http://127.0.0.1:8080 (not {base_url!r})")
    return base_url


def _row_path(ctx: Context, account_id: str, ticker_id: str) -> str:
    """The path of one state row."""
    return f"{ctx.prefix}/state/{quote(account_id, safe='')}/{quote(ticker_id, safe='')}"


def check(response: Response, request: Request) -> dict[str, Any]:
    """The body of a 2xx answer; the matching BotStateError for any other."""
    body = response.json()
    if not 200 <= response.status < 300:
        raise error_from_response(response, request)
    if not isinstance(body, dict):
        raise _unexpected(response, request)
    return body


def _unexpected(response: Response, request: Request) -> UnexpectedAnswer:
    return UnexpectedAnswer(
        f"{request.method} {request.path}: HTTP {response.status} with a body botstate does not send"
        " (is the base URL botstate's?)",
        status=response.status,
    )


def parsed(response: Response, request: Request, parse: Callable[[dict[str, Any]], T]) -> T:
    """parse() of a 2xx answer's body; UnexpectedAnswer when it lacks what botstate's answers hold."""
    body = check(response, request)
    try:
        return parse(body)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _unexpected(response, request) from None


def _shifted(error: BotStateError, offset: int) -> BotStateError:
    """A chunk's 400 naming `states[i]`, renamed to the caller's index."""
    if isinstance(error, BadRequest) and offset:
        message = _ITEM_INDEX.sub(lambda match: f"states[{int(match.group(1)) + offset}]", error.message)
        return BadRequest(message, status=error.status, code=error.code)
    return error


def find_max_items(document: object) -> int | None:
    """The `maxItems` of the write body's `states` array, found by walking an OpenAPI document."""
    if isinstance(document, dict):
        states = document.get("properties", {}).get("states") if isinstance(document.get("properties"), dict) else None
        if isinstance(states, dict) and isinstance(states.get("maxItems"), int) and states["maxItems"] > 0:
            return int(states["maxItems"])
        children: Iterable[object] = document.values()
    elif isinstance(document, list):
        children = document
    else:
        return None
    for child in children:
        found = find_max_items(child)
        if found is not None:
            return found
    return None


def max_items(ctx: Context, deadline: Deadline) -> Op[int]:
    """The most items one write may carry: the server's, read once from /openapi.json."""
    if ctx.max_items is None:
        request = Request("GET", "/openapi.json", headers={"user-agent": f"botstate-client/{__version__}"})
        try:
            response = yield from call(ctx.policy, request, deadline, Kind.READ)
        except NetworkError:
            return FALLBACK_MAX_ITEMS  # not kept: the next write asks again
        found = find_max_items(response.json()) if response.status == 200 else None
        if found is None:
            return FALLBACK_MAX_ITEMS
        ctx.max_items = found
    return ctx.max_items


def _chunk_key(key: str | None, number: int, chunks: int) -> str:
    """The Idempotency-Key of chunk `number`: a fresh one, or the caller's (with the chunk's number, `key-0`, ...,
    when the write takes several requests)."""
    if key is None:
        return uuid.uuid4().hex
    return key if chunks == 1 else f"{key}-{number}"


def _parse_write(response: Response, request: Request, offset: int) -> WriteResult:
    """One chunk's answer, its indices shifted by `offset` into the caller's list."""

    def parse(body: dict[str, Any]) -> WriteResult:
        """The chunk's WriteResult, from its answer's body."""
        summary = body["summary"]
        return WriteResult(
            summary=Summary(total=summary["total"], succeeded=summary["succeeded"], failed=summary["failed"]),
            results=[ItemResult.from_json(item, offset, position) for position, item in enumerate(body["results"])],
            replayed=response.headers.get("idempotent-replayed", "").lower() == "true",
        )

    return parsed(response, request, parse)


def _encoded(items: list[dict[str, Any]]) -> list[str]:
    """Each item as JSON, all of them before anything is sent; TypeError naming `states[i]` for one that is not JSON."""
    encoded = []
    for index, item in enumerate(items):
        try:
            encoded.append(json.dumps(item, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as error:
            raise TypeError(f"states[{index}] cannot be sent as JSON: {error}") from None
    return encoded


def write(
    ctx: Context, method: str, states: Iterable[Mapping[str, Any]], key: str | None, deadline: Deadline | None = None
) -> Op[WriteResult]:
    """POST (replace) or PATCH (merge) any number of states, in chunks the server takes, as one result."""
    items = [dict(state) for state in states]
    if not items:
        return WriteResult(summary=Summary(0, 0, 0), results=[])
    deadline = deadline or ctx.deadline()
    size = 1 if len(items) == 1 else (yield from max_items(ctx, deadline))
    encoded = _encoded(items)
    offsets = range(0, len(items), size)
    parts: list[WriteResult] = []
    for number, offset in enumerate(offsets):
        body = '{"states": [' + ", ".join(encoded[offset : offset + size]) + "]}"
        chunk_key = _chunk_key(key, number, len(offsets))
        headers = ctx.headers(**{"content-type": "application/json", "idempotency-key": chunk_key})
        request = Request(method, f"{ctx.prefix}/state", headers=headers, content=body.encode())
        try:
            response = yield from call(ctx.policy, request, deadline, Kind.KEYED_WRITE)
            parts.append(_parse_write(response, request, offset))
        except BotStateError as error:
            shifted = _shifted(error, offset)
            shifted.partial = WriteResult.combine(parts) if parts else None
            if shifted is error:
                raise
            raise shifted from error
    return WriteResult.combine(parts)


def get(ctx: Context, account_id: str, ticker_id: str, deadline: Deadline | None = None) -> Op[StateRow | None]:
    """One row, or None when the bot has none for the pair."""
    request = Request("GET", _row_path(ctx, account_id, ticker_id), headers=ctx.headers())
    response = yield from call(ctx.policy, request, deadline or ctx.deadline(), Kind.READ)
    try:
        return parsed(response, request, lambda body: StateRow.from_json(body["data"]))
    except NotFound as error:
        if type(error) is NotFound and error.message == "State not found":
            return None
        raise


def delete(ctx: Context, account_id: str, ticker_id: str, if_version: int | None) -> Op[StateRow]:
    """Delete one row (only at version `if_version`, when given); the deleted row."""
    headers = ctx.headers() if if_version is None else ctx.headers(**{"if-match": f'"{if_version}"'})
    request = Request("DELETE", _row_path(ctx, account_id, ticker_id), headers=headers)
    response = yield from call(ctx.policy, request, ctx.deadline(), Kind.DELETE)
    return parsed(response, request, lambda body: StateRow.from_json(body["data"]))


def _moment(value: datetime | str) -> str:
    """An RFC 3339 date-time for a query: an aware datetime, or a string passed as it is."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("updated_since must be an aware datetime (e.g. datetime.now(timezone.utc)), or a string")
    return value.isoformat()


def state_query(account_id: str | None, ticker_id: str | None, updated_since: datetime | str | None) -> dict[str, str]:
    """The filters of a listing, as query parameters."""
    query = {"accountId": account_id, "tickerId": ticker_id}
    query["updatedSince"] = None if updated_since is None else _moment(updated_since)
    return {name: value for name, value in query.items() if value is not None}


def states_page(
    ctx: Context, query: Mapping[str, str], cursor: str | None, page_size: int
) -> Op[tuple[list[StateRow], str | None]]:
    """One page of rows, and the cursor of the next (None after the last)."""
    params = {**query, "limit": str(page_size), **({"cursor": cursor} if cursor else {})}
    request = Request("GET", f"{ctx.prefix}/state", params=params, headers=ctx.headers())
    response = yield from call(ctx.policy, request, ctx.deadline(), Kind.READ)
    return parsed(
        response, request, lambda body: ([StateRow.from_json(row) for row in body["data"]], body["nextCursor"])
    )


def changes_page(ctx: Context, after: int, query: Mapping[str, str], page_size: int) -> Op[tuple[list[Change], int]]:
    """The changes after seq `after`, oldest first, and the seq to poll after next."""
    params = {**query, "after": str(after), "limit": str(page_size)}
    request = Request("GET", f"{ctx.prefix}/changes", params=params, headers=ctx.headers())
    response = yield from call(ctx.policy, request, ctx.deadline(), Kind.READ)
    return parsed(
        response, request, lambda body: ([Change.from_json(change) for change in body["data"]], int(body["nextAfter"]))
    )
