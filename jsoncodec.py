"""Strict JSON in, order-preserving JSON out: the rules that make a state round-trip exactly."""

import json
import math
import re

import orjson
from flask.json.provider import DefaultJSONProvider

# A \uD800-\uDFFF escape in the raw text is the only way a lone surrogate gets in.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# orjson is fast but turns integers past 64 bits into floats and underflows 1e-400
# to 0.0 without a word; bodies that might hold such numbers take the strict path.
_DIGITS_TO_ZERO = bytes(b"0"[0] if chr(c).isdigit() and c < 128 else b" "[0] for c in range(256))
_LONG_DIGIT_RUN = b"0" * 19
_TINY_EXPONENT = re.compile(rb"[eE]-0*[0-9]{3}")


def _orjson_may_be_inexact(data):
    # translate() and `in` run in C: a scan costs a fraction of the parse it guards.
    if _LONG_DIGIT_RUN in data.translate(_DIGITS_TO_ZERO):
        return True
    return (b"e-" in data or b"E-" in data) and _TINY_EXPONENT.search(data) is not None


class InvalidJSON(ValueError):
    """The bytes are not one strict JSON document in UTF-8."""


def _refuse_constant(name):
    raise InvalidJSON(f"{name} is not JSON")


def _finite_float(text):
    # A double cannot hold 1e999 (overflow) or 1e-999 (underflow to 0.0): refuse
    # both rather than store a different number than the client sent.
    value = float(text)
    underflow = value == 0.0 and any(digit in "123456789" for digit in text.split("e")[0].split("E")[0])
    if not math.isfinite(value) or underflow:
        raise InvalidJSON(f"number out of range: {text[:40]}")
    return value


def loads(data):
    """Parse UTF-8 bytes as strict JSON: no NaN/Infinity, no lone surrogates, no overflow."""
    if isinstance(data, (bytes, bytearray)) and not _orjson_may_be_inexact(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the strict parser below decides, and words the error
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError, digit limit
        raise InvalidJSON(str(error)) from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise InvalidJSON("lone surrogate in string")
    return value


class Raw:
    """JSON text to be written as is inside a document that dumps() serializes."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text


def _orjson_default(value):
    if isinstance(value, Raw):
        return orjson.Fragment(value.text)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# The deepest nesting orjson writes (a value at level 255 raises "Recursion limit reached");
# a Raw fragment counts as one value. States deeper than this cannot be stored.
MAX_DEPTH = 254


def dumps_bytes(value):
    """Serialize compactly to UTF-8, keeping key order and non-ASCII text as is."""
    try:
        return orjson.dumps(value, default=_orjson_default)
    except TypeError:  # an integer past 64 bits, which JSON allows and orjson does not
        # Written as fragments, so that everything else keeps orjson's form (1e-7, not 1e-07).
        return orjson.dumps(_big_integers_as_fragments(value), default=_orjson_default)


def _big_integers_as_fragments(value):
    """`value` with each integer outside 64 bits replaced by its digits as an orjson.Fragment."""
    if isinstance(value, dict):
        return {name: _big_integers_as_fragments(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_big_integers_as_fragments(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return orjson.Fragment(str(value))
    return value


def dumps(value):
    """Serialize compactly to text, keeping key order and non-ASCII text as is."""
    return dumps_bytes(value).decode("utf-8")


def depth_exceeds(value, limit):
    """Whether `value` nests objects/arrays more than `limit` levels deep."""
    return isinstance(value, (dict, list)) and _nested_past(value, limit - 1)


def _nested_past(container, levels_left):
    # Recursion goes at most `limit` levels down: it stops at the first one too deep.
    if levels_left < 0:
        return True
    for child in container.values() if isinstance(container, dict) else container:
        if isinstance(child, (dict, list)) and _nested_past(child, levels_left - 1):
            return True
    return False


def _has_lone_surrogate(value):
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings = (item,)
        elif isinstance(item, dict):
            strings = item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            strings = ()
            stack.extend(item)
        else:
            continue
        for string in strings:
            try:
                string.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with the same output as dumps(): key order kept, UTF-8."""

    sort_keys = False
    ensure_ascii = False
    compact = True

    def dumps(self, obj, **kwargs):
        """Serialize for a response."""
        return dumps(obj)

    def response(self, *args, **kwargs):
        """A JSON response, serialized straight to bytes."""
        value = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(dumps_bytes(value), mimetype=self.mimetype)
