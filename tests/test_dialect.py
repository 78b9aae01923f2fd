"""The dialects: PostgreSQL's parameter style made from the shared SQL's :name, nothing else touched."""

import pytest

from backends.dialect import POSTGRES, SQLITE


@pytest.mark.parametrize(
    "shared,postgres",
    (
        ("id = :bot", "id = %(bot)s"),
        ("VALUES (:createdAt, :key_hash)", "VALUES (%(createdAt)s, %(key_hash)s)"),
        ("id = :bot::uuid", "id = %(bot)s::uuid"),
        ("to_char(t, 'HH24:MI:SS.MS')", "to_char(t, 'HH24:MI:SS.MS')"),
        ("a::text", "a::text"),
    ),
)
def test_postgres_parameters_are_made_from_the_shared_style(shared, postgres):
    assert POSTGRES.prepare(shared) == postgres
    assert SQLITE.prepare(shared) == shared
