"""The sans-IO protocol: operations yield requests and sleeps, and a client's driver performs them.

Every operation (a write with its chunks and retries, a page, a save) is a generator written once. The sync
client drives it with httpx.Client and time.sleep, the async one with httpx.AsyncClient and anyio.sleep.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, relative to the client's base URL."""

    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to a request: its status, headers (case-insensitive) and body."""

    status: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None when it is not one."""
        try:
            body = json.loads(self.content)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def retry_after(self) -> float | None:
        """Seconds the Retry-After header asks to wait (delta-seconds or an HTTP date), or None."""
        value = self.headers.get("retry-after", "").strip()
        if value.isascii() and value.isdigit():
            return float(value)
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, moment.timestamp() - time.time())


@dataclass(frozen=True, slots=True)
class NoResponse:
    """The request got no answer: the connection failed, was cut, or timed out."""

    error: Exception


@dataclass(frozen=True, slots=True)
class Send:
    """Send `request`, with `timeout` seconds for each phase, and reply with a Response or NoResponse."""

    request: Request
    timeout: float


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait `seconds`, then reply None."""

    seconds: float


Action: TypeAlias = Send | Sleep
Reply: TypeAlias = Response | NoResponse | None
Op: TypeAlias = Generator[Action, Reply, T]


def send(request: Request, timeout: float) -> Op[Response | NoResponse]:
    """Have the driver send `request`; its Response, or NoResponse."""
    reply = yield Send(request, timeout)
    assert reply is not None, "a driver replies to Send with a Response or NoResponse"
    return reply


def sleep(seconds: float) -> Op[None]:
    """Have the driver wait `seconds`."""
    yield Sleep(seconds)
