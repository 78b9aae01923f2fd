"""GET /api/bots/:slug/state over real HTTP: keyset paging, filters, writes while paging,
isolation between bots and the 400s of bad parameters."""

import itertools
import random
import threading
import time
import uuid

import pytest
import requests

import keys

ROW_FIELDS = {"id", "botId", "userBrokerAccountId", "tickerId", "state", "version", "createdAt", "updatedAt"}
TIMEOUT = 10


def ids(count, seed):
    """`count` distinct lowercase UUIDs, the same for the same seed, in no particular order."""
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def register(storage, accounts, tickers):
    storage.import_accounts([(account, None) for account in accounts])
    storage.import_tickers([(f"S{ticker[:8]}", ticker) for ticker in tickers])


def state_url(server, slug="my-bot"):
    return f"{server.url}/api/bots/{slug}/state"


def post(server, api_key, keys_and_states, method="POST", slug="my-bot"):
    """Write states in one request; every item must succeed. Returns the written rows."""
    body = {"states": [{"accountId": a, "tickerId": t, "state": s} for (a, t), s in keys_and_states]}
    response = requests.request(
        method, state_url(server, slug), json=body, headers={"x-api-key": api_key}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["summary"]["failed"] == 0, answer
    return [result["data"] for result in answer["results"]]


def get_page(server, api_key, slug="my-bot", session=requests, **query):
    response = session.get(state_url(server, slug), params=query, headers={"x-api-key": api_key}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    page = response.json()
    assert set(page) == {"data", "nextCursor"}
    return page


def walk(server, api_key, slug="my-bot", max_pages=2000, **query):
    """Every page of a listing, following nextCursor until it is null (at most `max_pages`)."""
    pages = []
    for _ in range(max_pages):
        page = get_page(server, api_key, slug, **query)
        pages.append(page)
        if page["nextCursor"] is None:
            return pages
        query["cursor"] = page["nextCursor"]
    raise AssertionError(f"more than {max_pages} pages")


def key_of(row):
    return row["userBrokerAccountId"], row["tickerId"]


def rows_of(pages):
    return [row for page in pages for row in page["data"]]


# (a) Paging visits every row once, in order


@pytest.fixture
def grid(storage, bot, live_server):
    """250 rows: 25 accounts x 10 tickers, written with one bulk POST."""
    accounts, tickers = ids(25, "accounts"), ids(10, "tickers")
    register(storage, accounts, tickers)
    keys_ = list(itertools.product(accounts, tickers))
    random.Random(1).shuffle(keys_)  # written in no particular order
    written = post(live_server, bot["apiKey"], [(key, {"n": n, "key": list(key)}) for n, key in enumerate(keys_)])
    return {
        "server": live_server,
        "storage": storage,
        "bot": bot,
        "accounts": accounts,
        "tickers": tickers,
        "rows": written,
    }


@pytest.mark.parametrize("limit", [1, 7, 10, 100, 249, 250, 251, 1000])
def test_paging_visits_every_row_once_in_key_order(grid, limit):
    pages = walk(grid["server"], grid["bot"]["apiKey"], limit=limit)
    rows = rows_of(pages)
    expected = sorted(grid["rows"], key=key_of)
    assert [key_of(row) for row in rows] == [key_of(row) for row in expected]
    assert rows == expected  # and each row is the one that was written
    assert len(pages) == max(1, -(-250 // limit))
    for page in pages[:-1]:
        assert len(page["data"]) == limit
        assert isinstance(page["nextCursor"], str) and page["nextCursor"]
    assert 1 <= len(pages[-1]["data"]) <= limit
    assert pages[-1]["nextCursor"] is None


def test_default_page_is_100_rows(grid):
    page = get_page(grid["server"], grid["bot"]["apiKey"])
    assert len(page["data"]) == 100
    assert page["nextCursor"] is not None
    for row in page["data"]:
        assert set(row) == ROW_FIELDS
        assert row["botId"] == grid["bot"]["id"]
        assert row["version"] == 1


def test_no_rows_is_one_empty_page(bot, live_server):
    assert get_page(live_server, bot["apiKey"]) == {"data": [], "nextCursor": None}


def test_cursor_of_a_deleted_row_still_resumes_after_it(grid):
    server, api_key = grid["server"], grid["bot"]["apiKey"]
    first = get_page(server, api_key, limit=7)
    last_account, last_ticker = key_of(first["data"][-1])
    response = requests.delete(
        f"{state_url(server)}/{last_account}/{last_ticker}", headers={"x-api-key": api_key}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    rest = rows_of(walk(server, api_key, limit=50, cursor=first["nextCursor"]))
    expected = sorted(grid["rows"], key=key_of)[7:]
    assert [key_of(row) for row in rest] == [key_of(row) for row in expected]


# (b) Filters


@pytest.fixture
def timed(grid):
    """The grid, then a second wave that updates some rows and inserts others, later in time."""
    server, bot = grid["server"], grid["bot"]
    accounts, tickers = grid["accounts"], grid["tickers"]
    time.sleep(0.05)  # timestamps have milliseconds: the waves must not share one
    extra_account, extra_ticker = ids(1, "extra account")[0], ids(1, "extra ticker")[0]
    register(grid["storage"], [extra_account], [extra_ticker])
    updated = [(accounts[i], tickers[(i * 3) % 10]) for i in range(0, 25, 4)]
    inserted = [(extra_account, tickers[0]), (accounts[2], extra_ticker), (extra_account, extra_ticker)]
    second = post(server, bot["apiKey"], [(key, {"wave": 2}) for key in updated + inserted], method="PATCH")
    everything = {key_of(row): row for row in grid["rows"]}
    everything.update({key_of(row): row for row in second})
    return dict(grid, second=second, everything=everything, extra_account=extra_account, extra_ticker=extra_ticker)


def test_filters_return_exactly_the_matching_rows(timed):
    server, api_key = timed["server"], timed["bot"]["apiKey"]
    everything = timed["everything"]
    first_wave_end = max(row["updatedAt"] for row in timed["rows"])
    second_wave_start = min(row["updatedAt"] for row in timed["second"])
    assert first_wave_end < second_wave_start
    account, ticker = timed["accounts"][4], timed["tickers"][2]
    extra_account = timed["extra_account"]
    cases = [
        ({"accountId": account}, lambda r: r["userBrokerAccountId"] == account),
        ({"accountId": account.upper()}, lambda r: r["userBrokerAccountId"] == account),
        ({"tickerId": ticker}, lambda r: r["tickerId"] == ticker),
        ({"accountId": account, "tickerId": ticker}, lambda r: key_of(r) == (account, ticker)),
        ({"accountId": extra_account}, lambda r: r["userBrokerAccountId"] == extra_account),
        ({"accountId": str(uuid.uuid4())}, lambda r: False),  # a valid UUID nobody wrote under
        ({"updatedSince": second_wave_start}, lambda r: r["updatedAt"] >= second_wave_start),
        ({"updatedSince": first_wave_end}, lambda r: r["updatedAt"] >= first_wave_end),
        ({"updatedSince": "2000-01-01T00:00:00Z"}, lambda r: True),
        ({"updatedSince": "0999-12-31T23:59:59Z"}, lambda r: True),  # a year before 1000 sorts first too
        ({"updatedSince": "2999-01-01T00:00:00Z"}, lambda r: False),
        (
            {"updatedSince": second_wave_start, "tickerId": timed["tickers"][0]},
            lambda r: r["updatedAt"] >= second_wave_start and r["tickerId"] == timed["tickers"][0],
        ),
        (
            {"updatedSince": second_wave_start, "accountId": extra_account},
            lambda r: r["updatedAt"] >= second_wave_start and r["userBrokerAccountId"] == extra_account,
        ),
    ]
    for query, matches in cases:
        expected = sorted((row for row in everything.values() if matches(row)), key=key_of)
        for limit in (1000, 3):
            rows = rows_of(walk(server, api_key, limit=limit, **query))
            assert rows == expected, (query, limit)
    # The second wave alone, however the moment is written (offset, more digits).
    second_keys = sorted(key_of(row) for row in timed["second"])
    for moment in second_wave_variants(second_wave_start):
        rows = rows_of(walk(server, api_key, limit=1000, updatedSince=moment))
        assert [key_of(row) for row in rows] == second_keys, moment


def second_wave_variants(stamp):
    """The same instant as `stamp` (…T12:34:56.789Z) in other RFC 3339 spellings."""
    date, clock = stamp[:-1].split("T")
    hours = int(clock[:2])
    shifted = (hours + 2) % 24
    variants = [stamp, stamp.replace("T", "t").replace("Z", "z"), f"{date}T{clock}000Z", f"{date}T{clock}+00:00"]
    if shifted > hours:  # same date two hours east
        variants.append(f"{date}T{shifted:02d}{clock[2:]}+02:00")
    return variants


def test_updated_since_counts_writes_that_change_nothing_but_the_version(grid):
    server, api_key = grid["server"], grid["bot"]["apiKey"]
    key = key_of(grid["rows"][0])
    time.sleep(0.05)
    [row] = post(server, api_key, [(key, {})], method="PATCH")  # an empty patch still writes
    assert row["version"] == 2
    rows = rows_of(walk(server, api_key, limit=1000, updatedSince=row["updatedAt"]))
    assert [key_of(r) for r in rows] == [key]


# (c) Writes while paging


@pytest.fixture
def busy(storage, bot, live_server):
    """8 accounts x 8 tickers; two thirds of the keys hold a row before paging starts."""
    accounts, tickers = ids(8, "busy accounts"), ids(8, "busy tickers")
    register(storage, accounts, tickers)
    all_keys = sorted(itertools.product(accounts, tickers))
    original = [key for n, key in enumerate(all_keys) if n % 3 != 0]
    post(live_server, bot["apiKey"], [(key, {"original": True}) for key in original])
    return {"server": live_server, "bot": bot, "all": all_keys, "original": original}


def test_paging_while_rows_are_written_skips_and_repeats_nothing(busy):
    server, api_key = busy["server"], busy["bot"]["apiKey"]
    original = set(busy["original"])
    headers = {"x-api-key": api_key}
    done = threading.Event()
    writes = {"count": 0}
    progress = threading.Condition()
    reader_at = {"key": busy["all"][0]}  # the last key the reader saw
    created, writer_errors = set(), []

    def writer():
        rng = random.Random(7)
        session = requests.Session()
        existing_new = []
        for step in range(3000):  # bounded; stops as soon as the reader is done
            if done.is_set():
                break
            # Half the writes land next to where the reader is, where a cursor would slip.
            position = busy["all"].index(reader_at["key"])
            near = busy["all"][max(0, position - 2) : position + 3]
            pool = near if rng.random() < 0.5 else busy["all"]
            key = rng.choice(pool)
            try:
                if key in original:
                    method = rng.choice(["POST", "PATCH"])
                    body = {"states": [{"accountId": key[0], "tickerId": key[1], "state": {"step": step}}]}
                    response = session.request(method, state_url(server), json=body, headers=headers, timeout=TIMEOUT)
                    ok = response.status_code == 200 and response.json()["summary"]["failed"] == 0
                elif key in existing_new:
                    url = f"{state_url(server)}/{key[0]}/{key[1]}"
                    response = session.delete(url, headers=headers, timeout=TIMEOUT)
                    ok = response.status_code == 200
                    existing_new.remove(key)
                else:
                    body = {
                        "states": [
                            {"accountId": key[0], "tickerId": key[1], "state": {"new": step}, "expectedVersion": 0}
                        ]
                    }
                    response = session.post(state_url(server), json=body, headers=headers, timeout=TIMEOUT)
                    ok = response.status_code == 200 and response.json()["summary"]["failed"] == 0
                    existing_new.append(key)
                    created.add(key)
                if not ok:
                    writer_errors.append((key, response.status_code, response.text))
            except requests.RequestException as error:
                writer_errors.append((key, "exception", repr(error)))
            with progress:
                writes["count"] += 1
                progress.notify_all()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    pages, writes_between = [], []
    try:
        session = requests.Session()
        query = {"limit": 2}
        for _ in range(200):
            page = get_page(server, api_key, session=session, **query)
            pages.append(page)
            if page["data"]:
                reader_at["key"] = key_of(page["data"][-1])
            if page["nextCursor"] is None:
                break
            query["cursor"] = page["nextCursor"]
            # Let at least three writes happen before the next page (bounded wait).
            with progress:
                seen_writes = writes["count"]
                progress.wait_for(
                    lambda seen=seen_writes: writes["count"] >= seen + 3 or not thread.is_alive(), timeout=10
                )
                writes_between.append(writes["count"] - seen_writes)
        else:
            raise AssertionError("paging did not end")
    finally:
        done.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert writer_errors == []
    assert len(pages) > 10
    assert all(count >= 3 for count in writes_between), writes_between

    seen = [key_of(row) for row in rows_of(pages)]
    assert len(seen) == len(set(seen)), "a row was repeated"
    assert seen == sorted(seen), "pages are out of order"
    for page in pages:
        assert len(page["data"]) <= 2
    missing = original - set(seen)
    assert not missing, f"rows that existed throughout were skipped: {sorted(missing)}"
    assert set(seen) - original <= created
    for row in rows_of(pages):
        assert row["botId"] == busy["bot"]["id"]


# (d) One bot never sees another's rows


@pytest.fixture
def two_bots(storage, bot, live_server):
    accounts, tickers = ids(3, "shared accounts"), ids(3, "shared tickers")
    register(storage, accounts, tickers)
    other_key = keys.generate_key()
    other = storage.create_bot("other-bot", "Other bot", keys.hash_key(other_key))
    other = {"id": other["id"], "slug": "other-bot", "apiKey": other_key}
    all_keys = sorted(itertools.product(accounts, tickers))
    mine = all_keys[:6]  # overlaps the other bot's keys on 3 of them
    theirs = all_keys[3:]
    rows = {
        "my-bot": post(live_server, bot["apiKey"], [(key, {"owner": "my-bot"}) for key in mine]),
        "other-bot": post(live_server, other_key, [(key, {"owner": "other-bot"}) for key in theirs], slug="other-bot"),
    }
    return {
        "server": live_server,
        "bots": {"my-bot": bot, "other-bot": other},
        "rows": rows,
        "accounts": accounts,
        "tickers": tickers,
        "all": all_keys,
    }


def test_a_bot_lists_only_its_own_rows_whatever_the_filters(two_bots):
    server, accounts, tickers = two_bots["server"], two_bots["accounts"], two_bots["tickers"]
    for slug, other_slug in (("my-bot", "other-bot"), ("other-bot", "my-bot")):
        bot = two_bots["bots"][slug]
        own = sorted(two_bots["rows"][slug], key=key_of)
        foreign_cursor = get_page(server, two_bots["bots"][other_slug]["apiKey"], other_slug, limit=1)["nextCursor"]
        foreign_only_account = {a for a, _ in map(key_of, two_bots["rows"][other_slug])} - {
            a for a, _ in map(key_of, own)
        }
        queries = [
            {},
            {"accountId": accounts[0]},
            {"accountId": accounts[1]},
            {"accountId": accounts[2]},
            {"tickerId": tickers[0]},
            {"tickerId": tickers[2]},
            {"accountId": accounts[1], "tickerId": tickers[1]},
            {"updatedSince": "2000-01-01T00:00:00Z"},
            {"cursor": foreign_cursor},
        ] + [{"accountId": account} for account in foreign_only_account]
        for query in queries:
            for limit in (1000, 1):
                rows = rows_of(walk(server, bot["apiKey"], slug, limit=limit, **query))
                for row in rows:
                    assert row["botId"] == bot["id"], (slug, query, row)
                    assert row["state"] == {"owner": slug}, (slug, query, row)
                expected = [row for row in own if matches(row, query)]
                if "cursor" in query:
                    # What another bot's cursor points past is not specified: some of
                    # this bot's own rows, in order, and nothing else.
                    assert [row for row in expected if row in rows] == rows, (slug, query, limit)
                else:
                    assert rows == expected, (slug, query, limit)


def matches(row, query):
    account, ticker = key_of(row)
    return (
        query.get("accountId", account) == account
        and query.get("tickerId", ticker) == ticker
        and row["updatedAt"] >= query.get("updatedSince", "")
    )


def test_a_bot_cannot_read_or_delete_another_bots_row(two_bots):
    server = two_bots["server"]
    mine = two_bots["bots"]["my-bot"]
    only_theirs = key_of(sorted(two_bots["rows"]["other-bot"], key=key_of)[-1])
    assert only_theirs not in {key_of(row) for row in two_bots["rows"]["my-bot"]}
    url = f"{state_url(server)}/{only_theirs[0]}/{only_theirs[1]}"
    for method in ("GET", "DELETE"):
        response = requests.request(method, url, headers={"x-api-key": mine["apiKey"]}, timeout=TIMEOUT)
        assert response.status_code == 404, (method, response.text)
        assert response.json() == {"error": "State not found", "code": "NOT_FOUND"}
    their_key = two_bots["bots"]["other-bot"]["apiKey"]
    # The other bot's key does not open this bot's list.
    response = requests.get(state_url(server), headers={"x-api-key": their_key}, timeout=TIMEOUT)
    assert response.status_code == 403, response.text
    theirs = rows_of(walk(server, their_key, "other-bot"))
    assert only_theirs in {key_of(row) for row in theirs}


# (e) Bad parameters

LIMIT = "limit must be an integer from 1 to 1000"
UUID_ACCOUNT = "accountId must be a valid UUID"
UUID_TICKER = "tickerId must be a valid UUID"
TIMESTAMP = "updatedSince must be an RFC 3339 date-time, e.g. 2026-11-24T21:00:00Z"
CURSOR = "cursor is not a cursor this service returned"


@pytest.mark.parametrize(
    "query, message",
    [
        ("limit=0", LIMIT),
        ("limit=1001", LIMIT),
        ("limit=abc", LIMIT),
        ("limit=-1", LIMIT),
        ("limit=1.5", LIMIT),
        ("limit=", LIMIT),
        ("limit=99999999999999999999999", LIMIT),
        ("accountId=nope", UUID_ACCOUNT),
        ("accountId=", UUID_ACCOUNT),
        ("accountId=550e8400e29b41d4a716446655440000", UUID_ACCOUNT),
        ("tickerId=nope", UUID_TICKER),
        ("tickerId={222e4567-e89b-12d3-a456-426614174002}", UUID_TICKER),
        ("updatedSince=yesterday", TIMESTAMP),
        ("updatedSince=2026-11-24", TIMESTAMP),
        ("updatedSince=2026-02-30T00:00:00Z", TIMESTAMP),
        ("updatedSince=2026-11-24T21:00:00", TIMESTAMP),
        ("cursor=garbage", CURSOR),
        ("cursor=", CURSOR),
        ("cursor=" + "A" * 44, CURSOR),
        ("cursor=" + "A" * 42, CURSOR),
        ("cursor=" + "A" * 42 + "=", CURSOR),
        # Several bad parameters: the first in the order accountId, tickerId, updatedSince, limit, cursor.
        ("limit=0&accountId=nope", UUID_ACCOUNT),
        ("cursor=garbage&limit=0", LIMIT),
        ("cursor=garbage&updatedSince=yesterday&tickerId=nope", UUID_TICKER),
    ],
)
def test_bad_parameters_are_a_400_naming_the_parameter(bot, live_server, query, message):
    response = requests.get(f"{state_url(live_server)}?{query}", headers={"x-api-key": bot["apiKey"]}, timeout=TIMEOUT)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": message, "code": "BAD_REQUEST"}
