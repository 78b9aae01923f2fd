"""Bounded fuzzing of everything a client controls: no input may produce a 5xx or a stored row."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spec_data import ACCOUNT_0, TICKER_AAPL

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
uuid_like = st.sampled_from([ACCOUNT_0, TICKER_AAPL, ACCOUNT_0.upper(), "", "x", None, 7]) | st.text(max_size=40)
items = (
    st.fixed_dictionaries(
        {},
        optional={"accountId": uuid_like, "tickerId": uuid_like, "state": json_values},
    )
    | json_values
)
bodies = st.fixed_dictionaries({}, optional={"states": st.lists(items, max_size=5) | json_values}) | json_values


def post(client, bot, data, **headers):
    return client.post(f"/api/bots/{bot['slug']}/state", data=data, headers={"x-api-key": bot["apiKey"], **headers})


@FUZZ
@given(body=bodies)
def test_arbitrary_json_bodies_get_a_json_answer_below_500(client, bot, registered, body):
    response = post(client, bot, json.dumps(body))
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    assert response.is_json
    if response.status_code == 200:
        payload = response.get_json()
        assert payload["summary"]["total"] == len(body["states"])


@FUZZ
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_get_a_json_answer_below_500(client, bot, registered, storage, data):
    response = post(client, bot, data)
    assert response.status_code < 500
    assert response.is_json


@FUZZ
@given(
    key=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=300), slug=st.text(max_size=40)
)
def test_arbitrary_keys_and_slugs_never_get_in(client, bot, registered, storage, key, slug):
    # A valid body, so that a key wrongly accepted would show as a 200 and a stored row.
    slug = slug.replace("/", "").replace("?", "").replace("#", "").replace("%", "") or "x"
    response = client.post(
        f"/api/bots/{slug}/state",
        data=json.dumps({"states": [{"accountId": ACCOUNT_0, "tickerId": TICKER_AAPL, "state": {}}]}),
        headers={"x-api-key": key},
    )
    assert response.status_code in (400, 401, 403, 404), response.get_json()
    assert response.is_json
    assert storage.count_states() == 0


header_names = st.sampled_from(
    [
        "If-Match",
        "If-None-Match",
        "Content-Type",
        "Accept",
        "Accept-Encoding",
        "Content-Encoding",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "Host",
        "Origin",
        "Range",
        "Authorization",
        "x-api-key",
        "Cookie",
    ]
) | st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True).filter(
    lambda name: name.lower() not in ("content-length", "transfer-encoding")
)
header_values = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"), max_size=100
)
# Lists of entity-tags, well formed or nearly, so that If-Match and If-None-Match get parsed deep.
entity_tags = st.lists(
    st.tuples(st.sampled_from(["", "W/", " ", "w/"]), st.text(alphabet='0123456789xX"-, ', max_size=25)),
    max_size=3,
).map(lambda tags: ", ".join(f'{prefix}"{tag}"' for prefix, tag in tags))


@FUZZ
@given(
    method=st.sampled_from(["GET", "DELETE", "POST", "PATCH"]),
    headers=st.dictionaries(header_names, header_values, max_size=5),
    conditions=st.fixed_dictionaries({}, optional={"If-Match": entity_tags, "If-None-Match": entity_tags}),
)
def test_arbitrary_headers_get_an_answer_below_500(client, bot, registered, method, headers, conditions):
    headers = {**headers, **conditions}
    path = f"/api/bots/{bot['slug']}/state"
    if method in ("GET", "DELETE"):
        path += f"/{ACCOUNT_0}/{TICKER_AAPL}"
    body = json.dumps({"states": [{"accountId": ACCOUNT_0, "tickerId": TICKER_AAPL, "state": {"v": 1}}]})
    response = client.open(
        path,
        method=method,
        data=body if method in ("POST", "PATCH") else None,
        headers={"x-api-key": bot["apiKey"], **headers},
    )
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.status_code == 304 or response.is_json
