"""Read-modify-write of one state: a dict-like handle, and the save that merges its changes with expectedVersion."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, TypeVar

from . import _ops
from ._patch import diff
from ._protocol import Op
from .errors import VersionConflict, WriteFailed
from .models import StateRow

# How many times a save re-applies the caller's function after losing a race, by default.
SAVE_ATTEMPTS = 5


class StateBase(MutableMapping[str, Any]):
    """One state as a dict, loaded once; `save()` stores what changed, only if no one else wrote it meanwhile."""

    def __init__(self, account_id: str, ticker_id: str, row: StateRow | None) -> None:
        self.account_id = account_id
        self.ticker_id = ticker_id
        self._load(row)

    def _load(self, row: StateRow | None) -> None:
        """Take `row` (None: no row yet) as the loaded state, dropping unsaved changes."""
        self.row = row
        self._loaded: dict[str, Any] = copy.deepcopy(row.state) if row else {}
        self._data: dict[str, Any] = copy.deepcopy(self._loaded)

    @property
    def version(self) -> int:
        """The loaded row's version; 0 when there was no row (a save then creates it)."""
        return self.row.version if self.row else 0

    @property
    def data(self) -> dict[str, Any]:
        """The state as it is now, unsaved changes included (the dict itself: changes to it count)."""
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.account_id}/{self.ticker_id} v{self.version} {self._data!r}>"


H = TypeVar("H", bound=StateBase)


def _item(handle: StateBase) -> tuple[str, dict[str, Any]] | None:
    """The write that stores the handle's changes: (method, item), or None when nothing changed."""
    patch = diff(handle._loaded, handle._data)
    if patch == {} and handle.row is not None:
        return None
    item = {"accountId": handle.account_id, "tickerId": handle.ticker_id, "expectedVersion": handle.version}
    if patch is None:  # a null the merge would remove: replace the whole state, still at the loaded version
        return "POST", {**item, "state": handle._data}
    return "PATCH", {**item, "state": patch}


def save(ctx: _ops.Context, handle: H, retry: Callable[[H], object] | None, attempts: int) -> Op[StateRow]:
    """Store the handle's changes; on a conflict raise VersionConflict, or reload, re-apply `retry` and try again."""
    deadline = ctx.deadline()
    for attempt in range(1, attempts + 1):
        planned = _item(handle)
        if planned is None:
            assert handle.row is not None
            return handle.row
        method, item = planned
        result = (yield from _ops.write(ctx, method, [item], None, deadline)).results[0]
        if result.row is not None:
            handle._load(result.row)
            return result.row
        if result.code != "VERSION_CONFLICT":
            raise WriteFailed(result)
        current = yield from _ops.get(ctx, handle.account_id, handle.ticker_id, deadline)
        if retry is None or attempt == attempts:
            raise VersionConflict(result, current)
        handle._load(current)
        retry(handle)
    raise AssertionError("unreachable")  # pragma: no cover
