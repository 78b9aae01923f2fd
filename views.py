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
