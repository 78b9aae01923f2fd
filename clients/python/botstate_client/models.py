"""The typed results: state rows, per-item results, write results and change-feed entries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict


class StateUpdate(TypedDict):
    """One item of a write, as the spec spells it; `expectedVersion` (0: must not exist yet) is optional."""

    accountId: str
    tickerId: str
    state: dict[str, Any]
    expectedVersion: NotRequired[int]


def _moment(value: str) -> datetime:
    """An ISO 8601 timestamp of the server (`2026-11-24T21:00:00.000Z`) as an aware datetime."""
    return datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class StateRow:
    """A stored state: one JSON object per (account, ticker), with the version its last write gave it."""

    id: str
    bot_id: str
    account_id: str
    ticker_id: str
    state: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def etag(self) -> str:
        """The row's entity-tag, as GET answers it in ETag and DELETE takes it in If-Match: `"7"`."""
        return f'"{self.version}"'

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StateRow:
        """A row from the server's JSON."""
        return cls(
            id=data["id"],
            bot_id=data["botId"],
            account_id=data["userBrokerAccountId"],
            ticker_id=data["tickerId"],
            state=data["state"],
            version=data["version"],
            created_at=_moment(data["createdAt"]),
            updated_at=_moment(data["updatedAt"]),
        )


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item's outcome; `index` is its place in the list the caller passed, whatever the chunking."""

    index: int
    status: Literal["success", "error"]
    account_id: str
    ticker_id: str
    row: StateRow | None = None
    error: str | None = None
    code: str | None = None
    current_version: int | None = None

    @property
    def ok(self) -> bool:
        """True when the item was stored."""
        return self.status == "success"

    @classmethod
    def from_json(cls, data: Mapping[str, Any], offset: int, position: int) -> ItemResult:
        """A result from the server's JSON, of a chunk that starts at `offset` of the caller's list."""
        return cls(
            index=offset + data.get("index", position),
            status="success" if data["status"] == "success" else "error",
            account_id=data["accountId"],
            ticker_id=data["tickerId"],
            row=StateRow.from_json(data["data"]) if "data" in data else None,
            error=data.get("error"),
            code=data.get("code"),
            current_version=data.get("currentVersion"),
        )


@dataclass(frozen=True, slots=True)
class Summary:
    """How many items a write had, stored and failed."""

    total: int
    succeeded: int
    failed: int


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A whole write: one summary and every item's result in the caller's order, however many requests it took."""

    summary: Summary
    results: list[ItemResult]
    # True when the server answered some chunk from its Idempotency-Key record: a retry of a write it had stored.
    replayed: bool = False

    @property
    def ok(self) -> bool:
        """True when every item was stored."""
        return self.summary.failed == 0

    @property
    def failures(self) -> list[ItemResult]:
        """The items that were not stored."""
        return [result for result in self.results if not result.ok]

    @property
    def rows(self) -> list[StateRow]:
        """The rows the stored items left, in the caller's order."""
        return [result.row for result in self.results if result.row is not None]

    @classmethod
    def combine(cls, parts: list[WriteResult]) -> WriteResult:
        """One result from the results of consecutive chunks."""
        results = sorted((result for part in parts for result in part.results), key=lambda result: result.index)
        return cls(
            summary=Summary(
                total=sum(part.summary.total for part in parts),
                succeeded=sum(part.summary.succeeded for part in parts),
                failed=sum(part.summary.failed for part in parts),
            ),
            results=results,
            replayed=any(part.replayed for part in parts),
        )


@dataclass(frozen=True, slots=True)
class Change:
    """An entry of the change feed: a row stored (`upsert`, with its full state) or deleted, at `seq`."""

    seq: int
    op: Literal["upsert", "delete"]
    account_id: str
    ticker_id: str
    version: int
    at: datetime
    state: dict[str, Any] | None = field(default=None)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Change:
        """A change from the server's JSON."""
        return cls(
            seq=data["seq"],
            op="delete" if data["op"] == "delete" else "upsert",
            account_id=data["accountId"],
            ticker_id=data["tickerId"],
            version=data["version"],
            at=_moment(data["at"]),
            state=data.get("state"),
        )
