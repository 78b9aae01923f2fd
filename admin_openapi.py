"""The OpenAPI paths of the admin API (/api/admin/) and of the catalog bots read."""

import admin_schemas as s

ADMIN_SECURITY = [{"AdminKey": []}]
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "string"}}}
ADMIN_SLUG = {"in": "path", "name": "slug", "required": True, "schema": s.SLUG_FIELD, "description": "Bot identifier"}
ADMIN_ERRORS = {
    400: "Bad request: invalid JSON, body or parameter",
    401: "Admin key required (Authorization: Bearer <admin key>)",
    403: "Invalid admin key",
    404: "Bot, account or ticker not found",
    409: "Taken already (a bot's slug, an admin key's name)",
    413: "Request body too large",
    429: "The admin key is past its rate limit (only with BOTSTATE_RATE_LIMIT set)",
    500: "Internal server error",
    503: "Database busy or unavailable",
}
SCHEMAS = {
    "AdminBot": s.BotSchema,
    "CreatedBot": s.CreatedBotSchema,
    "RotatedKey": s.RotatedKeySchema,
    "BotKey": s.BotKeySchema,
    "AddedKey": s.AddedKeySchema,
    "RevokedKeys": s.RevokedSchema,
    "DeletedBot": s.DeletedBotSchema,
    "Account": s.AccountSchema,
    "Ticker": s.TickerSchema,
    "DeletedAccount": s.DeletedAccountSchema,
    "DeletedTicker": s.DeletedTickerSchema,
    "BotCreate": s.BotCreateSchema,
    "RotateKey": s.RotateKeySchema,
    "AddKey": s.AddKeySchema,
    "AccountsRegistration": s.AccountsBodySchema,
    "TickersRegistration": s.TickersBodySchema,
    "AccountsRegistered": s.register_response(s.AccountSchema),
    "TickersRegistered": s.register_response(s.TickerSchema),
    "AdminBotData": s.data_of(s.BotSchema),
    "AdminBotPage": s.page_of(s.BotSchema),
    "CreatedBotData": s.data_of(s.CreatedBotSchema),
    "RotatedKeyData": s.data_of(s.RotatedKeySchema),
    "BotKeyList": s.data_of(s.BotKeySchema, many=True),
    "AddedKeyData": s.data_of(s.AddedKeySchema),
    "RevokedKeysData": s.data_of(s.RevokedSchema),
    "DeletedBotData": s.data_of(s.DeletedBotSchema),
    "AccountPage": s.page_of(s.AccountSchema),
    "TickerPage": s.page_of(s.TickerSchema),
    "DeletedAccountData": s.data_of(s.DeletedAccountSchema),
    "DeletedTickerData": s.data_of(s.DeletedTickerSchema),
}


def _json(description, schema):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _admin(summary, ok, answer, *statuses, parameters=(), body=None, description=None):
    """An admin operation: the admin key, its parameters and body, its answer `ok` and its error statuses."""
    operation = {
        "summary": summary,
        "security": ADMIN_SECURITY,
        "parameters": list(parameters),
        "responses": {
            str(ok): _json(summary, answer),
            **{
                str(status): _json(ADMIN_ERRORS[status], "Error")
                for status in (400, 401, 403, *statuses, 429, 500, 503)
            },
        },
    }
    for status in ("429", "503"):
        operation["responses"][status]["headers"] = RETRY_AFTER
    if description:
        operation["description"] = description
    if body is not None:
        # Only a registration and a new bot need a body: the others' fields all have defaults.
        required = body.endswith("Registration") or body == "BotCreate"
        operation["requestBody"] = {"required": required, "content": {"application/json": {"schema": body}}}
    return operation


def _query(schema):
    return {"in": "query", "schema": schema}


def _id(name):
    return {"in": "path", "name": name, "required": True, "schema": {"type": "string", "format": "uuid"}}


def add_admin_paths(spec):
    """Add the admin API's schemas, security scheme and paths to `spec`."""
    spec.components.security_scheme("AdminKey", {"type": "http", "scheme": "bearer"})
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    spec.components.schema("RevokeKey", component=s.REVOKE_KEY)
    spec.path(
        path="/api/admin/bots",
        operations={
            "post": _admin(
                "Create a bot",
                201,
                "CreatedBotData",
                409,
                413,
                body="BotCreate",
                description="The answer holds the bot's first key (write scope), shown this once.",
            ),
            "get": _admin("List bots", 200, "AdminBotPage", parameters=[_query(s.BotsQuerySchema)]),
        },
    )
    spec.path(
        path="/api/admin/bots/{slug}",
        operations={
            "get": _admin("Show a bot", 200, "AdminBotData", 404, parameters=[ADMIN_SLUG]),
            "delete": _admin(
                "Delete a bot and every state it stored", 200, "DeletedBotData", 404, parameters=[ADMIN_SLUG]
            ),
        },
    )
    spec.path(
        path="/api/admin/bots/{slug}/rotate-key",
        operations={
            "post": _admin(
                "Rotate a bot's keys of a scope",
                200,
                "RotatedKeyData",
                404,
                413,
                parameters=[ADMIN_SLUG],
                body="RotateKey",
            )
        },
    )
    spec.path(
        path="/api/admin/bots/{slug}/revoke-key",
        operations={
            "post": _admin(
                "Revoke a bot's old keys, one key, or all",
                200,
                "RevokedKeysData",
                404,
                413,
                parameters=[ADMIN_SLUG],
                body="RevokeKey",
            )
        },
    )
    spec.path(
        path="/api/admin/bots/{slug}/keys",
        operations={
            "get": _admin("List a bot's working keys", 200, "BotKeyList", 404, parameters=[ADMIN_SLUG]),
            "post": _admin(
                "Add a key to a bot",
                201,
                "AddedKeyData",
                404,
                413,
                parameters=[ADMIN_SLUG],
                body="AddKey",
                description="A read key may GET only: a write with it answers 403.",
            ),
        },
    )
    for kind, register, page, deleted, query, body in (
        (
            "accounts",
            "AccountsRegistered",
            "AccountPage",
            "DeletedAccountData",
            s.AccountsQuerySchema,
            "AccountsRegistration",
        ),
        (
            "tickers",
            "TickersRegistered",
            "TickerPage",
            "DeletedTickerData",
            s.TickersQuerySchema,
            "TickersRegistration",
        ),
    ):
        spec.path(
            path=f"/api/admin/{kind}",
            operations={
                "post": _admin(
                    f"Register up to 1000 {kind}",
                    200,
                    register,
                    413,
                    body=body,
                    description="Each item succeeds or fails alone; one registered already succeeds.",
                ),
                "get": _admin(f"List {kind}", 200, page, parameters=[_query(query)]),
            },
        )
        name = "accountId" if kind == "accounts" else "tickerId"
        spec.path(
            path=f"/api/admin/{kind}/{{{name}}}",
            operations={
                "delete": _admin(
                    f"Delete one of the {kind} and every bot's states of it", 200, deleted, 404, parameters=[_id(name)]
                )
            },
        )


def add_catalog_paths(spec, slug, errors):
    """Add the catalog a bot reads with any of its keys to `spec` (`errors`: the bot endpoints' error answers)."""
    for kind, page, query, summary in (
        ("tickers", "TickerPage", s.TickersQuerySchema, "List tickers, or find one by its symbol"),
        ("accounts", "AccountPage", s.AccountsQuerySchema, "List accounts"),
    ):
        spec.path(
            path=f"/api/bots/{{slug}}/{kind}",
            operations={
                "get": {
                    "summary": summary,
                    "description": "The registered ids to write states with; any of the bot's keys reads them.",
                    "parameters": [slug, _query(query)],
                    "responses": {"200": _json(f"A page of {kind}", page), **errors},
                }
            },
        )
