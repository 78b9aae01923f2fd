"""The records `states export` writes and `import` reads, and the SQL that reads and upserts them."""

from records import Conflict

# What `flask states export` writes and `import` reads, in this order (each row's
# references come before it): record kind -> its fields and the table it fills.
TRANSFER_KINDS = {
    "bot": ("bots", ("id", "slug", "name", "createdAt")),
    "key": ("bot_keys", ("botId", "keyHash", "createdAt", "expiresAt", "lastUsedAt", "scope")),
    "account": ("accounts", ("id", "name", "createdAt")),
    "ticker": ("tickers", ("id", "symbol", "createdAt")),
    "state": (
        "user_bot_states",
        ("id", "botId", "accountId", "tickerId", "state", "version", "createdAt", "updatedAt"),
    ),
    # The change log, oldest first (without its seqs, which the importing database hands out anew):
    # imported after the rows, in place of what their import logged.
    "change": (
        "state_changes",
        ("botId", "accountId", "tickerId", "rowId", "op", "version", "state", "createdAt", "at"),
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
# The change log's own column names, where they differ from TRANSFER_COLUMNS'.
CHANGE_COLUMNS = {"accountId": "account_id", "rowId": "row_id"}
# The key each kind is upserted by.
TRANSFER_KEYS = {
    "bot": ("id",),
    "key": ("botId", "keyHash"),
    "account": ("id",),
    "ticker": ("id",),
    "state": ("botId", "accountId", "tickerId"),
    "change": ("seq",),  # the order of the export; not a field
}


def column_of(kind, field):
    """The column that holds a record field of `kind`."""
    if kind == "change" and field in CHANGE_COLUMNS:
        return CHANGE_COLUMNS[field]
    return TRANSFER_COLUMNS.get(field, field)


def transfer_statement(kind, placeholder, cast=lambda field: "", differs=None):
    """The upsert of one record of `kind`: its row is made exactly as the record says.

    `placeholder(field)` is the driver's parameter syntax; `cast(field)` a type cast to append;
    `differs(a, b)` SQL that two values differ: a state row is only written when it changes,
    so that importing it again logs no change.
    """
    table, fields = TRANSFER_KINDS[kind]
    columns = [column_of(kind, field) for field in fields]
    key = [column_of(kind, field) for field in TRANSFER_KEYS[kind]]
    values = ", ".join(placeholder(field) + cast(field) for field in fields)
    updates = ", ".join(f"{column} = excluded.{column}" for column in columns if column not in key)
    changed = ""
    if kind == "state" and differs is not None:
        changed = " WHERE " + " OR ".join(
            differs(f"{table}.{column}", f"excluded.{column}") for column in columns if column not in key
        )
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}{changed}"
    )


def export_query(kind, column=lambda name: name):
    """The SELECT of every row of `kind`, as records, in key order; `column(name)` wraps each column."""
    table, fields = TRANSFER_KINDS[kind]
    selected = ", ".join(f'{column(column_of(kind, field))} AS "{field}"' for field in fields)
    order = ", ".join(column_of(kind, field) for field in TRANSFER_KEYS[kind])
    where = " WHERE op <> 'gap'" if kind == "change" else ""  # SQLite's stand-in for its largest seq
    return f"SELECT {selected} FROM {table}{where} ORDER BY {order}"


def transfer_conflict(kind, record, foreign_key):
    """The Conflict for a record that a foreign or unique key refused."""
    name = record.get("slug") or record.get("symbol") or record.get("id") or record.get("keyHash", "")[:12]
    if foreign_key:
        return Conflict(
            f"{kind} {name} names a bot, account or ticker that is neither before it in the file nor in the database"
        )
    return Conflict(f"{kind} {name} clashes with another {kind} in the database (same slug or symbol, another id)")
