"""The records `states export` writes and `import` reads, and the SQL that reads and upserts them."""

from records import Conflict

# What `flask states export` writes and `import` reads, in this order (each row's
# references come before it): record kind -> its fields and the table it fills.
TRANSFER_KINDS = {
    "bot": ("bots", ("id", "slug", "name", "createdAt")),
    "key": ("bot_keys", ("botId", "keyHash", "createdAt", "expiresAt", "lastUsedAt")),
    "account": ("accounts", ("id", "name", "createdAt")),
    "ticker": ("tickers", ("id", "symbol", "createdAt")),
    "state": (
        "user_bot_states",
        ("id", "botId", "accountId", "tickerId", "state", "version", "createdAt", "updatedAt"),
    ),
}
# Each field's column, where the names differ.
TRANSFER_COLUMNS = {
    "botId": "bot_id",
    "keyHash": "key_hash",
    "createdAt": "created_at",
    "expiresAt": "expires_at",
    "lastUsedAt": "last_used_at",
    "accountId": "user_broker_account_id",
    "tickerId": "ticker_id",
    "updatedAt": "updated_at",
}
# The key each kind is upserted by.
TRANSFER_KEYS = {
    "bot": ("id",),
    "key": ("botId", "keyHash"),
    "account": ("id",),
    "ticker": ("id",),
    "state": ("botId", "accountId", "tickerId"),
}


def transfer_statement(kind, placeholder, cast=lambda field: ""):
    """The upsert of one record of `kind`: its row is made exactly as the record says.

    `placeholder(field)` is the driver's parameter syntax; `cast(field)` a type cast to append.
    """
    table, fields = TRANSFER_KINDS[kind]
    columns = [TRANSFER_COLUMNS.get(field, field) for field in fields]
    key = [TRANSFER_COLUMNS.get(field, field) for field in TRANSFER_KEYS[kind]]
    values = ", ".join(placeholder(field) + cast(field) for field in fields)
    updates = ", ".join(f"{column} = excluded.{column}" for column in columns if column not in key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


def export_query(kind, column=lambda name: name):
    """The SELECT of every row of `kind`, as records, in key order; `column(name)` wraps each column."""
    table, fields = TRANSFER_KINDS[kind]
    selected = ", ".join(f'{column(TRANSFER_COLUMNS.get(field, field))} AS "{field}"' for field in fields)
    order = ", ".join(TRANSFER_COLUMNS.get(field, field) for field in TRANSFER_KEYS[kind])
    return f"SELECT {selected} FROM {table} ORDER BY {order}"


def transfer_conflict(kind, record, foreign_key):
    """The Conflict for a record that a foreign or unique key refused."""
    name = record.get("slug") or record.get("symbol") or record.get("id") or record.get("keyHash", "")[:12]
    if foreign_key:
        return Conflict(
            f"{kind} {name} names a bot, account or ticker that is neither before it in the file nor in the database"
        )
    return Conflict(f"{kind} {name} clashes with another {kind} in the database (same slug or symbol, another id)")
