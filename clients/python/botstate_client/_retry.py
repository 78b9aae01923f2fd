"""When to retry and how long to wait: the contract's rules, capped exponential backoff with jitter, one deadline."""

from __future__ import annotations

import enum
import logging
import random
import time
from dataclasses import dataclass, field

from ._protocol import NoResponse, Op, Request, Response, send, sleep
from .errors import NetworkError

log = logging.getLogger("botstate_client")

BACKOFF_BASE = 0.25
BACKOFF_CAP = 8.0


class Kind(enum.Enum):
    """What a request is, which decides what it may be retried after."""

    READ = "read"  # GET: after 429 and 503
    DELETE = "delete"  # not idempotency-keyed: after 429 and 503, never after a network error
    KEYED_WRITE = "keyed write"  # POST/PATCH with an Idempotency-Key: also after the in-progress 409 and no answer


@dataclass(slots=True)
class Policy:
    """The timeout of each attempt and the retry deadline of each call, with the random source of the jitter."""

    timeout: float
    retry_deadline: float
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, attempt: int) -> float:
        """The wait before retry number `attempt` (0 first): capped exponential, with equal jitter."""
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0**attempt)
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)


@dataclass(frozen=True, slots=True)
class Deadline:
    """The moment after which a call starts no retry."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """The deadline `seconds` from now."""
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())


def _retryable(kind: Kind, reply: Response | NoResponse) -> bool:
    """Whether the contract allows another attempt after this reply."""
    if isinstance(reply, NoResponse):
        return kind is Kind.KEYED_WRITE
    if reply.status in (429, 503):
        return True
    if reply.status == 409 and kind is Kind.KEYED_WRITE:
        return (reply.json() or {}).get("code") == "CONFLICT"
    return False


def call(policy: Policy, request: Request, deadline: Deadline, kind: Kind) -> Op[Response]:
    """Send `request`, retrying what `kind` allows until `deadline`; the last answer (raises NetworkError for none)."""
    attempt = 0
    while True:
        timeout = policy.timeout if attempt == 0 else max(0.001, min(policy.timeout, deadline.remaining()))
        reply = yield from send(request, timeout)
        if not _retryable(kind, reply):
            return _answer(request, reply)
        asked = reply.retry_after() if isinstance(reply, Response) else None
        wait = max(asked or 0.0, policy.backoff(attempt))
        if wait >= deadline.remaining():
            return _answer(request, reply)
        why = f"HTTP {reply.status}" if isinstance(reply, Response) else f"no answer ({reply.error!r})"
        log.info("botstate: %s %s got %s; retry %d in %.2f s", request.method, request.path, why, attempt + 1, wait)
        yield from sleep(wait)
        attempt += 1


def _answer(request: Request, reply: Response | NoResponse) -> Response:
    """The reply as an answer to return, or the NetworkError for no answer."""
    if isinstance(reply, NoResponse):
        error = NetworkError(
            f"{request.method} {request.path}: no answer ({reply.error})",
            idempotency_key=request.headers.get("idempotency-key"),
        )
        raise error from reply.error
    return reply
