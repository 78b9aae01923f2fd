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
items = st.fixed_dictionaries(
    {},
    optional={"accountId": uuid_like, "tickerId": uuid_like, "state": json_values},
) | json_values
bodies = st.fixed_dictionaries({}, optional={"states": st.lists(items, max_size=5) | json_values}) | json_values


def post(client, bot, data, **headers):
    return client.post(
        f"/api/bots/{bot['slug']}/state", data=data, headers={"x-api-key": bot["apiKey"], **headers}
    )


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
@given(key=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=300), slug=st.text(max_size=40))
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
