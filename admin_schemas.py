"""The admin API's and the catalog's shapes: page queries and their cursors, request bodies and answers.

Queries are loaded here; bodies are checked by the operations (operations/), which the CLI
shares, so both refuse alike. The body and answer schemas describe them in the OpenAPI document.
"""

import base64
import hashlib
import hmac
import re

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from operations.bots import MAX_GRACE_SECONDS
from operations.catalog import MAX_REGISTER
from schemas import (
    CURSOR_INVALID,
    DEFAULT_PAGE_SIZE,
    LIMIT_INVALID,
    MAX_NAME_LENGTH,
    MAX_PAGE_SIZE,
    MAX_SLUG_LENGTH,
    NAME_REGEX,
    UUID_DOC,
    PageSize,
    SummarySchema,
    is_uuid,
    is_valid_bot_slug,
)
from storage import KEY_FINGERPRINT_LENGTH, KEY_SCOPES, WRITE_SCOPE
from symbols import MAX_SYMBOL_LENGTH, SYMBOL_REGEX, SYMBOL_RULE, is_valid_symbol

# A list's cursor is KEY_CURSOR_VERSION, the list's kind, the last key's UTF-8 bytes, then the first
# CURSOR_MAC_BYTES of their HMAC-SHA256, in unpadded base64url: a cursor of one list is refused by another.
KEY_CURSOR_VERSION = b"\x02"
KEY_CURSOR_KEY = b"botstate list cursor, version 2"
CURSOR_MAC_BYTES = 12
KEY_CURSOR_PATTERN = "^[A-Za-z0-9_-]{20,200}$"
LIST_KEYS = {"bots": (b"b", is_valid_bot_slug), "accounts": (b"a", is_uuid), "tickers": (b"t", is_valid_symbol)}
SYMBOL_DOC = {"pattern": f"^{SYMBOL_REGEX}$", "minLength": 1, "maxLength": MAX_SYMBOL_LENGTH}
NAME_DOC = {"pattern": f"^{NAME_REGEX}$", "minLength": 1, "maxLength": MAX_NAME_LENGTH}
LIST_EXAMPLES = {"bots": "my-bot", "accounts": "550e8400-e29b-41d4-a716-446655440000", "tickers": "AAPL"}


def _mac(body):
    return hmac.new(KEY_CURSOR_KEY, body, hashlib.sha256).digest()[:CURSOR_MAC_BYTES]


def encode_list_cursor(kind, key):
    """The opaque cursor of the list `kind` that points just past the row with this key (slug, id or symbol)."""
    body = KEY_CURSOR_VERSION + LIST_KEYS[kind][0] + key.encode("utf-8")
    return base64.urlsafe_b64encode(body + _mac(body)).decode("ascii").rstrip("=")


def decode_list_cursor(kind, text):
    """The key a cursor of the list `kind` points past; ValueError for any other text."""
    if re.fullmatch(KEY_CURSOR_PATTERN[1:-1], text) is None:
        raise ValueError("not a cursor")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # A last character differing only in bits base64 drops would decode the same: take one spelling only.
    if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != text:
        raise ValueError("not a cursor")
    body, mac = raw[:-CURSOR_MAC_BYTES], raw[-CURSOR_MAC_BYTES:]
    prefix, valid = KEY_CURSOR_VERSION + LIST_KEYS[kind][0], LIST_KEYS[kind][1]
    if not body.startswith(prefix) or not hmac.compare_digest(mac, _mac(body)):
        raise ValueError("not a cursor")
    key = body[len(prefix) :].decode("utf-8")
    if not valid(key):
        raise ValueError("not a cursor")
    return key


class ListCursor(fields.String):
    """A list's page cursor, loaded as the key it points past."""

    default_error_messages = {"invalid": CURSOR_INVALID, "not_cursor": CURSOR_INVALID}

    def __init__(self, kind, **kwargs):
        metadata = {
            "pattern": KEY_CURSOR_PATTERN,
            "format": f"botstate-{kind}-cursor",
            "example": encode_list_cursor(kind, LIST_EXAMPLES[kind]),
            "description": "The nextCursor of the previous page.",
        }
        super().__init__(metadata=metadata, **kwargs)
        self.kind = kind

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        try:
            return decode_list_cursor(self.kind, value)
        except (ValueError, UnicodeDecodeError):
            raise self.make_error("not_cursor") from None


def _limit():
    return PageSize(
        load_default=DEFAULT_PAGE_SIZE,
        validate=validate.Range(1, MAX_PAGE_SIZE, error=LIMIT_INVALID.format(min=1, max=MAX_PAGE_SIZE)),
    )


class BotsQuerySchema(Schema):
    """The query of GET /api/admin/bots: paging."""

    limit = _limit()
    cursor = ListCursor("bots")

    class Meta:
        unknown = EXCLUDE


class AccountsQuerySchema(Schema):
    """The query of the account lists: paging."""

    limit = _limit()
    cursor = ListCursor("accounts")

    class Meta:
        unknown = EXCLUDE


class Symbol(fields.String):
    """A ticker symbol, as registered."""

    default_error_messages = {"not_symbol": f"must be {SYMBOL_RULE}"}

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if not is_valid_symbol(value):
            raise self.make_error("not_symbol")
        return value


class TickersQuerySchema(Schema):
    """The query of the ticker lists: one symbol's, or a page."""

    symbol = Symbol(metadata={**SYMBOL_DOC, "description": "Only the ticker with this symbol (exact, case-sensitive)."})
    limit = _limit()
    cursor = ListCursor("tickers")

    class Meta:
        unknown = EXCLUDE


def load_query(schema, args):
    """The loaded query, or ValidationError's messages' first problem as `name message`."""
    try:
        return schema.load(args), None
    except ValidationError as error:
        name = next(name for name in schema.fields if name in error.messages)
        return None, f"{name} {error.messages[name][0]}"


# Request bodies (for the document: the operations check them).


SLUG_FIELD = {"type": "string", "pattern": "^[a-zA-Z0-9_-]+$", "maxLength": MAX_SLUG_LENGTH}


class BotCreateSchema(Schema):
    """POST /api/admin/bots."""

    slug = fields.String(required=True, metadata=SLUG_FIELD)
    name = fields.String(
        allow_none=True,
        metadata={"pattern": f"^({NAME_REGEX})?$", "description": "Empty, null or absent: the slug"},
    )

    class Meta:
        unknown = EXCLUDE  # other fields are left out, not refused


class RotateKeySchema(Schema):
    """POST /api/admin/bots/:slug/rotate-key."""

    graceSeconds = fields.Integer(
        allow_none=True,
        validate=validate.Range(0, MAX_GRACE_SECONDS),
        metadata={"description": "How long the old keys of the scope keep working (default 0: they stop at once)"},
    )
    scope = fields.String(allow_none=True, validate=validate.OneOf(KEY_SCOPES), metadata={"default": WRITE_SCOPE})

    class Meta:
        unknown = EXCLUDE  # other fields are left out, not refused


class AddKeySchema(Schema):
    """POST /api/admin/bots/:slug/keys."""

    scope = fields.String(allow_none=True, validate=validate.OneOf(KEY_SCOPES), metadata={"default": WRITE_SCOPE})

    class Meta:
        unknown = EXCLUDE  # other fields are left out, not refused


FINGERPRINT_DOC = {"pattern": f"^[0-9a-f]{{{KEY_FINGERPRINT_LENGTH}}}$"}


# POST /api/admin/bots/:slug/revoke-key: no field stops the keys in a grace period. As JSON Schema
# itself: `all` and `fingerprint` together are refused, which no marshmallow field says.
REVOKE_KEY = {
    "type": "object",
    "properties": {
        "all": {"type": ["boolean", "null"], "description": "Every key: the bot is locked out until a rotation"},
        "fingerprint": {
            "type": ["string", "null"],
            **FINGERPRINT_DOC,
            "description": "Only this key (as the keys list shows)",
        },
    },
    "not": {
        "required": ["all", "fingerprint"],
        "properties": {"all": {"const": True}, "fingerprint": {"type": "string"}},
    },
}


class AccountItemSchema(Schema):
    """An account to register."""

    id = fields.String(allow_none=True, metadata={**UUID_DOC, "description": "Null or absent: a new UUID"})
    name = fields.String(allow_none=True, metadata=NAME_DOC)

    class Meta:
        unknown = EXCLUDE  # other fields are left out, not refused


class AccountsBodySchema(Schema):
    """POST /api/admin/accounts."""

    accounts = fields.List(fields.Nested(AccountItemSchema), required=True, validate=validate.Length(1, MAX_REGISTER))

    class Meta:
        unknown = EXCLUDE  # other fields are left out, not refused


class TickerItemSchema(Schema):
    """A ticker to register."""

    symbol = fields.String(required=True, metadata=SYMBOL_DOC)
    id = fields.String(allow_none=True, metadata={**UUID_DOC, "description": "Null or absent: a new UUID"})

    class Meta:
        unknown = EXCLUDE  # other fields are left out, not refused


class TickersBodySchema(Schema):
    """POST /api/admin/tickers."""

    tickers = fields.List(fields.Nested(TickerItemSchema), required=True, validate=validate.Length(1, MAX_REGISTER))

    class Meta:
        unknown = EXCLUDE  # other fields are left out, not refused


# Answers.

TIME = {"format": "date-time"}


class BotSchema(Schema):
    """A bot, with how many states it keeps."""

    id = fields.UUID(required=True)
    slug = fields.String(required=True)
    name = fields.String(required=True)
    createdAt = fields.String(required=True, metadata=TIME)
    states = fields.Integer(required=True)


class CreatedBotSchema(Schema):
    """A bot just created, with its first key: shown this once."""

    id = fields.UUID(required=True)
    slug = fields.String(required=True)
    name = fields.String(required=True)
    createdAt = fields.String(required=True, metadata=TIME)
    apiKey = fields.String(required=True)


class RotatedKeySchema(Schema):
    """A bot's new key (shown this once), and when its old keys of the scope stop (null: they have)."""

    id = fields.UUID(required=True)
    slug = fields.String(required=True)
    name = fields.String(required=True)
    apiKey = fields.String(required=True)
    scope = fields.String(required=True, validate=validate.OneOf(KEY_SCOPES))
    oldKeysExpireAt = fields.String(required=True, allow_none=True, metadata=TIME)


class BotKeySchema(Schema):
    """One of a bot's working keys."""

    fingerprint = fields.String(required=True, metadata=FINGERPRINT_DOC)
    scope = fields.String(required=True, validate=validate.OneOf(KEY_SCOPES))
    createdAt = fields.String(required=True, metadata=TIME)
    expiresAt = fields.String(required=True, allow_none=True, metadata=TIME)
    lastUsedAt = fields.String(required=True, allow_none=True, metadata=TIME)


class AddedKeySchema(BotKeySchema):
    """A key just added to a bot: shown this once."""

    slug = fields.String(required=True)
    apiKey = fields.String(required=True)


class RevokedSchema(Schema):
    """How many of the bot's keys stopped."""

    slug = fields.String(required=True)
    revoked = fields.Integer(required=True)


class DeletedBotSchema(Schema):
    """A deleted bot, and how many states went with it."""

    id = fields.UUID(required=True)
    slug = fields.String(required=True)
    deletedStates = fields.Integer(required=True)


class AccountSchema(Schema):
    """A registered account."""

    id = fields.UUID(required=True)
    name = fields.String(required=True, allow_none=True)
    createdAt = fields.String(required=True, metadata=TIME)


class TickerSchema(Schema):
    """A registered ticker."""

    id = fields.UUID(required=True)
    symbol = fields.String(required=True)
    createdAt = fields.String(required=True, metadata=TIME)


class DeletedAccountSchema(AccountSchema):
    """A deleted account, and how many states (of every bot) went with it."""

    deletedStates = fields.Integer(required=True)


class DeletedTickerSchema(TickerSchema):
    """A deleted ticker, and how many states (of every bot) went with it."""

    deletedStates = fields.Integer(required=True)


def register_response(item_schema):
    """The schema of the answer to a bulk registration of `item_schema`s: the spec's write answer's shape."""

    class Result(Schema):
        status = fields.String(required=True, validate=validate.OneOf(["success", "error"]))
        index = fields.Integer(required=True, metadata={"description": "The item's place in the request, from 0"})
        created = fields.Boolean(metadata={"description": "On success: false when it was registered already"})
        data = fields.Nested(item_schema)
        error = fields.String()
        code = fields.String(validate=validate.OneOf(["CONFLICT"]))

    class Response(Schema):
        success = fields.Boolean(required=True)
        summary = fields.Nested(SummarySchema, required=True)
        results = fields.List(fields.Nested(Result), required=True)

    Result.__name__ = f"{item_schema.__name__.removesuffix('Schema')}Result"
    return Response


def data_of(schema, many=False):
    """The schema of `{"data": ...}` holding one `schema` (or a list of them, with many)."""

    class Data(Schema):
        data = fields.List(fields.Nested(schema), required=True) if many else fields.Nested(schema, required=True)

    return Data


def page_of(schema):
    """The schema of a page of `schema`s and the cursor of the next page (null on the last)."""

    class Page(Schema):
        data = fields.List(fields.Nested(schema), required=True)
        nextCursor = fields.String(required=True, allow_none=True, metadata={"pattern": KEY_CURSOR_PATTERN})

    return Page
