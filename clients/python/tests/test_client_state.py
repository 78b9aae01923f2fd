"""client.state(): read-modify-write of one state, under conflicts, against a real server."""

from __future__ import annotations

import pytest
from botstate_client import Client, StateHandle, VersionConflict, WriteFailed

from .botstate_server import Server


def bump(state: StateHandle) -> None:
    """The caller's change: one more fill, and the position it leads to."""
    state["fills"] = state.get("fills", 0) + 1
    state.setdefault("position", {})["qty"] = state["fills"] * 10


def test_save_creates_then_merges_what_changed(server: Server, client: Client) -> None:
    [(account, ticker)] = server.take(1)
    state = client.state(account, ticker)
    assert (state.version, dict(state), state.row) == (0, {}, None)
    bump(state)
    state["note"] = "first"
    row = state.save()
    assert (row.version, row.state) == (1, {"fills": 1, "position": {"qty": 10}, "note": "first"})
    assert state.version == 1 and state.row == row
    bump(state)
    del state["note"]
    assert state.save().state == {"fills": 2, "position": {"qty": 20}}
    assert state.save().version == 2  # nothing changed: nothing sent


def test_a_null_value_is_stored_as_null(server: Server, client: Client) -> None:
    # A merge patch would read the null as "remove": the save replaces the state instead, at the loaded version.
    [(account, ticker)] = server.take(1)
    client.write([{"accountId": account, "tickerId": ticker, "state": {"stop": 140, "keep": [None]}}])
    state = client.state(account, ticker)
    state["stop"] = None
    row = state.save()
    assert (row.version, row.state) == (2, {"stop": None, "keep": [None]})


def test_a_conflict_raises_with_the_current_row(server: Server, client: Client) -> None:
    [(account, ticker)] = server.take(1)
    client.write([{"accountId": account, "tickerId": ticker, "state": {"fills": 1}}])
    mine = client.state(account, ticker)
    theirs = client.state(account, ticker)
    bump(theirs)
    theirs.save()
    bump(mine)
    with pytest.raises(VersionConflict) as raised:
        mine.save()
    conflict = raised.value
    assert conflict.current is not None and (conflict.current.version, conflict.current.state["fills"]) == (2, 2)
    assert (conflict.result.code, conflict.result.current_version) == ("VERSION_CONFLICT", 2)
    assert conflict.message == "Version conflict: expected 1, found 2"
    assert mine["fills"] == 2 and mine.version == 1  # the handle keeps the caller's unsaved change


def test_a_conflict_re_applies_the_callers_function(server: Server, client: Client) -> None:
    [(account, ticker)] = server.take(1)
    mine = client.state(account, ticker)
    others = [client.state(account, ticker) for _ in range(3)]
    for other in others:  # each loaded at version 0; each later one re-applies after conflicts of its own
        bump(other)
        other.save(retry=bump)
    bump(mine)
    row = mine.save(retry=bump)
    assert (row.version, row.state) == (4, {"fills": 4, "position": {"qty": 40}})
    assert client.get(account, ticker) == row


def test_a_save_gives_up_after_its_attempts(server: Server, client: Client) -> None:
    [(account, ticker)] = server.take(1)
    state = client.state(account, ticker)

    def lose_again(handle: StateHandle) -> None:
        client.merge([{"accountId": account, "tickerId": ticker, "state": {"race": handle.version}}])
        bump(handle)

    lose_again(state)
    with pytest.raises(VersionConflict):
        state.save(retry=lose_again, attempts=3)
    row = client.get(account, ticker)
    assert row is not None and row.version == 3  # the other writer's three merges, none of ours


def test_a_save_to_an_unknown_ticker_fails(server: Server, client: Client) -> None:
    [(account, _)] = server.take(1)
    state = client.state(account, "00000000-0000-4000-8000-000000000000")
    state["x"] = 1
    with pytest.raises(WriteFailed) as raised:
        state.save()
    assert (raised.value.code, raised.value.message) == ("TICKER_NOT_FOUND", "Ticker not found")
