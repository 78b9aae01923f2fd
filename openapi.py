"""The OpenAPI 3.1 document of the API, generated from the marshmallow schemas, and its route."""

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app, jsonify

import change_schemas
import idempotency
import schemas
from admin_openapi import RETRY_AFTER, add_admin_paths, add_catalog_paths

API_VERSION = "1.4.0"

bp = Blueprint("openapi", __name__)

SLUG = {"in": "path", "name": "slug", "required": True, "schema": schemas.SLUG_DOC, "description": "Bot identifier"}
ETAG = {"ETag": {"description": 'The row\'s version, quoted: "3"', "schema": {"type": "string"}}}


def _json(description, schema, headers=None):
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _errors(*statuses):
    """The documented error answers for these statuses."""
    known = {
        400: _json("Bad request: invalid slug, JSON, body or parameter", "Error"),
        401: _json("API key required", "AuthError"),
        403: _json("Invalid API key for this bot", "AuthError"),
        404: _json("Bot (or state row) not found", "Error"),
        410: _json("Changes past `after` are no longer kept: list the states to resync", "Error"),
        412: _json("If-Match does not match the row's version", "Error", ETAG),
        409: _json("A request with this Idempotency-Key is in progress: send it again shortly", "Error"),
        413: _json("Request body too large", "Error"),
        422: _json("The Idempotency-Key was used with a different request body (or method)", "Error"),
        429: _json("The bot is past its rate limit (only with BOTSTATE_RATE_LIMIT set)", "Error", RETRY_AFTER),
        500: _json("Internal server error", "Error"),
        503: _json("Database busy or unavailable", "Error", RETRY_AFTER),
    }
    return {str(status): known[status] for status in statuses}


AUTHENTICATED = (400, 401, 403, 404, 429, 500, 503)


IDEMPOTENCY_KEY = {
    "in": "header",
    "name": idempotency.HEADER,
    "required": False,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": "^[!-~]([ -~]*[!-~])?$",
    },
    "description": (
        "Makes a retry safe: the first 200 is kept for a day per bot and key, and a repeat with the same body"
        " gets it again (with Idempotent-Replayed: true) and writes nothing. A quoted string is read unquoted."
    ),
}
REPLAYED = {
    idempotency.REPLAYED_HEADER: {
        "description": "true when this is the answer kept for the request's Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def _write_operation(summary, description, body_schema):
    return {
        "summary": summary,
        "description": description,
        "parameters": [SLUG, IDEMPOTENCY_KEY],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}},
        "responses": {
            "200": _json("Each item's outcome; failed items do not fail the request", "WriteResponse", REPLAYED),
            **_errors(*AUTHENTICATED, 409, 413, 422),
        },
    }


def build_document(updates_schema):
    """The OpenAPI document as a dict, for the request schema the app validates with."""
    spec = APISpec(
        title="botstate",
        version=API_VERSION,
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={"description": "Where trading bots keep their state, per (account, ticker)."},
        security=[{"ApiKey": []}],
    )
    spec.components.security_scheme("ApiKey", {"type": "apiKey", "in": "header", "name": "x-api-key"})
    for name, schema in (
        ("StateUpdates", updates_schema),
        ("StateRow", schemas.StateRowSchema),
        ("WriteResponse", schemas.WriteResponseSchema),
        ("StateResponse", schemas.StateResponseSchema),
        ("StatePage", schemas.StatePageSchema),
        ("Error", schemas.ErrorSchema),
        ("AuthError", schemas.AuthErrorSchema),
        ("Health", schemas.HealthSchema),
        ("Change", change_schemas.ChangeSchema),
        ("ChangesPage", change_schemas.ChangesPageSchema),
        ("HistoryPage", change_schemas.HistoryPageSchema),
    ):
        spec.components.schema(name, schema=schema)

    spec.path(
        path="/api/bots/{slug}/state",
        operations={
            "post": _write_operation(
                "Update user bot state",
                "Upsert each (account, ticker) state, replacing what was stored.",
                "StateUpdates",
            ),
            "patch": _write_operation(
                "Merge user bot state",
                "Apply each state as an RFC 7396 JSON Merge Patch to what was stored (or to {}).",
                "StateUpdates",
            ),
            "get": {
                "summary": "List user bot state",
                "description": "A page of the bot's rows in a stable order; pass nextCursor as cursor.",
                "parameters": [SLUG, {"in": "query", "schema": schemas.StateQuerySchema}],
                "responses": {"200": _json("A page of rows", "StatePage"), **_errors(*AUTHENTICATED)},
            },
        },
    )

    def row_path():
        # A new list each time: apispec expands the schema parameter in place.
        return [SLUG, {"in": "path", "schema": schemas.StateKeySchema}]

    spec.path(
        path="/api/bots/{slug}/state/{accountId}/{tickerId}",
        operations={
            "get": {
                "summary": "Read one user bot state",
                "description": "The row as it is, or with asOf as it was at that moment.",
                "parameters": row_path()
                + [{"in": "query", "schema": change_schemas.AsOfQuerySchema}]
                + [
                    {
                        "in": "header",
                        "name": "If-None-Match",
                        "schema": {"type": "string"},
                        "description": 'The ETags you hold ("3", W/"3", a list, or *), compared weakly:'
                        " 304 when one is current",
                    }
                ],
                "responses": {
                    "200": _json("The row", "StateResponse", ETAG),
                    "304": {"description": "Not modified", "headers": ETAG},
                    **_errors(*AUTHENTICATED),
                },
            },
            "delete": {
                "summary": "Delete one user bot state",
                "parameters": row_path()
                + [
                    {
                        "in": "header",
                        "name": "If-Match",
                        "schema": {"type": "string"},
                        "description": "Delete only while the row's ETag is one of these"
                        ' ("3", a list, or *), compared strongly',
                    }
                ],
                "responses": {
                    "200": _json("The deleted row", "StateResponse"),
                    **_errors(*AUTHENTICATED, 412),
                },
            },
        },
    )
    spec.path(
        path="/api/bots/{slug}/changes",
        operations={
            "get": {
                "summary": "List the bot's changes",
                "description": "The bot's changes after seq `after`, oldest first; poll again from nextAfter.",
                "parameters": [SLUG, {"in": "query", "schema": change_schemas.ChangesQuerySchema}],
                "responses": {"200": _json("Changes", "ChangesPage"), **_errors(*AUTHENTICATED, 410)},
            }
        },
    )
    spec.path(
        path="/api/bots/{slug}/state/{accountId}/{tickerId}/history",
        operations={
            "get": {
                "summary": "List one row's kept versions",
                "description": "Newest first, its delete first when it was deleted; pass nextBefore as before.",
                "parameters": row_path() + [{"in": "query", "schema": change_schemas.HistoryQuerySchema}],
                "responses": {"200": _json("Versions", "HistoryPage"), **_errors(*AUTHENTICATED)},
            }
        },
    )
    add_catalog_paths(spec, SLUG, _errors(*AUTHENTICATED))
    add_admin_paths(spec)
    spec.path(
        path="/healthz",
        operations=_public_get(
            "Health check",
            {
                "200": _json("The database answers", "Health"),
                "503": _json("The database does not answer", "Health"),
            },
        ),
    )
    spec.path(
        path="/openapi.json",
        operations=_public_get("This document", {"200": _json("OpenAPI 3.1 document", {"type": "object"})}),
    )
    return spec.to_dict()


def _public_get(summary, responses):
    """The operations of a path answering GET without an API key."""
    return {"get": {"summary": summary, "security": [], "responses": responses}}


@bp.get("/openapi.json", provide_automatic_options=False)
def openapi_document():
    """The OpenAPI document of this server."""
    document = current_app.extensions.get("botstate.openapi")
    if document is None:
        document = build_document(current_app.extensions["botstate.updates_schema"])
        current_app.extensions["botstate.openapi"] = document
    return jsonify(document)
