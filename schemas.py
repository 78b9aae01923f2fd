"""Request validation with marshmallow, reporting problems in the spec's wording."""

import re

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load

SLUG_PATTERN = re.compile(r"[a-zA-Z0-9_-]+")
# Only the canonical 8-4-4-4-12 form: no braces, no urn:uuid:, no missing hyphens.
UUID_PATTERN = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

STATES_NOT_ARRAY = "states must be an array"
STATES_EMPTY = "states array cannot be empty"
STATES_TOO_MANY = "states array cannot contain more than {max} items"
# Item messages are suffixes; first_error() puts "states[i]" or "states[i].field" before them.
ITEM_NOT_OBJECT = "must be an object"
FIELD_REQUIRED_STRING = "is required and must be a string"
FIELD_NOT_UUID = "must be a valid UUID"
STATE_REQUIRED_OBJECT = "is required and must be an object"

ITEM_FIELDS = ("accountId", "tickerId", "state")


def is_valid_slug(slug):
    """Whether the slug matches the spec's /^[a-zA-Z0-9_-]+$/."""
    return SLUG_PATTERN.fullmatch(slug) is not None


def is_uuid(value):
    """Whether value is a UUID string in the canonical hyphenated form, any case."""
    return isinstance(value, str) and UUID_PATTERN.fullmatch(value) is not None


class UUIDString(fields.String):
    """A required UUID string, kept as sent; empty counts as missing, as in JavaScript."""

    default_error_messages = {
        "required": FIELD_REQUIRED_STRING,
        "null": FIELD_REQUIRED_STRING,
        "invalid": FIELD_REQUIRED_STRING,
        "invalid_utf8": FIELD_REQUIRED_STRING,
        "not_uuid": FIELD_NOT_UUID,
    }

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if value == "":
            raise self.make_error("required")
        if not is_uuid(value):
            raise self.make_error("not_uuid")
        return value


class StateObject(fields.Dict):
    """A plain JSON object (not null, not an array, not a primitive), kept in its key order."""

    default_error_messages = {
        "required": STATE_REQUIRED_OBJECT,
        "null": STATE_REQUIRED_OBJECT,
        "invalid": STATE_REQUIRED_OBJECT,
    }


class StateUpdateSchema(Schema):
    """One item of `states`: which account and ticker, and the state to store."""

    error_messages = {"type": ITEM_NOT_OBJECT}

    accountId = UUIDString(required=True)
    tickerId = UUIDString(required=True)
    state = StateObject(required=True)

    class Meta:
        unknown = EXCLUDE


class StateUpdatesSchema(Schema):
    """The body of POST /api/bots/:slug/state."""

    states = fields.List(
        fields.Nested(StateUpdateSchema, error_messages={"null": ITEM_NOT_OBJECT}), required=True
    )

    class Meta:
        unknown = EXCLUDE

    def __init__(self, *, max_states, **kwargs):
        super().__init__(**kwargs)
        self.max_states = max_states

    @pre_load
    def check_array(self, data, **kwargs):
        """Check the array itself before any item, so a huge array costs nothing."""
        states = data.get("states") if isinstance(data, dict) else None
        if not isinstance(states, list):
            raise ValidationError(STATES_NOT_ARRAY, "states")
        if not states:
            raise ValidationError(STATES_EMPTY, "states")
        if len(states) > self.max_states:
            raise ValidationError(STATES_TOO_MANY.format(max=self.max_states), "states")
        return data


def first_error(messages):
    """The first problem in index order, as one sentence in the spec's wording."""
    states = messages.get("states", messages)
    if isinstance(states, list):
        return states[0]
    index = min(states)
    item = states[index]
    if isinstance(item, list):  # a null item: the Nested field's own message
        return f"states[{index}] {item[0]}"
    if "_schema" in item:
        return f"states[{index}] {item['_schema'][0]}"
    field = next(name for name in ITEM_FIELDS if name in item)
    return f"states[{index}].{field} {item[field][0]}"
