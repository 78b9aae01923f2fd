"""The JSON rules that make a state round-trip exactly, in and out."""

import json

import pytest

import jsoncodec

BIG = 2**70


@pytest.mark.parametrize(
    "value,text",
    (
        ({"b": 1, "a": [1.5, "é"]}, '{"b":1,"a":[1.5,"é"]}'),
        ({"big": BIG}, f'{{"big":{BIG}}}'),
        ({"state": jsoncodec.Raw('{"z": 1, "a": 2}')}, '{"state":{"z": 1, "a": 2}}'),
        # Past 64 bits the standard library serializes, and stored text is parsed to fit in.
        ({"big": BIG, "state": jsoncodec.Raw(f'{{"z":{BIG},"a":2}}')}, f'{{"big":{BIG},"state":{{"z":{BIG},"a":2}}}}'),
    ),
    ids=("key order and UTF-8 kept", "integer past 64 bits", "stored text as is", "stored text beside a big integer"),
)
def test_dumps_keeps_order_numbers_and_stored_text(value, text):
    assert jsoncodec.dumps(value) == text
    assert json.loads(jsoncodec.dumps_bytes(value)) == json.loads(text)


def test_dumps_refuses_what_is_not_json():
    with pytest.raises(TypeError):
        jsoncodec.dumps({"when": object()})
