"""Request validation with marshmallow, reporting problems in the spec's wording."""

import base64
import hashlib
import hmac
import re
import unicodedata
import uuid

from marshmallow import EXCLUDE, Schema, ValidationError, fields, missing, pre_load, validate

import clock
from jsoncodec import depth_exceeds
from records import ItemError, VersionConflict
from symbols import SURROGATE

SLUG_PATTERN = re.compile(r"[a-zA-Z0-9_-]+")
# Only the canonical 8-4-4-4-12 form: no braces, no urn:uuid:, no missing hyphens.
UUID_REGEX = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
UUID_PATTERN = re.compile(UUID_REGEX)
# The same rules, written for the OpenAPI document (JSON Schema patterns are not anchored).
UUID_DOC = {"type": "string", "pattern": f"^{UUID_REGEX}$"}
SLUG_DOC = {"type": "string", "pattern": "^[a-zA-Z0-9_-]+$"}

INVALID_SLUG = "Invalid slug format. Only alphanumeric characters, hyphens, and underscores are allowed."
STATES_NOT_ARRAY = "states must be an array"
STATES_EMPTY = "states array cannot be empty"
STATES_TOO_MANY = "states array cannot contain more than {max} items"
# Item messages are suffixes; first_error() puts "states[i]" or "states[i].field" before them.
ITEM_NOT_OBJECT = "must be an object"
FIELD_REQUIRED_STRING = "is required and must be a string"
FIELD_NOT_UUID = "must be a valid UUID"
STATE_REQUIRED_OBJECT = "is required and must be an object"
STATE_TOO_DEEP = "is nested more than {max_depth} levels deep"

VERSION_INVALID = "must be an integer from 0 to {max}"
LIMIT_INVALID = "must be an integer from {min} to {max}"
TIMESTAMP_INVALID = "must be an RFC 3339 date-time, e.g. 2026-11-24T21:00:00Z"
CURSOR_INVALID = "is not a cursor this service returned"

ITEM_FIELDS = ("accountId", "tickerId", "state", "expectedVersion")
MAX_VERSION = 2**63 - 1  # SQLite's largest integer
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

# ASCII digits only: \d would also take other scripts' digits, which int() reads.
# A page size as a client writes it: plain ASCII digits, no sign, spaces, underscores or leading zeros.
PAGE_SIZE = re.compile(r"[1-9][0-9]{0,3}")
# What `botstate bots create` accepts: the API takes longer slugs, which no bot can have.
MAX_SLUG_LENGTH = 100
MAX_NAME_LENGTH = 200
# A name has no control character (Cc).
NAME_REGEX = f"[^\\x00-\\x1f\\x7f-\\x9f]{{1,{MAX_NAME_LENGTH}}}"


def is_valid_slug(slug):
    """Whether the slug matches the spec's /^[a-zA-Z0-9_-]+$/."""
    return SLUG_PATTERN.fullmatch(slug) is not None


def is_valid_bot_slug(slug):
    """Whether `botstate bots create` takes the slug: the spec's pattern, at most MAX_SLUG_LENGTH."""
    return is_valid_slug(slug) and len(slug) <= MAX_SLUG_LENGTH


def is_valid_name(name):
    """Whether a bot's or account's display name is 1..200 characters without control characters."""
    return (
        0 < len(name) <= MAX_NAME_LENGTH
        and not any(unicodedata.category(c) == "Cc" for c in name)
        and SURROGATE.search(name) is None
    )


def is_uuid(value):
    """Whether value is a UUID string in the canonical hyphenated form, any case."""
    return isinstance(value, str) and UUID_PATTERN.fullmatch(value) is not None


class LeanField(fields.Field):
    """A field whose common, plainly valid values skip marshmallow's generic steps.

    A 1000-item body runs 4000 field loads. Values that `plainly_valid` accepts
    are returned as they are, which is what the full load would return; any other
    value takes the full load, so results and messages stay marshmallow's own.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A subclass that loads values its own way must say itself which it keeps as they are.
        if "_deserialize" in cls.__dict__ and "plainly_valid" not in cls.__dict__:
            cls.plainly_valid = LeanField.plainly_valid

    def plainly_valid(self, value):
        """Whether the full load would return `value` itself, no questions asked."""
        return False

    def deserialize(self, value, attr=None, data=None, **kwargs):
        """The loaded value: at once when plainly valid, else as marshmallow loads it."""
        if not (self.pre_load or self.post_load) and self.plainly_valid(value):
            return value
        return super().deserialize(value, attr, data, **kwargs)


class UUIDString(LeanField, fields.String):
    """A required UUID string, kept as sent; empty counts as missing, as in JavaScript."""

    default_error_messages = {
        "required": FIELD_REQUIRED_STRING,
        "null": FIELD_REQUIRED_STRING,
        "invalid": FIELD_REQUIRED_STRING,
        "invalid_utf8": FIELD_REQUIRED_STRING,
        "not_uuid": FIELD_NOT_UUID,
    }

    def plainly_valid(self, value):
        """A str in the canonical UUID form, with no validators added."""
        return type(value) is str and not self.validators and UUID_PATTERN.fullmatch(value) is not None

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if value == "":
            raise self.make_error("required")
        if not is_uuid(value):
            raise self.make_error("not_uuid")
        return value


class StateObject(LeanField, fields.Dict):
    """A plain JSON object (not null, not an array, not a primitive), kept in its key order,
    nested at most `max_depth` levels (the object itself is level 1)."""

    default_error_messages = {
        "required": STATE_REQUIRED_OBJECT,
        "null": STATE_REQUIRED_OBJECT,
        "invalid": STATE_REQUIRED_OBJECT,
        "too_deep": STATE_TOO_DEEP,
    }
    max_depth = None

    def plainly_valid(self, value):
        """A dict within the depth limit, with no validators added."""
        return (
            type(value) is dict
            and not self.validators
            and (self.max_depth is None or not depth_exceeds(value, self.max_depth))
        )

    def _deserialize(self, value, attr, data, **kwargs):
        # Parsed JSON objects are dicts: keep the caller's, rather than copying it as Dict does.
        if type(value) is not dict:
            raise self.make_error("invalid")
        if self.max_depth is not None and depth_exceeds(value, self.max_depth):
            raise self.make_error("too_deep", max_depth=self.max_depth)
        return value


class Version(LeanField, fields.Integer):
    """A row version: a JSON integer (5 or 5.0, not a boolean, fraction or string) from 0 up."""

    default_error_messages = {key: VERSION_INVALID.format(max=MAX_VERSION) for key in ("invalid", "null", "too_large")}

    def __init__(self, **kwargs):
        super().__init__(
            strict=True,
            validate=validate.Range(0, MAX_VERSION, error=VERSION_INVALID.format(max=MAX_VERSION)),
            **kwargs,
        )

    def plainly_valid(self, value):
        """An int in range, when the only validator is the range itself."""
        return type(value) is int and 0 <= value <= MAX_VERSION and len(self.validators) == 1

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**64:
            value = int(value)  # JSON has one number type: 5.0 is the integer 5, as in JSON Schema
        return super()._deserialize(value, attr, data, **kwargs)


class StateUpdateSchema(Schema):
    """One item of `states`: which account and ticker, the state, and optionally the version it must have."""

    error_messages = {"type": ITEM_NOT_OBJECT}

    accountId = UUIDString(required=True, metadata={"pattern": UUID_DOC["pattern"]})
    tickerId = UUIDString(required=True, metadata={"pattern": UUID_DOC["pattern"]})
    state = StateObject(required=True, metadata={"description": "Bot-specific state: any JSON object."})
    expectedVersion = Version(
        load_default=None,
        metadata={"description": "Write only if the stored version is this (0: only if no row exists)."},
    )

    class Meta:
        unknown = EXCLUDE


class StateList(fields.List):
    """The `states` array: each item loaded by StateUpdateSchema's own fields.

    Documented (OpenAPI) and reported exactly like List(Nested(StateUpdateSchema)),
    but without running a whole Schema load per item, which cost more than half
    of a 1000-item request.
    """

    def __init__(self, **kwargs):
        # The inner field documents the items; _deserialize below does the loading.
        super().__init__(fields.Nested(StateUpdateSchema), **kwargs)

    def load_item(self, item):
        """(the loaded item, None), or (None, its errors as marshmallow words them)."""
        if type(item) is not dict:
            return None, {"_schema": [ITEM_NOT_OBJECT]}
        result, errors = {}, {}
        for name, field in self.inner.schema.fields.items():
            try:
                result[name] = field.deserialize(item.get(name, missing), name, item)
            except ValidationError as error:
                errors[name] = error.messages
        return (None, errors) if errors else (result, None)

    def _deserialize(self, value, attr, data, **kwargs):
        loaded, errors = [], {}
        for index, item in enumerate(value):
            result, item_errors = self.load_item(item)
            if item_errors:
                errors[index] = item_errors
            else:
                loaded.append(result)
        if errors:
            raise ValidationError(errors, valid_data=loaded)
        return loaded


class StateUpdatesSchema(Schema):
    """The body of POST /api/bots/:slug/state."""

    states = StateList(required=True)

    class Meta:
        unknown = EXCLUDE

    def __init__(self, *, max_states, max_depth=None, **kwargs):
        super().__init__(**kwargs)
        self.max_states = max_states
        # Checked in check_array (to word it as the spec does); stated here for the document.
        self.fields["states"].metadata = {"minItems": 1, "maxItems": max_states}
        self.fields["states"].inner.schema.fields["state"].max_depth = max_depth

    @pre_load
    def check_array(self, data, **kwargs):
        """Check the array itself before any item, so a huge array costs nothing."""
        states = data.get("states") if isinstance(data, dict) else None
        self.check_states_array(isinstance(states, list), len(states) if isinstance(states, list) else 0)
        return data

    def check_states_array(self, is_array, length):
        """Raise the problem of a `states` value that is (or is not) an array of `length` items."""
        if not is_array:
            raise ValidationError(STATES_NOT_ARRAY, "states")
        if not length:
            raise ValidationError(STATES_EMPTY, "states")
        if length > self.max_states:
            raise ValidationError(STATES_TOO_MANY.format(max=self.max_states), "states")


class Timestamp(fields.String):
    """An RFC 3339 date-time, loaded as the stored form: UTC, milliseconds, Z."""

    default_error_messages = {"invalid": TIMESTAMP_INVALID, "not_timestamp": TIMESTAMP_INVALID}

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        try:
            return clock.rfc3339_as_stored(value)
        except ValueError:
            raise self.make_error("not_timestamp") from None


class PageSize(fields.Integer):
    """The `limit` query parameter: an integer from 1 to MAX_PAGE_SIZE written in plain ASCII digits."""

    default_error_messages = {"invalid": LIMIT_INVALID.format(min=1, max=MAX_PAGE_SIZE)}

    def _deserialize(self, value, attr, data, **kwargs):
        # int() would also take " 5 ", "+5", "1_000" and other scripts' digits.
        if not isinstance(value, str) or PAGE_SIZE.fullmatch(value) is None:
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


# A cursor is CURSOR_VERSION, the account's and the ticker's 16 bytes, then the first
# CURSOR_MAC_BYTES of their HMAC-SHA256, in unpadded base64url. The key is fixed, so
# every server process, before and after a restart, makes and takes the same cursors:
# the MAC checks structure (random or edited strings are refused), it is not a secret.
CURSOR_VERSION = b"\x01"
CURSOR_KEY = b"botstate page cursor, version 1"
CURSOR_MAC_BYTES = 12
_CURSOR_IDS_END = len(CURSOR_VERSION) + 32
CURSOR_LENGTH = (_CURSOR_IDS_END + CURSOR_MAC_BYTES) * 4 // 3  # 45 bytes, 60 characters, no padding
CURSOR_REGEX = f"[A-Za-z0-9_-]{{{CURSOR_LENGTH}}}"


def _cursor_mac(body):
    """The truncated HMAC-SHA256 that ends a cursor with this version byte and these ids."""
    return hmac.new(CURSOR_KEY, body, hashlib.sha256).digest()[:CURSOR_MAC_BYTES]


def encode_cursor(account_id, ticker_id):
    """The opaque cursor that points just past the row with these ids."""
    body = CURSOR_VERSION + uuid.UUID(account_id).bytes + uuid.UUID(ticker_id).bytes
    return base64.urlsafe_b64encode(body + _cursor_mac(body)).decode("ascii")


def decode_cursor(text):
    """The (account id, ticker id) a cursor from encode_cursor points past; ValueError for any other text."""
    if re.fullmatch(CURSOR_REGEX, text) is None:
        raise ValueError("not a cursor")
    raw = base64.urlsafe_b64decode(text)
    body, mac = raw[:_CURSOR_IDS_END], raw[_CURSOR_IDS_END:]
    if not body.startswith(CURSOR_VERSION) or not hmac.compare_digest(mac, _cursor_mac(body)):
        raise ValueError("not a cursor")
    ids = body[len(CURSOR_VERSION) :]
    return str(uuid.UUID(bytes=ids[:16])), str(uuid.UUID(bytes=ids[16:]))


class Cursor(fields.String):
    """A page cursor, loaded as the (account id, ticker id) key it points past."""

    PATTERN = f"^{CURSOR_REGEX}$"
    # For the OpenAPI document: the pattern says the shape; only the server can tell a real one.
    DOC = {
        "pattern": PATTERN,
        "format": "botstate-cursor",
        "example": encode_cursor("550e8400-e29b-41d4-a716-446655440000", "222e4567-e89b-12d3-a456-426614174002"),
    }
    default_error_messages = {"invalid": CURSOR_INVALID, "not_cursor": CURSOR_INVALID}

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        try:
            return decode_cursor(value)
        except ValueError:
            raise self.make_error("not_cursor") from None


class FilterUUID(UUIDString):
    """A UUID path or query parameter, loaded lowercase; present but empty is not a UUID."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value == "":
            raise self.make_error("not_uuid")
        return super()._deserialize(value, attr, data, **kwargs).lower()


class StateQuerySchema(Schema):
    """The query of GET /api/bots/:slug/state: optional filters and paging."""

    accountId = FilterUUID(metadata={"pattern": UUID_DOC["pattern"]})
    tickerId = FilterUUID(metadata={"pattern": UUID_DOC["pattern"]})
    updatedSince = Timestamp(
        metadata={"format": "date-time", "description": "Only rows updated at or after this moment."}
    )
    limit = PageSize(
        load_default=DEFAULT_PAGE_SIZE,
        validate=validate.Range(1, MAX_PAGE_SIZE, error=LIMIT_INVALID.format(min=1, max=MAX_PAGE_SIZE)),
    )
    cursor = Cursor(metadata={**Cursor.DOC, "description": "The nextCursor of the previous page."})

    class Meta:
        unknown = EXCLUDE


class StateKeySchema(Schema):
    """The path of one state row: /api/bots/:slug/state/:accountId/:tickerId."""

    accountId = FilterUUID(
        required=True,
        metadata={"pattern": UUID_DOC["pattern"], "example": "550e8400-e29b-41d4-a716-446655440000"},
    )
    tickerId = FilterUUID(
        required=True,
        metadata={"pattern": UUID_DOC["pattern"], "example": "222e4567-e89b-12d3-a456-426614174002"},
    )


def first_param_error(messages, schema):
    """The first invalid parameter, in the schema's field order, as one sentence."""
    name = next(name for name in schema.fields if name in messages)
    return f"{name} {messages[name][0]}"


def first_error(messages):
    """The first problem in index order, as one sentence in the spec's wording."""
    states = messages.get("states", messages)
    if isinstance(states, list):
        return states[0]
    index = min(states)
    item = states[index]
    if "_schema" in item:
        return f"states[{index}] {item['_schema'][0]}"
    field = next(name for name in ITEM_FIELDS if name in item)
    return f"states[{index}].{field} {item[field][0]}"


# Response bodies. The API builds them directly; these schemas describe them in the
# OpenAPI document, so every field the server sends is declared here.


class StateRowSchema(Schema):
    """A stored state row."""

    id = fields.UUID(required=True)
    botId = fields.UUID(required=True)
    userBrokerAccountId = fields.UUID(required=True)
    tickerId = fields.UUID(required=True)
    state = fields.Dict(required=True)
    version = fields.Integer(required=True, validate=validate.Range(1, MAX_VERSION))
    createdAt = fields.DateTime(required=True)
    updatedAt = fields.DateTime(required=True)


class SummarySchema(Schema):
    """How many items a bulk write had, and how many succeeded or failed."""

    total = fields.Integer(required=True)
    succeeded = fields.Integer(required=True)
    failed = fields.Integer(required=True)


# The codes of per-item errors, beside their messages.
ITEM_ERROR_CODES = (*(error.code for error in ItemError), VersionConflict.code)


class ItemResultSchema(Schema):
    """The outcome of one item: `data` on success; `error`, `code` (and for a version
    conflict `currentVersion`) on failure; `index` on both."""

    status = fields.String(required=True, validate=validate.OneOf(["success", "error"]))
    data = fields.Nested(StateRowSchema)
    error = fields.String()
    accountId = fields.String(required=True)
    tickerId = fields.String(required=True)
    index = fields.Integer(
        required=True, metadata={"description": "The item's place in the request's states array, from 0"}
    )
    code = fields.String(
        validate=validate.OneOf(ITEM_ERROR_CODES), metadata={"description": "On failure: why, for programs"}
    )
    currentVersion = fields.Integer(
        metadata={"description": "On a version conflict: the stored version (0: no row), to retry with"}
    )


class WriteResponseSchema(Schema):
    """The answer to POST and PATCH: always success, with a result per item."""

    success = fields.Boolean(required=True)
    summary = fields.Nested(SummarySchema, required=True)
    results = fields.List(fields.Nested(ItemResultSchema), required=True)


class StateResponseSchema(Schema):
    """One state row."""

    data = fields.Nested(StateRowSchema, required=True)


class StatePageSchema(Schema):
    """A page of state rows and the cursor of the next page (null on the last)."""

    data = fields.List(fields.Nested(StateRowSchema), required=True)
    nextCursor = fields.String(required=True, allow_none=True, metadata=Cursor.DOC)


class ErrorSchema(Schema):
    """An error: a message and a machine-readable code."""

    error = fields.String(required=True)
    code = fields.String(required=True)


class AuthErrorSchema(Schema):
    """An authentication error (401, 403), shaped as the spec shows it."""

    message = fields.String(required=True)


class HealthSchema(Schema):
    """Whether the service and its database answer."""

    status = fields.String(required=True, validate=validate.OneOf(["ok", "unavailable"]))
    version = fields.String(metadata={"description": "botstate's version, as `botstate --version` shows it (when ok)"})
