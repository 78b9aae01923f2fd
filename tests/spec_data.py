"""Ids and bodies taken from the spec's examples, shared by the tests."""

ACCOUNT_0 = "550e8400-e29b-41d4-a716-446655440000"
ACCOUNT_1 = "550e8400-e29b-41d4-a716-446655440001"
ACCOUNT_2 = "550e8400-e29b-41d4-a716-446655440002"
TICKER_AAPL = "222e4567-e89b-12d3-a456-426614174002"
TICKER_MSFT = "444e4567-e89b-12d3-a456-426614174004"
TICKER_UNKNOWN = "555e4567-e89b-12d3-a456-426614174005"

# The request behind the spec's 3-item response: two succeed, the third names an unknown ticker.
THREE_ITEMS = [
    {"accountId": ACCOUNT_0, "tickerId": TICKER_AAPL, "state": {"lastPrice": 150.25, "position": "long"}},
    {"accountId": ACCOUNT_1, "tickerId": TICKER_MSFT, "state": {"indicators": {"rsi": 65.5, "macd": 1.2}}},
    {"accountId": ACCOUNT_2, "tickerId": TICKER_UNKNOWN, "state": {"position": "flat"}},
]


def item(account=ACCOUNT_0, ticker=TICKER_AAPL, state=None):
    """One state update item, by default a valid one for registered ids."""
    return {"accountId": account, "tickerId": ticker, "state": {"position": "long"} if state is None else state}


# RFC 7396 Appendix A, the examples whose target and patch are both objects.
RFC7396_EXAMPLES = (
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
)
