"""Validation and OpenAPI shapes of the change feed, a row's history and as-of reads."""

import re

from marshmallow import EXCLUDE, Schema, fields, validate

from schemas import (
    DEFAULT_PAGE_SIZE,
    LIMIT_INVALID,
    MAX_PAGE_SIZE,
    MAX_VERSION,
    UUID_DOC,
    FilterUUID,
    PageSize,
    Timestamp,
)

SEQ_DIGITS = re.compile(r"0|[1-9][0-9]{0,18}")


class Position(fields.Integer):
    """A seq or version in the query: plain ASCII digits, no sign or leading zero, from `least` to MAX_VERSION."""

    def __init__(self, least, **kwargs):
        message = LIMIT_INVALID.format(min=least, max=MAX_VERSION)
        super().__init__(validate=validate.Range(least, MAX_VERSION, error=message), **kwargs)
        self.error_messages["invalid"] = message

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or SEQ_DIGITS.fullmatch(value) is None:
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


def page_size():
    """The `limit` field of a change page: 1 to 1000, 100 by default."""
    return PageSize(
        load_default=DEFAULT_PAGE_SIZE,
        validate=validate.Range(1, MAX_PAGE_SIZE, error=LIMIT_INVALID.format(min=1, max=MAX_PAGE_SIZE)),
    )


class ChangesQuerySchema(Schema):
    """The query of GET /api/bots/:slug/changes: where to read from, how many, optional filters."""

    after = Position(0, load_default=0, metadata={"description": "The nextAfter of the previous poll; 0 at first."})
    limit = page_size()
    accountId = FilterUUID(metadata={"pattern": UUID_DOC["pattern"]})
    tickerId = FilterUUID(metadata={"pattern": UUID_DOC["pattern"]})

    class Meta:
        unknown = EXCLUDE


class HistoryQuerySchema(Schema):
    """The query of GET /api/bots/:slug/state/:accountId/:tickerId/history."""

    limit = page_size()
    before = Position(1, metadata={"description": "The nextBefore of the previous page."})

    class Meta:
        unknown = EXCLUDE


class AsOfQuerySchema(Schema):
    """The asOf query parameter of GET /api/bots/:slug/state/:accountId/:tickerId."""

    asOf = Timestamp(metadata={"format": "date-time", "description": "The row as it was at this moment."})

    class Meta:
        unknown = EXCLUDE


class ChangeSchema(Schema):
    """One change: a row's upsert, with its full stored state, or its delete."""

    seq = fields.Integer(required=True, metadata={"description": "Increases in commit order across the database."})
    op = fields.String(required=True, validate=validate.OneOf(["upsert", "delete"]))
    accountId = fields.UUID(required=True)
    tickerId = fields.UUID(required=True)
    version = fields.Integer(
        required=True, metadata={"description": "The version the upsert stored, or that the delete removed."}
    )
    state = fields.Dict(metadata={"description": "The full stored state (upserts only)."})
    at = fields.DateTime(required=True)


class ChangesPageSchema(Schema):
    """The bot's changes after `after`, oldest first, and where the next poll starts."""

    data = fields.List(fields.Nested(ChangeSchema), required=True)
    nextAfter = fields.Integer(required=True)


class HistoryPageSchema(Schema):
    """A row's kept versions, newest first (its delete first, when it was deleted)."""

    data = fields.List(fields.Nested(ChangeSchema), required=True)
    nextBefore = fields.Integer(required=True, allow_none=True)
