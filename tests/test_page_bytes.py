"""A page of GET /api/bots/:slug/state is bounded in bytes as well as in rows."""

import itertools

import pytest
import requests
from conftest import start_server, stop_server
from test_paging import get_page, ids, post, register, walk

from storage import Credentials

ROW_OVERHEAD = 256  # what storage counts per row besides its state


@pytest.fixture
def paged_server(request, database, storage, bot):
    """A real server with the MAX_PAGE_BYTES the test gives, and `count` rows of `state_bytes` each."""
    max_page_bytes, count, state_bytes = request.param
    process, base_url, _ = start_server(database, MAX_PAGE_BYTES=max_page_bytes)
    server = type("Server", (), {"url": base_url})
    accounts, tickers = ids(count, "accounts"), ids(1, "tickers")
    register(storage, accounts, tickers)
    keys_ = list(itertools.product(accounts, tickers))
    for start in range(0, count, 100):
        post(server, bot["apiKey"], [(key, {"pad": "x" * (state_bytes - 11)}) for key in keys_[start : start + 100]])
    yield server, bot["apiKey"], max_page_bytes, state_bytes
    stop_server(process)


def counted(rows):
    """The bytes storage counts for rows: their states' text, and ROW_OVERHEAD each."""
    return sum(len(requests.compat.json.dumps(row["state"], separators=(",", ":"))) + ROW_OVERHEAD for row in rows)


@pytest.mark.parametrize("paged_server", [(10_000, 40, 2_000)], indirect=True)
def test_a_page_ends_once_it_holds_the_byte_limit_and_paging_still_visits_every_row(paged_server):
    server, api_key, max_page_bytes, state_bytes = paged_server
    pages = walk(server, api_key, limit=1000)
    rows = [row for page in pages for row in page["data"]]
    assert len(rows) == 40 and len({(row["userBrokerAccountId"], row["tickerId"]) for row in rows}) == 40
    assert rows == sorted(rows, key=lambda row: (row["userBrokerAccountId"], row["tickerId"]))
    assert len(pages) > 1
    for page in pages:
        # It ends after the row that takes it past the limit: before that row, it was under it.
        assert counted(page["data"][:-1]) < max_page_bytes
    for page in pages[:-1]:
        assert counted(page["data"]) >= max_page_bytes and page["nextCursor"]
    assert len(get_page(server, api_key, limit=2)["data"]) == 2  # the row limit still holds


@pytest.mark.parametrize("paged_server", [(1024, 3, 5_000)], indirect=True)
def test_a_row_larger_than_the_byte_limit_is_a_page_of_its_own(paged_server):
    server, api_key, _, _ = paged_server
    pages = walk(server, api_key, limit=1000)
    assert [len(page["data"]) for page in pages] == [1, 1, 1]


@pytest.mark.sqlite_only("one backend is enough for the default's size")
@pytest.mark.parametrize("paged_server", [(4 * 1024 * 1024, 1000, 60_000)], indirect=True)
def test_a_thousand_large_states_answer_a_few_mib_not_sixty(paged_server):
    # Issue 13: 1,000 rows of 64 KiB states answered GET ?limit=1000 with 65.8 MB.
    server, api_key, max_page_bytes, state_bytes = paged_server
    response = requests.get(
        f"{server.url}/api/bots/my-bot/state", params={"limit": 1000}, headers={"x-api-key": api_key}, timeout=30
    )
    assert response.status_code == 200
    assert len(response.content) <= max_page_bytes + state_bytes + 1000
    assert response.json()["nextCursor"] is not None


@pytest.mark.parametrize(
    "sizes,max_bytes,rows",
    [
        # Each row counts its state's bytes plus ROW_OVERHEAD; a page ends after the row that passes max_bytes.
        ([5000, 10, 5000], 6000, 3),  # before the third row: 5,256 + 266 = 5,522, under the limit
        ([5000, 10, 5000], 5522, 2),  # exactly at it: the third row starts the next page
        ([5000, 10, 5000], 5523, 3),
        ([5000, 10, 5000], 5256, 1),
        ([5000, 10, 5000], 1, 1),  # a page holds at least one row
    ],
)
def test_the_byte_limit_is_counted_exactly(storage, bot, sizes, max_bytes, rows):
    # Review of issue 13: the SQL subtracted a row's size without parentheses, ending pages 512 bytes early.
    from storage import StateWrite

    accounts, tickers = ids(len(sizes), "exact"), ids(1, "exact-ticker")
    register(storage, accounts, tickers)
    writes = [
        StateWrite(account, tickers[0], '{"p":"%s"}' % ("x" * (size - 8)))
        for account, size in zip(sorted(accounts), sizes, strict=False)
    ]
    storage.write_states(Credentials(bot["id"], bot["keyHash"]), writes, max_state_bytes=65536)
    page, more = storage.list_states(None, 50, credentials=Credentials(bot["id"], bot["keyHash"]), max_bytes=max_bytes)
    assert [len(row.state_json) for row in page] == sizes[:rows]
    assert more == (rows < len(sizes))
