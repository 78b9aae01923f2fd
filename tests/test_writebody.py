"""A big write body, parsed piece by piece, gives exactly what parsing it at once gives."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spec_data import ACCOUNT_0, TICKER_AAPL

import jsoncodec
import writebody
from backends.rules import merge_patch
from schemas import StateUpdatesSchema

MAX_STATE_BYTES = 60
SCHEMA = StateUpdatesSchema(max_states=5, max_depth=6)


def outcome(data, merge, whole):
    """What load_items makes of `data`: ("items", [...]), ("invalid",) or ("error", message)."""
    saved = writebody.WHOLE_PARSE_BYTES, writebody.CHUNK_BYTES
    writebody.WHOLE_PARSE_BYTES, writebody.CHUNK_BYTES = (10**9, saved[1]) if whole else (0, 8)
    try:
        return ("items", writebody.load_items(data, SCHEMA, merge, MAX_STATE_BYTES))
    except jsoncodec.InvalidJSON:
        return ("invalid",)
    except Exception as error:  # ValidationError: the message is what answers
        return ("error", error.messages[0])
    finally:
        writebody.WHOLE_PARSE_BYTES, writebody.CHUNK_BYTES = saved


def assert_same(data, merge=False):
    """Piece by piece and at once agree; a state left unbuilt is over the limit, as its text shows."""
    at_once, in_pieces = outcome(data, merge, whole=True), outcome(data, merge, whole=False)
    if at_once[0] != "items" or in_pieces[0] != "items":
        assert in_pieces == at_once
        return
    assert len(in_pieces[1]) == len(at_once[1])
    for piecewise, whole in zip(in_pieces[1], at_once[1], strict=False):
        if piecewise["state"] is None:
            stored = jsoncodec.dumps(merge_patch({}, jsoncodec.loads(whole["state"]))) if merge else whole["state"]
            assert len(stored.encode()) > MAX_STATE_BYTES
            piecewise = {**piecewise, "state": whole["state"]}
        assert piecewise == whole


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab,:[]{}"\\é\n'), max_size=6),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["a", "b", "c,", "[", ""]), children, max_size=4),
    max_leaves=25,
)
items = st.fixed_dictionaries(
    {"accountId": st.sampled_from([ACCOUNT_0, ACCOUNT_0.upper(), "nope", 5]), "tickerId": st.just(TICKER_AAPL)},
    optional={
        "state": json_values | st.dictionaries(st.text(max_size=3), json_values, max_size=6),
        "expectedVersion": st.sampled_from([0, 3, -1, "2", 2.0]),
        "junk": json_values,
    },
)
bodies = (
    st.fixed_dictionaries({"states": st.lists(items | json_values, max_size=7)}, optional={"other": json_values})
    | json_values
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, merge=st.booleans(), indent=st.sampled_from([None, 1]))
def test_pieces_agree_with_a_whole_parse(body, merge, indent):
    assert_same(json.dumps(body, ensure_ascii=False, indent=indent).encode(), merge)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, data=st.data())
def test_pieces_agree_with_a_whole_parse_on_broken_text(body, data):
    text = json.dumps(body).encode()
    position = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 3))
    inserted = data.draw(st.sampled_from([b"", b",", b"]", b"}", b"[", b'"', b"\\", b" ", b"\xff", b"NaN", b"1e999"]))
    assert_same(text[:position] + inserted + text[position + cut :])


@pytest.mark.parametrize(
    "body",
    [
        b'{"states": [1,]}',
        b'{"states": [,1]}',
        b'{"states": [1 2]}',
        b'{"states": [1],}',
        b" [] ",
        b'{"states": []}',
        b'{"states": [{"state": {"a": [1, 2, 3, 4, 5, 6, 7, 8, 9]}}]} x',
        b'\xef\xbb\xbf{"states": []}',
        b'{"states": [[1, 2, 3, 4, 5, 6}]}',
        b'{"states": "' + b"[" * 50 + b'"}',
        b'{"states": [' + b"[" * 40 + b"]" * 40 + b"]}",
        b'{"states": [{"accountId": "%s", "tickerId": "%s", "state": {"a": "x\\"y,z:[]{}"}}]}'
        % (ACCOUNT_0.encode(), TICKER_AAPL.encode()),
    ],
)
def test_pieces_agree_on_edge_cases(body):
    assert_same(body)
    assert_same(body, merge=True)


def test_a_state_too_large_to_build_is_left_unbuilt():
    state = b'{"a": [' + b",".join([b"[[]]"] * 10_000) + b"]}"
    data = b'{"states": [{"accountId": "%s", "tickerId": "%s", "state": %s}]}' % (
        ACCOUNT_0.encode(),
        TICKER_AAPL.encode(),
        state,
    )
    assert outcome(data, False, whole=False)[1][0]["state"] is None
    assert_same(data)


def test_nesting_past_the_limit_is_invalid_json_in_pieces_too():
    deep = b'{"states": [' + b"[" * (writebody.MAX_NESTING + 5) + b"]" * (writebody.MAX_NESTING + 5) + b"]}"
    assert outcome(deep, False, whole=False) == ("invalid",)


def item_with_state(state):
    """A body of one item with this state text."""
    return b'{"states": [{"accountId": "%s", "tickerId": "%s", "state": %s}]}' % (
        ACCOUNT_0.encode(),
        TICKER_AAPL.encode(),
        state,
    )


@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize(
    "state",
    [b'{"a": [%s]}' % b", ".join([b"0"] * count) for count in range(20, 40)]
    + [b'{"a": "%s"}' % (b"x" * count) for count in range(45, 60)]
    + [b'{"a": null, "b": [%s]}' % b",".join([b"[]"] * count) for count in range(14, 24)]
    + [b'{"k%d": null, ' % count + b'"b": {"c": [1.5, 2.5, "\\u0041\\n"]}' + b', "d": null}' for count in range(3)],
)
def test_states_about_the_size_limit_are_sized_alike(state, merge):
    assert_same(item_with_state(state), merge)


def test_an_array_item_longer_than_a_piece_is_still_checked_for_invalid_json():
    # Review of issue 13: such an item stood in as [] unparsed, so a NaN in it went unnoticed.
    assert_same(b'{"states": [[1, 2, 3, 4, NaN]]}')
    assert outcome(b'{"states": [[1, 2, 3, 4, NaN]]}', False, whole=False) == ("invalid",)


@pytest.mark.parametrize("nesting", [writebody.MAX_NESTING, writebody.MAX_NESTING + 1])
def test_pieces_take_nesting_up_to_the_limit(nesting):
    body = b'{"states": [' + b"[" * (nesting - 2) + b"]" * (nesting - 2) + b"]}"
    assert outcome(body, False, whole=False) == (
        ("error", "states[0] must be an object") if nesting <= writebody.MAX_NESTING else ("invalid",)
    )


def test_a_state_at_the_deepest_setting_fits_a_body_read_in_pieces():
    deepest = writebody.MAX_STATE_NESTING
    state = b'{"n":' * (deepest - 1) + b"{}" + b"}" * (deepest - 1)
    schema = StateUpdatesSchema(max_states=5, max_depth=deepest)
    saved = writebody.WHOLE_PARSE_BYTES
    writebody.WHOLE_PARSE_BYTES = 0
    try:
        loaded = writebody.load_items(item_with_state(state), schema, False, 10**6)
    finally:
        writebody.WHOLE_PARSE_BYTES = saved
    assert loaded[0]["state"] == state.decode()


@pytest.mark.parametrize(
    "patch", [b'{"a": [%s]}' % b",".join([b'"ab"'] * 20), b'{"a": [%s]}' % b",".join([b"1.5"] * 60)]
)
def test_a_patch_without_a_null_is_sized_as_its_text(patch):
    # Review of issue 13: every large patch was built, since only its brackets counted toward its size.
    assert outcome(item_with_state(patch), True, whole=False)[1][0]["state"] is None
    assert_same(item_with_state(patch), merge=True)


def test_a_deep_body_whose_size_is_in_its_strings_is_parsed_at_once():
    # Review of issue 13: 260 levels around a 9 MiB string were refused, where a smaller body is taken.
    body = (
        b'{"states": [{"accountId": "%s", "tickerId": "%s", "state": {}, "junk": '
        % (ACCOUNT_0.encode(), TICKER_AAPL.encode())
        + b"[" * 260
        + b'"'
        + b"x" * writebody.WHOLE_PARSE_BYTES
        + b'"'
        + b"]" * 260
        + b"}]}"
    )
    assert writebody.load_items(body, SCHEMA, False, MAX_STATE_BYTES)[0]["state"] == "{}"
    dense = body.replace(
        b'"' + b"x" * writebody.WHOLE_PARSE_BYTES + b'"', b",".join([b"[]"] * (writebody.WHOLE_PARSE_BYTES // 64))
    )
    with pytest.raises(writebody.TooDeep):  # a body large in objects as well, past the nesting pieces take
        writebody.load_items(dense, SCHEMA, False, MAX_STATE_BYTES)
