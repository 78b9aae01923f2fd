"""The exceptions: one per answer of the server, all derived from BotStateError."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ._protocol import Request, Response

if TYPE_CHECKING:
    from .models import ItemResult, StateRow, WriteResult


class BotStateError(Exception):
    """Anything the client raises about botstate's answer (or the lack of one)."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        # A write of several chunks that failed after some were stored: what those stored.
        self.partial: WriteResult | None = None


class BadRequest(BotStateError):
    """400: the server refused the request; `message` is its reason, e.g. `states[3].accountId must be a valid UUID`."""


class MissingKey(BotStateError):
    """401: no API key was sent (or an empty one)."""


class InvalidKey(BotStateError):
    """403: the API key is not this bot's."""


class NotFound(BotStateError):
    """404: no such state row (or, from an older server, no such route)."""


class BotNotFound(NotFound):
    """404: no bot has this slug."""


class RequestInProgress(BotStateError):
    """409: a request with this Idempotency-Key is still running (retried until the deadline)."""


class Gone(BotStateError):
    """410: the feed keeps no changes after `after` (pruned, or past its end): list the states, poll from `seq`."""

    def __init__(
        self, message: str, *, seq: int | None = None, status: int | None = 410, code: str | None = None
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.seq = seq


class PreconditionFailed(BotStateError):
    """412: a delete's If-Match version is not the row's; `current_version` is the stored one when known."""

    def __init__(
        self, message: str, *, current_version: int | None = None, status: int | None = 412, code: str | None = None
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.current_version = current_version


class PayloadTooLarge(BotStateError):
    """413: the request body is larger than the server takes."""


class IdempotencyConflict(BotStateError):
    """422: this Idempotency-Key was used before with a different request body."""


class RateLimited(BotStateError):
    """429: the bot is past its rate limit, and waiting `retry_after` seconds would pass the deadline."""


class Unavailable(BotStateError):
    """503: the database is busy or unavailable, and the deadline passed before it answered."""


class ServerError(BotStateError):
    """500 or another 5xx: a fault on the server's side."""


class NetworkError(BotStateError):
    """No answer: the connection failed, was cut or timed out (a write is retried first, safely).

    `idempotency_key` is the key the lost write was sent with (None for a read or delete): sent again
    with it, within a day, the write is still applied once.
    """

    def __init__(self, message: str, *, idempotency_key: str | None = None) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key


class UnexpectedAnswer(BotStateError):
    """A 2xx answer that is not what botstate sends (a proxy's, or a base URL that is not botstate's)."""


class WriteFailed(BotStateError):
    """A state's save stored nothing: `result` is its per-item error (TICKER_NOT_FOUND, STATE_TOO_LARGE, ...)."""

    def __init__(self, result: ItemResult) -> None:
        super().__init__(result.error or "write failed", code=result.code)
        self.result = result


class VersionConflict(WriteFailed):
    """A save lost a race: the row changed since it was loaded; `current` is the row now (None: deleted)."""

    def __init__(self, result: ItemResult, current: StateRow | None) -> None:
        super().__init__(result)
        self.current = current


_BY_STATUS: dict[int, type[BotStateError]] = {
    400: BadRequest,
    401: MissingKey,
    403: InvalidKey,
    404: NotFound,
    409: RequestInProgress,
    410: Gone,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    422: IdempotencyConflict,
    429: RateLimited,
    503: Unavailable,
}
_SEQ = re.compile(r"\bseq (?:past )?(\d+)")
_FOUND = re.compile(r"\bfound (\d+)")


def error_from_response(response: Response, request: Request) -> BotStateError:
    """The exception for an error answer: 401/403 carry `message`, every other one `error` and `code`."""
    body = response.json() or {}
    text = body.get("error") or body.get("message")
    if not isinstance(text, str):
        text = response.content.decode("utf-8", "replace").strip() or f"HTTP {response.status}"
    code = body.get("code") if isinstance(body.get("code"), str) else None
    status = response.status
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else BotStateError)
    if cls is NotFound and text.startswith("Bot with slug"):
        cls = BotNotFound
    message = f"{request.method} {request.path}: {text}" if cls is BotStateError or cls is ServerError else text
    if cls is Gone:
        seq = _SEQ.search(text)
        return Gone(message, seq=int(seq.group(1)) if seq else None, code=code)
    if cls is PreconditionFailed:
        found = _FOUND.search(text)
        return PreconditionFailed(message, current_version=int(found.group(1)) if found else None, code=code)
    return cls(message, status=status, code=code, retry_after=response.retry_after())
