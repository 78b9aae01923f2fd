"""schemas.py: every validation message of the spec, in index order, and the lean fields agreeing with marshmallow."""

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError, fields, missing
from spec_data import ACCOUNT_0, TICKER_AAPL, item

import symbols
from schemas import (
    StateQuerySchema,
    StateUpdateSchema,
    StateUpdatesSchema,
    first_error,
    is_uuid,
    is_valid_slug,
)

schema = StateUpdatesSchema(max_states=3)


def load_error(body):
    with pytest.raises(ValidationError) as raised:
        schema.load(body)
    return first_error(raised.value.messages)


@pytest.mark.parametrize(
    "body,message",
    (
        # One row per message of the spec, plus the ones the issue adds.
        ({}, "states must be an array"),
        ({"states": None}, "states must be an array"),
        ({"states": {"0": item()}}, "states must be an array"),
        ({"states": "[]"}, "states must be an array"),
        (None, "states must be an array"),
        ([item()], "states must be an array"),
        ("states", "states must be an array"),
        ({"states": []}, "states array cannot be empty"),
        ({"states": [item()] * 4}, "states array cannot contain more than 3 items"),
        ({"states": [5]}, "states[0] must be an object"),
        ({"states": [None]}, "states[0] must be an object"),
        ({"states": [[item()]]}, "states[0] must be an object"),
        ({"states": [{"tickerId": TICKER_AAPL, "state": {}}]}, "states[0].accountId is required and must be a string"),
        ({"states": [item(account=None)]}, "states[0].accountId is required and must be a string"),
        ({"states": [item(account=550)]}, "states[0].accountId is required and must be a string"),
        ({"states": [item(account="")]}, "states[0].accountId is required and must be a string"),
        ({"states": [item(account="not-a-uuid")]}, "states[0].accountId must be a valid UUID"),
        ({"states": [{"accountId": ACCOUNT_0, "state": {}}]}, "states[0].tickerId is required and must be a string"),
        ({"states": [item(ticker=["x"])]}, "states[0].tickerId is required and must be a string"),
        ({"states": [item(ticker="{" + TICKER_AAPL + "}")]}, "states[0].tickerId must be a valid UUID"),
        (
            {"states": [{"accountId": ACCOUNT_0, "tickerId": TICKER_AAPL}]},
            "states[0].state is required and must be an object",
        ),
        ({"states": [item(state=[])]}, "states[0].state is required and must be an object"),
        (
            {"states": [{"accountId": ACCOUNT_0, "tickerId": TICKER_AAPL, "state": None}]},
            "states[0].state is required and must be an object",
        ),
        ({"states": [item(state="long")]}, "states[0].state is required and must be an object"),
        ({"states": [item(state=1)]}, "states[0].state is required and must be an object"),
        ({"states": [item(state=True)]}, "states[0].state is required and must be an object"),
    ),
)
def test_messages(body, message):
    assert load_error(body) == message


@pytest.mark.parametrize(
    "items,message",
    (
        # The first problem in index order wins, and within an item accountId, tickerId, state.
        ([item(), item(account="x"), item(ticker="y")], "states[1].accountId must be a valid UUID"),
        ([item(), item(), item(state=[])], "states[2].state is required and must be an object"),
        ([item(state=[], ticker="x", account="y")], "states[0].accountId must be a valid UUID"),
        ([item(state=[], ticker="x")], "states[0].tickerId must be a valid UUID"),
        ([item(), "x", item(account=1)], "states[1] must be an object"),
    ),
)
def test_first_problem_in_index_order(items, message):
    assert load_error({"states": items}) == message


def test_valid_body_keeps_ids_as_sent_and_state_order():
    upper = ACCOUNT_0.upper()
    loaded = schema.load({"states": [item(account=upper, state={"z": 1, "a": 2})], "extra": 1})
    assert loaded["states"][0]["accountId"] == upper
    assert list(loaded["states"][0]["state"]) == ["z", "a"]


def test_unknown_item_fields_are_ignored():
    loaded = schema.load({"states": [{**item(), "note": "x"}]})
    assert "note" not in loaded["states"][0]


@pytest.mark.parametrize(
    "value,valid",
    (
        ("550e8400-e29b-41d4-a716-446655440000", True),
        ("550E8400-E29B-41D4-A716-446655440000", True),
        ("{550e8400-e29b-41d4-a716-446655440000}", False),
        ("urn:uuid:550e8400-e29b-41d4-a716-446655440000", False),
        ("550e8400e29b41d4a716446655440000", False),
        ("550e8400-e29b-41d4-a716-446655440000\n", False),
        (" 550e8400-e29b-41d4-a716-446655440000", False),
        ("550e8400-e29b-41d4-a716-44665544000g", False),
        ("٥٥0e8400-e29b-41d4-a716-446655440000", False),
        ("", False),
    ),
)
def test_uuid_form(value, valid):
    assert is_uuid(value) is valid


@pytest.mark.parametrize(
    "slug,valid",
    (
        ("my-trading-bot", True),
        ("Bot_2", True),
        ("a", True),
        ("my bot", False),
        ("bot!", False),
        ("bot\n", False),
        ("bøt", False),
        ("bot.v2", False),
        ("", False),
    ),
)
def test_slug_form(slug, valid):
    assert is_valid_slug(slug) is valid


def full_load(field, value):
    """What marshmallow's own Field.deserialize makes of the value: ("ok", value) or ("error", messages)."""
    try:
        return "ok", fields.Field.deserialize(field, value, "name", {})
    except ValidationError as error:
        return "error", error.messages


def lean_load(field, value):
    try:
        return "ok", field.deserialize(value, "name", {})
    except ValidationError as error:
        return "error", error.messages


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.uuids().map(str)
    | st.uuids().map(lambda u: str(u).upper())
    | st.just(missing),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=30,
)
LEAN_FIELDS = {
    "item UUID": StateUpdateSchema().fields["accountId"],
    "state": StateUpdatesSchema(max_states=10, max_depth=3).fields["states"].inner.schema.fields["state"],
    "expectedVersion": StateUpdateSchema().fields["expectedVersion"],
    "filter UUID": StateQuerySchema().fields["accountId"],
}


@pytest.mark.parametrize("name", LEAN_FIELDS)
@settings(max_examples=400, deadline=None, derandomize=True)
@given(value=JSON_VALUES)
def test_lean_fields_load_as_marshmallow_does(name, value):
    field = LEAN_FIELDS[name]
    assert lean_load(field, value) == full_load(field, value)


@pytest.mark.parametrize(
    "symbol, valid",
    [
        ("AAPL", True),
        ("BRK.B", True),
        ("^GSPC", True),
        ("中国", True),
        ("é", True),
        ("X" * symbols.MAX_SYMBOL_LENGTH, True),
        ("", False),
        ("X" * (symbols.MAX_SYMBOL_LENGTH + 1), False),
        ("A B", False),
        ("A,B", False),
        ("TAB\tX", False),
        ("A\u00a0B", False),
        ("A\x00", False),
        ("A\x85", False),
        ("A\u200bB", False),
        ("AAPL\ufe0f", False),
        ("AAPL\u034f", False),
        ("\u3164", False),
        ("\u202eLPAA", False),
        ("\u2066AAPL\u2069", False),
        ("AAPL\ufff0", False),
        ("A\udcff", False),
    ],
)
def test_a_symbol_is_valid_by_its_one_rule(symbol, valid):
    assert symbols.is_valid_symbol(symbol) is valid


# Default_Ignorable_Code_Point characters of the Basic Multilingual Plane that are not of category Cf
# (Unicode's DerivedCoreProperties.txt), written out here apart from the code's own list.
IGNORABLE_NOT_CF = {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x2065, 0x3164, 0xFFA0}
IGNORABLE_NOT_CF |= set(range(0xFE00, 0xFE10)) | set(range(0xFFF0, 0xFFF9))


def test_each_character_of_the_multilingual_plane_is_taken_by_the_server_and_the_document_as_the_rule_says():
    """Every character of the Basic Multilingual Plane but surrogates, alone in a symbol: taken unless it is
    whitespace, a comma, a control, formatting or separator character, or one Unicode says to ignore in display;
    the OpenAPI pattern takes exactly what the server does."""
    import unicodedata

    import admin_schemas

    documented = re.compile(admin_schemas.SYMBOL_DOC["pattern"])
    differ = []
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        unseen = (
            char.isspace()
            or char == ","
            or unicodedata.category(char) in ("Cc", "Cf", "Zs", "Zl", "Zp")
            or code in IGNORABLE_NOT_CF
        )
        if symbols.is_valid_symbol(char) is unseen or (documented.fullmatch(char) is None) is not unseen:
            differ.append(hex(code))
    assert differ == []


# Keys whose cursors leave each remainder of base64's 3-byte groups, so the last character has spare bits or none.
ONE_KEY_PER_REMAINDER = (
    *(("bots", "my-bot" + "x" * extra) for extra in range(3)),
    *(("tickers", "AAPL" + "X" * extra) for extra in range(3)),
    ("accounts", "550e8400-e29b-41d4-a716-446655440000"),
)


@pytest.mark.parametrize("kind,key", ONE_KEY_PER_REMAINDER)
def test_a_list_cursor_has_one_spelling(kind, key):
    import admin_schemas

    cursor = admin_schemas.encode_list_cursor(kind, key)
    assert admin_schemas.decode_list_cursor(kind, cursor) == key
    for last in (string.ascii_letters + string.digits + "-_").replace(cursor[-1], ""):
        with pytest.raises(ValueError):
            admin_schemas.decode_list_cursor(kind, cursor[:-1] + last)
