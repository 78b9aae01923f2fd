"""How stored rows look in JSON, for the HTTP API and the CLI alike."""

import jsoncodec


def row_json(row):
    """A stored state row as the API shows it: the state is the stored JSON text, as is."""
    return {
        "id": row.id,
        "botId": row.bot_id,
        "userBrokerAccountId": row.account_id,
        "tickerId": row.ticker_id,
        "state": jsoncodec.Raw(row.state_json),
        "version": row.version,
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
    }


def change_json(change):
    """A change-log entry as the API shows it: an upsert carries the state it stored, a delete none."""
    shown = {
        "seq": change.seq,
        "op": change.op,
        "accountId": change.account_id,
        "tickerId": change.ticker_id,
        "version": change.version,
    }
    if change.state_json is not None:
        shown["state"] = jsoncodec.Raw(change.state_json)
    shown["at"] = change.at
    return shown
