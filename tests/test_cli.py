"""The admin CLI: `botstate bots|accounts|tickers ...` and `botstate init-db`, each with and without --json."""

import contextlib
import datetime
import hashlib
import io
import json
import re
import sqlite3
import uuid
from pathlib import Path

import pytest
from conftest import (
    BACKEND_INDEPENDENT,
    BotstateCliRunner,
    botstate_env,
    execute_sql,
    run_python,
    settings_of,
    stored_bytes,
)
from spec_data import ACCOUNT_0, ACCOUNT_1, ACCOUNT_2, TICKER_AAPL, TICKER_MSFT, item

import keys
from app import create_app
from storage import Credentials, StateWrite

ROOT = Path(__file__).resolve().parent.parent
OTHER_UUID = "123e4567-e89b-12d3-a456-426614174999"

# Malformed UUIDs: only the canonical 8-4-4-4-12 form is accepted.
BAD_UUIDS = [
    pytest.param("{550e8400-e29b-41d4-a716-446655440000}", id="braces"),
    pytest.param("urn:uuid:550e8400-e29b-41d4-a716-446655440000", id="urn"),
    pytest.param("550e8400e29b41d4a716446655440000", id="no-hyphens"),
    pytest.param("550e8400-e29b-41d4-a716-44665544000", id="too-short"),
    pytest.param("550e8400-e29b-41d4-a716-44665544000g", id="non-hex"),
    pytest.param("garbage", id="garbage"),
    pytest.param("", id="empty"),
]

JSON_OR_TEXT = pytest.mark.parametrize("json_flag", [["--json"], []], ids=["json", "text"])


# Helpers


def cli(runner, *args, input=None):
    """Run `botstate ARGS...` against the test app."""
    return runner.invoke(args=list(args), input=input)


def json_output(result):
    """The one JSON value a successful --json run printed, checking stdout holds nothing else."""
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, result.stdout
    return json.loads(result.stdout)


def text_output(result):
    """The stdout of a successful run without --json, which must not be JSON."""
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()
    with pytest.raises(ValueError):
        json.loads(result.stdout)
    return result.stdout


def assert_error(result, *fragments):
    """A clean failure: non-zero exit, nothing on stdout, an `Error: ...` line naming `fragments`.

    The one-line-only rule is checked separately by test_errors_are_one_line_on_stderr.
    """
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    assert result.stdout == ""
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment.lower() in last_line.lower()


def write(tmp_path, text, name="input.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return str(path)


def post_states(app, slug, api_key, items):
    return app.test_client().post(f"/api/bots/{slug}/state", json={"states": items}, headers={"x-api-key": api_key})


def stored_key_hash(storage, slug):
    """The hash of the bot's one working key."""
    [(key_hash, _, _)] = storage.find_bot_credentials(slug)[1]
    return key_hash


def database_bytes(storage):
    """The raw bytes of the SQLite file and its WAL/SHM companions, or PostgreSQL's rows as text."""
    return stored_bytes(settings_of(storage))


def database_dump(storage):
    """Every row of every table, as text."""
    if storage.dialect.name == "sqlite":
        with contextlib.closing(sqlite3.connect(storage.path)) as conn:
            return "\n".join(conn.iterdump())
    return stored_bytes(settings_of(storage)).decode()


def account_ids(storage):
    return [row["id"] for row in storage.list_accounts()]


def tickers_by_symbol(storage):
    return {row["symbol"]: row["id"] for row in storage.list_tickers()}


class TerminalInput(io.BytesIO):
    """Stdin that claims to be a terminal, for the interactive confirmation."""

    def isatty(self):
        return True


# botstate bots create


def test_bots_create_json_prints_only_the_new_bot(runner, storage):
    """--json prints one object {id, slug, name, createdAt, apiKey}; the name defaults to the slug."""
    created = json_output(cli(runner, "bots", "create", "alpha", "--json"))
    assert set(created) == {"id", "slug", "name", "createdAt", "apiKey"}
    assert created["slug"] == created["name"] == "alpha"
    assert uuid.UUID(created["id"])
    assert storage.get_bot("alpha")["id"] == created["id"]


def test_bots_create_with_name(runner, storage):
    created = json_output(cli(runner, "bots", "create", "alpha", "--name", "Alpha Bot", "--json"))
    assert created["name"] == "Alpha Bot"
    assert storage.get_bot("alpha")["name"] == "Alpha Bot"


def test_bots_create_key_is_prefixed_long_and_unique(runner):
    """Keys start with bsk_ and carry >= 128 bits of url-safe randomness; no two are alike."""
    created = [json_output(cli(runner, "bots", "create", f"b{i}", "--json")) for i in range(3)]
    api_keys = [bot["apiKey"] for bot in created]
    for api_key in api_keys:
        assert api_key.startswith("bsk_")
        body = api_key[len("bsk_") :]
        assert re.fullmatch(r"[A-Za-z0-9_-]+", body)
        assert len(body) * 6 >= 128  # base64url: 6 bits per character
    assert len(set(api_keys)) == 3


def test_bots_create_stores_only_the_sha256_of_the_key(runner, storage):
    """The plaintext key is nowhere in the database files; the bots table holds its SHA-256."""
    api_key = json_output(cli(runner, "bots", "create", "alpha", "--json"))["apiKey"]
    assert stored_key_hash(storage, "alpha") == keys.hash_key(api_key)
    assert keys.hash_key(api_key) == hashlib.sha256(api_key.encode()).hexdigest()
    assert api_key.encode() not in database_bytes(storage)
    assert api_key not in database_dump(storage)


def test_bots_create_text_shows_the_key_once(app, runner, storage, registered):
    """Without --json the key is printed in prose, and that key authenticates the bot."""
    output = text_output(cli(runner, "bots", "create", "alpha"))
    api_key = re.search(r"bsk_[A-Za-z0-9_-]+", output).group(0)
    assert "alpha" in output
    assert stored_key_hash(storage, "alpha") == keys.hash_key(api_key)
    assert post_states(app, "alpha", api_key, [item()]).status_code == 200


@JSON_OR_TEXT
def test_bots_create_duplicate_slug_fails(runner, storage, bot, json_flag):
    """A taken slug is refused and the existing bot keeps its key."""
    before = stored_key_hash(storage, "my-bot")
    assert_error(cli(runner, "bots", "create", "my-bot", *json_flag), "my-bot")
    assert storage.count_bots() == 1
    assert stored_key_hash(storage, "my-bot") == before


@JSON_OR_TEXT
@pytest.mark.parametrize("slug", ["bad slug", "a/b", "", "dot.ted", "new\nline", "caf\u00e9", "s" * 101])
@BACKEND_INDEPENDENT
def test_bots_create_invalid_slug_fails(runner, storage, slug, json_flag):
    assert_error(cli(runner, "bots", "create", slug, *json_flag))
    assert storage.count_bots() == 0


@JSON_OR_TEXT
@pytest.mark.parametrize("name", ["bell\x07", "n" * 201])
@BACKEND_INDEPENDENT
def test_bots_create_invalid_name_fails(runner, storage, name, json_flag):
    assert_error(cli(runner, "bots", "create", "alpha", "--name", name, *json_flag), "name")
    assert storage.count_bots() == 0


# botstate bots list


def test_bots_list_json_shows_each_bot_with_its_state_count(app, runner, bot, registered):
    other = json_output(cli(runner, "bots", "create", "other", "--name", "Other", "--json"))
    items = [item(ACCOUNT_0, TICKER_AAPL), item(ACCOUNT_1, TICKER_MSFT)]
    assert post_states(app, "my-bot", bot["apiKey"], items).status_code == 200
    rows = json_output(cli(runner, "bots", "list", "--json"))
    assert [row["slug"] for row in rows] == ["my-bot", "other"]
    for row in rows:
        assert set(row) == {"id", "slug", "name", "createdAt", "states"}
    assert (rows[0]["id"], rows[0]["name"], rows[0]["states"]) == (bot["id"], "My bot", 2)
    assert (rows[1]["id"], rows[1]["name"], rows[1]["states"]) == (other["id"], "Other", 0)
    assert all(row["createdAt"] for row in rows)


def test_bots_list_text_names_each_bot(runner, bot):
    output = text_output(cli(runner, "bots", "list"))
    assert "my-bot" in output and bot["id"] in output
    assert bot["apiKey"] not in output


# botstate bots rotate-key


@JSON_OR_TEXT
def test_bots_rotate_key_replaces_the_key_at_once(app, runner, storage, bot, registered, json_flag):
    """The new key works; the old key gets 403 right away."""
    result = cli(runner, "bots", "rotate-key", "my-bot", *json_flag)
    if json_flag:
        rotated = json_output(result)
        assert set(rotated) == {"id", "slug", "name", "apiKey", "scope", "oldKeysExpireAt"}
        assert rotated["scope"] == "write"
        assert rotated["oldKeysExpireAt"] is None
        assert (rotated["id"], rotated["slug"]) == (bot["id"], "my-bot")
        new_key = rotated["apiKey"]
    else:
        new_key = re.search(r"bsk_[A-Za-z0-9_-]+", text_output(result)).group(0)
    assert new_key.startswith("bsk_") and new_key != bot["apiKey"]
    assert stored_key_hash(storage, "my-bot") == keys.hash_key(new_key)
    assert post_states(app, "my-bot", bot["apiKey"], [item()]).status_code == 403
    assert post_states(app, "my-bot", new_key, [item()]).status_code == 200
    assert new_key.encode() not in database_bytes(storage)


@JSON_OR_TEXT
def test_bots_rotate_key_unknown_slug_fails(runner, storage, bot, json_flag):
    before = stored_key_hash(storage, "my-bot")
    assert_error(cli(runner, "bots", "rotate-key", "nope", *json_flag), "nope")
    assert stored_key_hash(storage, "my-bot") == before


def expire_old_keys(storage):
    """End every grace period now, as if its time had passed."""
    execute_sql(
        settings_of(storage), "UPDATE bot_keys SET expires_at = '2000-01-01T00:00:00.000Z' WHERE expires_at IS NOT NULL"
    )


def rotated_key(runner, *args):
    """The new key and the --json answer of `bots rotate-key my-bot ARGS`."""
    rotated = json_output(cli(runner, "bots", "rotate-key", "my-bot", *args, "--json"))
    return rotated["apiKey"], rotated


def answers(app, api_keys):
    """The status of a one-item POST with each key."""
    return [post_states(app, "my-bot", key, [item()]).status_code for key in api_keys]


def test_bots_rotate_key_with_grace_keeps_both_keys_until_it_ends(app, runner, storage, bot, registered):
    assert answers(app, [bot["apiKey"]]) == [200]  # the server remembers the old key
    new_key, rotated = rotated_key(runner, "--grace", "3600")
    expires_at = datetime.datetime.fromisoformat(rotated["oldKeysExpireAt"])
    left = expires_at - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=59) < left <= datetime.timedelta(hours=1)
    assert answers(app, [bot["apiKey"], new_key]) == [200, 200]
    expire_old_keys(storage)
    assert answers(app, [bot["apiKey"], new_key]) == [403, 200]


def test_bots_rotate_key_text_says_when_the_old_key_stops(runner, bot):
    output = text_output(cli(runner, "bots", "rotate-key", "my-bot", "--grace", "90"))
    [until] = re.findall(r"The old key keeps working until (20\d\d-\d\d-\d\dT[\d:.]+Z);", output)
    left = datetime.datetime.fromisoformat(until) - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(seconds=80) < left <= datetime.timedelta(seconds=90)


@pytest.mark.parametrize(
    "before, grace, old_keys_stop",
    (
        (("rotate-key", "--grace", "60"), "3600", True),  # the latest end of the two old keys
        (("revoke-key", "--all"), "3600", False),  # no old key works, so none keeps working
        ((), "0", False),
    ),
    ids=("after a shorter grace", "after revoke-key --all", "without grace"),
)
def test_bots_rotate_key_reports_when_the_last_old_key_stops(runner, bot, before, grace, old_keys_stop):
    if before:
        assert cli(runner, "bots", before[0], "my-bot", *before[1:]).exit_code == 0
    _, rotated = rotated_key(runner, "--grace", grace)
    ends = sorted(
        k["expiresAt"] for k in json_output(cli(runner, "bots", "keys", "my-bot", "--json")) if k["expiresAt"]
    )
    assert rotated["oldKeysExpireAt"] == (ends[-1] if old_keys_stop else None)
    assert len(ends) == (2 if old_keys_stop else 0)


@BACKEND_INDEPENDENT
def test_bots_rotate_key_refuses_a_negative_grace(runner, storage, bot):
    result = cli(runner, "bots", "rotate-key", "my-bot", "--grace", "-1")
    assert result.exit_code == 2 and "--grace" in result.stderr
    assert stored_key_hash(storage, "my-bot") == bot["keyHash"]


def test_a_second_rotation_does_not_extend_an_older_keys_grace(app, runner, storage, bot, registered):
    second_key, _ = rotated_key(runner, "--grace", "60")
    third_key, _ = rotated_key(runner, "--grace", "3600")
    grace_ends = sorted(k["expiresAt"] or "" for k in json_output(cli(runner, "bots", "keys", "my-bot", "--json")))
    assert grace_ends[0] == "" and grace_ends[1] < grace_ends[2]  # the first key still ends after 60 s
    assert answers(app, [bot["apiKey"], second_key, third_key]) == [200, 200, 200]


@JSON_OR_TEXT
def test_bots_revoke_key_ends_the_grace_period_at_once(app, runner, bot, registered, json_flag):
    new_key, _ = rotated_key(runner, "--grace", "3600")
    result = cli(runner, "bots", "revoke-key", "my-bot", *json_flag)
    if json_flag:
        assert json_output(result) == {"slug": "my-bot", "revoked": 1}
    else:
        assert "Revoked 1 old key(s) of 'my-bot'" in text_output(result)
    assert answers(app, [bot["apiKey"], new_key]) == [403, 200]
    assert json_output(cli(runner, "bots", "revoke-key", "my-bot", "--json"))["revoked"] == 0


def test_bots_revoke_key_does_not_count_keys_already_expired(runner, storage, bot):
    rotated_key(runner, "--grace", "3600")
    expire_old_keys(storage)
    assert json_output(cli(runner, "bots", "revoke-key", "my-bot", "--json"))["revoked"] == 0


def test_bots_revoke_key_all_locks_the_bot_out_until_rotate_key(app, runner, bot, registered):
    new_key, _ = rotated_key(runner, "--grace", "3600")
    assert answers(app, [bot["apiKey"], new_key]) == [200, 200]
    assert json_output(cli(runner, "bots", "revoke-key", "my-bot", "--all", "--json"))["revoked"] == 2
    assert answers(app, [bot["apiKey"], new_key]) == [403, 403]
    assert "has no working key" in text_output(cli(runner, "bots", "keys", "my-bot"))
    newest_key, _ = rotated_key(runner)
    assert answers(app, [newest_key]) == [200]


@JSON_OR_TEXT
def test_bots_keys_shows_fingerprints_and_last_use(app, runner, bot, registered, json_flag):
    before = json_output(cli(runner, "bots", "keys", "my-bot", "--json"))
    assert [(k["fingerprint"], k["expiresAt"], k["lastUsedAt"]) for k in before] == [(bot["keyHash"][:12], None, None)]
    assert answers(app, [bot["apiKey"]]) == [200]
    result = cli(runner, "bots", "keys", "my-bot", *json_flag)
    if json_flag:
        [used] = json_output(result)
        assert used["lastUsedAt"] is not None and used["lastUsedAt"] >= used["createdAt"]
    else:
        assert re.fullmatch(
            bot["keyHash"][:12] + r"\twrite\tcreated \S+Z\texpires never\tlast used 20\S+Z", text_output(result).strip()
        )
    assert bot["apiKey"] not in result.stdout


# botstate bots delete


@pytest.fixture
def two_bots_with_states(app, runner, storage, bot, registered):
    """my-bot with 2 states and other-bot with 1; returns other-bot's id."""
    other = json_output(cli(runner, "bots", "create", "other-bot", "--json"))
    items = [item(ACCOUNT_0, TICKER_AAPL), item(ACCOUNT_1, TICKER_MSFT)]
    assert post_states(app, "my-bot", bot["apiKey"], items).status_code == 200
    assert post_states(app, "other-bot", other["apiKey"], [item()]).status_code == 200
    assert (storage.count_states(bot["id"]), storage.count_states(other["id"])) == (2, 1)
    return other["id"]


@JSON_OR_TEXT
def test_bots_delete_yes_removes_the_bot_and_only_its_states(
    app, runner, storage, bot, two_bots_with_states, json_flag
):
    result = cli(runner, "bots", "delete", "my-bot", "--yes", *json_flag)
    if json_flag:
        assert json_output(result) == {"id": bot["id"], "slug": "my-bot", "deletedStates": 2}
    else:
        assert "my-bot" in text_output(result)
    assert storage.get_bot("my-bot") is None
    assert storage.count_states(bot["id"]) == 0
    assert storage.count_states(two_bots_with_states) == 1
    assert storage.get_bot("other-bot") is not None
    assert post_states(app, "my-bot", bot["apiKey"], [item()]).status_code == 404


@pytest.mark.parametrize("json_flag", [["--json"], []], ids=["json", "text-without-terminal"])
def test_bots_delete_without_yes_refuses(runner, storage, bot, two_bots_with_states, json_flag):
    """With --json, or when stdin is not a terminal, a missing --yes deletes nothing."""
    assert_error(cli(runner, "bots", "delete", "my-bot", *json_flag), "--yes")
    assert storage.get_bot("my-bot") is not None
    assert storage.count_states(bot["id"]) == 2


@pytest.mark.parametrize("answer, deleted", [("y\n", True), ("n\n", False)])
def test_bots_delete_asks_on_a_terminal(runner, storage, bot, answer, deleted):
    """On a terminal, without --yes, the command asks and deletes only on yes."""
    result = cli(runner, "bots", "delete", "my-bot", input=TerminalInput(answer.encode()))
    assert "Delete bot 'my-bot'" in result.stderr
    assert (result.exit_code == 0) is deleted
    assert (storage.get_bot("my-bot") is None) is deleted


@JSON_OR_TEXT
def test_bots_delete_unknown_slug_fails(runner, storage, bot, json_flag):
    assert_error(cli(runner, "bots", "delete", "nope", "--yes", *json_flag), "nope")
    assert storage.count_bots() == 1


# botstate accounts add


def test_accounts_add_json_without_id_makes_a_new_uuid(runner, storage):
    first = json_output(cli(runner, "accounts", "add", "--json"))
    second = json_output(cli(runner, "accounts", "add", "--name", "Bob", "--json"))
    assert set(first) == {"id", "name", "createdAt"}
    assert first["name"] is None and second["name"] == "Bob"
    assert first["id"] != second["id"]
    for account_id in (first["id"], second["id"]):
        assert str(uuid.UUID(account_id)) == account_id  # canonical and lowercase
    assert sorted(account_ids(storage)) == sorted([first["id"], second["id"]])


def test_accounts_add_json_with_id_and_name(runner, storage):
    added = json_output(cli(runner, "accounts", "add", "--id", ACCOUNT_0, "--name", "Alice", "--json"))
    assert added == {"id": ACCOUNT_0, "name": "Alice", "createdAt": added["createdAt"]}
    assert [(r["id"], r["name"]) for r in storage.list_accounts()] == [(ACCOUNT_0, "Alice")]


@JSON_OR_TEXT
def test_accounts_add_stores_uppercase_id_lowercase(runner, storage, json_flag):
    result = cli(runner, "accounts", "add", "--id", ACCOUNT_0.upper(), *json_flag)
    if json_flag:
        assert json_output(result)["id"] == ACCOUNT_0
    else:
        assert ACCOUNT_0 in text_output(result)
    assert account_ids(storage) == [ACCOUNT_0]


@JSON_OR_TEXT
@pytest.mark.parametrize("bad_id", BAD_UUIDS)
@BACKEND_INDEPENDENT
def test_accounts_add_invalid_id_fails(runner, storage, bad_id, json_flag):
    assert_error(cli(runner, "accounts", "add", "--id", bad_id, *json_flag), "--id")
    assert account_ids(storage) == []


@JSON_OR_TEXT
@pytest.mark.parametrize("same_id", [ACCOUNT_0, ACCOUNT_0.upper()], ids=["same-case", "uppercase"])
def test_accounts_add_duplicate_fails(runner, storage, same_id, json_flag):
    storage.add_account(ACCOUNT_0, "first")
    assert_error(cli(runner, "accounts", "add", "--id", same_id, "--name", "second", *json_flag), ACCOUNT_0)
    assert [(r["id"], r["name"]) for r in storage.list_accounts()] == [(ACCOUNT_0, "first")]


# botstate accounts import

UUID_LINES = f"# exported accounts\n\n{ACCOUNT_0}\n   \n{ACCOUNT_1.upper()}\n# the end\n"


def test_accounts_import_json_counts_and_is_idempotent(runner, storage, tmp_path):
    """Blank and # lines are skipped; a second run adds nothing."""
    path = write(tmp_path, UUID_LINES)
    assert json_output(cli(runner, "accounts", "import", path, "--json")) == {"added": 2, "existing": 0, "total": 2}
    assert json_output(cli(runner, "accounts", "import", path, "--json")) == {"added": 0, "existing": 2, "total": 2}
    assert account_ids(storage) == [ACCOUNT_0, ACCOUNT_1]


def test_accounts_import_text_says_how_many_were_added(runner, storage, tmp_path):
    storage.add_account(ACCOUNT_0, None)
    output = text_output(cli(runner, "accounts", "import", write(tmp_path, UUID_LINES)))
    assert "Added 1 account" in output
    assert "1 already registered" in output


def test_accounts_import_counts_a_repeated_id_once(runner, storage, tmp_path):
    path = write(tmp_path, f"{ACCOUNT_0}\n{ACCOUNT_0.upper()}\n{ACCOUNT_0}\n")
    assert json_output(cli(runner, "accounts", "import", path, "--json")) == {"added": 1, "existing": 0, "total": 1}


@pytest.mark.parametrize(
    "text",
    [
        f"id,name\n{ACCOUNT_0},Alice\n{ACCOUNT_1},\n",
        f"name,id\nAlice,{ACCOUNT_0}\n,{ACCOUNT_1}\n",
        f"\ufeffID,Name\n{ACCOUNT_0},Alice\n{ACCOUNT_1}\n",
        f'# from the broker\nid,name\n"{ACCOUNT_0}","Alice"\n\n{ACCOUNT_1}\n',
    ],
    ids=["id-name", "name-id", "bom-uppercase-header", "comment-quotes-short-row"],
)
def test_accounts_import_csv_with_id_column_and_optional_name(runner, storage, tmp_path, text):
    path = write(tmp_path, text)
    assert json_output(cli(runner, "accounts", "import", path, "--json"))["added"] == 2
    assert [(r["id"], r["name"]) for r in storage.list_accounts()] == [(ACCOUNT_0, "Alice"), (ACCOUNT_1, None)]


@JSON_OR_TEXT
def test_accounts_import_reads_stdin_for_dash(runner, storage, json_flag):
    result = cli(runner, "accounts", "import", "-", *json_flag, input=UUID_LINES)
    if json_flag:
        assert json_output(result) == {"added": 2, "existing": 0, "total": 2}
    else:
        assert "Added 2 accounts" in text_output(result)
    assert account_ids(storage) == [ACCOUNT_0, ACCOUNT_1]


@JSON_OR_TEXT
@pytest.mark.parametrize(
    "text, line",
    [
        (f"{ACCOUNT_0}\nnot-a-uuid\n{ACCOUNT_1}\n", 2),
        (f"# header comment\n\n{ACCOUNT_0}\n{{{ACCOUNT_1}}}\n", 4),
        (f"{ACCOUNT_0}\n{ACCOUNT_1.replace('-', '')}\n", 2),
        (f"id,name\n{ACCOUNT_0},Alice\n{ACCOUNT_1},Bob\nurn:uuid:{ACCOUNT_2},Carol\n", 4),
        (f"id,name\n{ACCOUNT_0},Alice\n,Nobody\n", 3),
        (f"id,name\n{ACCOUNT_0},Alice\n{ACCOUNT_1},Bo\x00b\n", 3),
        (f"id,name\n{ACCOUNT_0},{'A' * 201}\n", 2),
        (f'id,name,note\n{ACCOUNT_0},Alice,"a\nlong\nnote"\nnot-a-uuid,Bob\n', 5),
        (f'id,name\n"{ACCOUNT_0}\n",Alice\n"not\na uuid",Carol\n', 4),
    ],
    ids=[
        "garbage",
        "braces-after-comment",
        "no-hyphens",
        "urn-in-csv",
        "empty-id-cell",
        "control-character-in-name",
        "name-too-long",
        "after-a-multi-line-cell",
        "multi-line-records",
    ],
)
@BACKEND_INDEPENDENT
def test_accounts_import_bad_line_names_it_and_imports_nothing(runner, storage, tmp_path, text, line, json_flag):
    path = write(tmp_path, text)
    assert_error(cli(runner, "accounts", "import", path, *json_flag), f"line {line}")
    assert account_ids(storage) == []


@BACKEND_INDEPENDENT
def test_accounts_import_bad_line_on_real_stdin(storage):
    """`botstate accounts import -` in a real process names the bad stdin line and imports nothing.

    A subprocess, because CliRunner's stdin has no `name` for the error message to use.
    """
    env = {k: v for k, v in botstate_env(**settings_of(storage)).items() if not k.startswith("FLASK_")}
    completed = run_python(
        ["-m", "botstate", "accounts", "import", "-", "--json"],
        env,
        input=f"{ACCOUNT_0}\nbad\n",
    )
    assert completed.returncode != 0
    assert completed.stdout == ""
    assert completed.stderr.splitlines() == ["Error: <stdin> line 2: 'bad' is not a UUID"]
    assert account_ids(storage) == []


# botstate accounts list, tickers list, bots list: shared shapes


def populate(kind, storage):
    """One row of `kind`, returning a string the listing must show."""
    if kind == "bots":
        storage.create_bot("my-bot", "My bot", keys.hash_key(keys.generate_key()))
        return "my-bot"
    if kind == "accounts":
        storage.add_account(ACCOUNT_0, "Alice")
        return ACCOUNT_0
    storage.add_ticker("AAPL", TICKER_AAPL)
    return TICKER_AAPL


LIST_FIELDS = {
    "bots": {"id", "slug", "name", "createdAt", "states"},
    "accounts": {"id", "name", "createdAt"},
    "tickers": {"id", "symbol", "createdAt"},
}


@pytest.mark.parametrize("kind", LIST_FIELDS)
def test_list_json_is_an_empty_array_when_empty(runner, kind):
    assert json_output(cli(runner, kind, "list", "--json")) == []


@pytest.mark.parametrize("kind", LIST_FIELDS)
def test_list_text_says_when_empty(runner, kind):
    assert text_output(cli(runner, kind, "list")).startswith("No ")


@pytest.mark.parametrize("kind", LIST_FIELDS)
def test_list_json_rows_have_the_documented_fields(runner, storage, kind):
    shown = populate(kind, storage)
    rows = json_output(cli(runner, kind, "list", "--json"))
    assert len(rows) == 1
    assert set(rows[0]) == LIST_FIELDS[kind]
    assert shown in rows[0].values()


@pytest.mark.parametrize("kind", LIST_FIELDS)
def test_list_text_shows_each_row(runner, storage, kind):
    shown = populate(kind, storage)
    assert shown in text_output(cli(runner, kind, "list"))


def test_accounts_list_json_is_sorted_and_complete(runner, storage):
    for account_id, name in [(ACCOUNT_2, "Carol"), (ACCOUNT_0, None), (ACCOUNT_1, "Bob")]:
        storage.add_account(account_id, name)
    rows = json_output(cli(runner, "accounts", "list", "--json"))
    assert [(r["id"], r["name"]) for r in rows] == [(ACCOUNT_0, None), (ACCOUNT_1, "Bob"), (ACCOUNT_2, "Carol")]


def test_tickers_list_json_is_sorted_by_symbol(runner, storage):
    storage.add_ticker("MSFT", TICKER_MSFT)
    storage.add_ticker("AAPL", TICKER_AAPL)
    rows = json_output(cli(runner, "tickers", "list", "--json"))
    assert [(r["symbol"], r["id"]) for r in rows] == [("AAPL", TICKER_AAPL), ("MSFT", TICKER_MSFT)]


# botstate tickers add


def test_tickers_add_json_without_id_makes_a_new_uuid(runner, storage):
    added = json_output(cli(runner, "tickers", "add", "AAPL", "--json"))
    assert set(added) == {"id", "symbol", "createdAt"}
    assert added["symbol"] == "AAPL"
    assert str(uuid.UUID(added["id"])) == added["id"]
    assert tickers_by_symbol(storage) == {"AAPL": added["id"]}


@JSON_OR_TEXT
def test_tickers_add_with_uppercase_id_stores_it_lowercase(runner, storage, json_flag):
    result = cli(runner, "tickers", "add", "BRK.B", "--id", TICKER_AAPL.upper(), *json_flag)
    if json_flag:
        assert {k: v for k, v in json_output(result).items() if k != "createdAt"} == {
            "id": TICKER_AAPL,
            "symbol": "BRK.B",
        }
    else:
        assert "BRK.B" in text_output(result)
    assert tickers_by_symbol(storage) == {"BRK.B": TICKER_AAPL}


@JSON_OR_TEXT
@pytest.mark.parametrize(
    "symbol, ticker_id",
    [("AAPL", OTHER_UUID), ("NEW", TICKER_AAPL), ("NEW", TICKER_AAPL.upper())],
    ids=["same-symbol-other-id", "id-taken", "id-taken-uppercase"],
)
def test_tickers_add_duplicate_fails(runner, storage, symbol, ticker_id, json_flag):
    storage.add_ticker("AAPL", TICKER_AAPL)
    id_args = ["--id", ticker_id] if ticker_id else []
    assert_error(cli(runner, "tickers", "add", symbol, *id_args, *json_flag))
    assert tickers_by_symbol(storage) == {"AAPL": TICKER_AAPL}


@pytest.mark.parametrize(
    "args, registered_as",
    [
        (("tickers", "add", "AAPL"), "Ticker AAPL ("),
        (("tickers", "add", "AAPL", "--id", TICKER_AAPL.upper()), "Ticker AAPL ("),
        (("accounts", "add", "--id", ACCOUNT_0, "--name", "first"), f"Account {ACCOUNT_0} (first)"),
        (("accounts", "add", "--id", ACCOUNT_0), f"Account {ACCOUNT_0} (first)"),
    ],
    ids=["symbol", "symbol-and-id", "account-id-and-name", "account-id-only"],
)
def test_adding_one_registered_already_succeeds_and_changes_nothing(runner, storage, args, registered_as):
    storage.add_ticker("AAPL", TICKER_AAPL)
    storage.add_account(ACCOUNT_0, "first")
    before = (storage.list_tickers(), storage.list_accounts())
    output = text_output(cli(runner, *args))
    assert output.startswith(registered_as) and "is already registered" in output, output
    assert (storage.list_tickers(), storage.list_accounts()) == before


@JSON_OR_TEXT
@pytest.mark.parametrize("symbol", ["", "A B", "A,B", "X" * 33, "TAB\tX"])
@BACKEND_INDEPENDENT
def test_tickers_add_invalid_symbol_fails(runner, storage, symbol, json_flag):
    assert_error(cli(runner, "tickers", "add", symbol, *json_flag), "symbol")
    assert tickers_by_symbol(storage) == {}


@JSON_OR_TEXT
@pytest.mark.parametrize("bad_id", BAD_UUIDS)
@BACKEND_INDEPENDENT
def test_tickers_add_invalid_id_fails(runner, storage, bad_id, json_flag):
    assert_error(cli(runner, "tickers", "add", "AAPL", "--id", bad_id, *json_flag), "--id")
    assert tickers_by_symbol(storage) == {}


# botstate tickers import


@pytest.mark.parametrize(
    "text",
    [
        f"AAPL,{TICKER_AAPL}\nMSFT,{TICKER_MSFT.upper()}\n",
        f"symbol,id\nAAPL,{TICKER_AAPL}\n\n# comment\nMSFT,{TICKER_MSFT}\n",
        f"\ufeffSymbol,ID\nAAPL,{TICKER_AAPL}\nMSFT,{TICKER_MSFT}\n",
    ],
    ids=["no-header", "header-comment-blank", "bom-uppercase-header"],
)
def test_tickers_import_json_counts_and_is_idempotent(runner, storage, tmp_path, text):
    path = write(tmp_path, text)
    assert json_output(cli(runner, "tickers", "import", path, "--json")) == {"added": 2, "existing": 0, "total": 2}
    assert json_output(cli(runner, "tickers", "import", path, "--json")) == {"added": 0, "existing": 2, "total": 2}
    assert tickers_by_symbol(storage) == {"AAPL": TICKER_AAPL, "MSFT": TICKER_MSFT}


def test_tickers_import_symbols_without_ids_get_new_ones_and_stay_put(runner, storage, tmp_path):
    path = write(tmp_path, "symbol\nAAPL\nMSFT\n")
    assert json_output(cli(runner, "tickers", "import", path, "--json"))["added"] == 2
    first = tickers_by_symbol(storage)
    assert json_output(cli(runner, "tickers", "import", path, "--json"))["added"] == 0
    assert tickers_by_symbol(storage) == first
    assert all(str(uuid.UUID(ticker_id)) == ticker_id for ticker_id in first.values())


def test_tickers_import_text_says_how_many_were_added(runner, storage, tmp_path):
    storage.add_ticker("AAPL", TICKER_AAPL)
    output = text_output(cli(runner, "tickers", "import", write(tmp_path, f"AAPL,{TICKER_AAPL}\nMSFT\n")))
    assert "Added 1 ticker" in output
    assert "1 already registered" in output


@JSON_OR_TEXT
def test_tickers_import_reads_stdin_for_dash(runner, storage, json_flag):
    result = cli(runner, "tickers", "import", "-", *json_flag, input=f"symbol,id\nAAPL,{TICKER_AAPL}\n")
    if json_flag:
        assert json_output(result) == {"added": 1, "existing": 0, "total": 1}
    else:
        assert "Added 1 ticker" in text_output(result)
    assert tickers_by_symbol(storage) == {"AAPL": TICKER_AAPL}


@JSON_OR_TEXT
@pytest.mark.parametrize(
    "text",
    [
        f"MSFT,{TICKER_MSFT}\nAAPL,{OTHER_UUID}\n",
        f"MSFT,{TICKER_MSFT}\nAPPLE,{TICKER_AAPL}\n",
    ],
    ids=["symbol-under-other-id", "id-under-other-symbol"],
)
def test_tickers_import_conflict_with_registered_fails_and_imports_nothing(runner, storage, tmp_path, text, json_flag):
    storage.add_ticker("AAPL", TICKER_AAPL)
    assert_error(cli(runner, "tickers", "import", write(tmp_path, text), *json_flag), "AAPL")
    assert tickers_by_symbol(storage) == {"AAPL": TICKER_AAPL}


def test_tickers_import_conflict_after_many_rows_imports_nothing(runner, storage, tmp_path):
    """An import is all or nothing, however long the file (here longer than one write batch)."""
    storage.add_ticker("AAPL", TICKER_AAPL)
    lines = [f"T{n}" for n in range(1200)] + [f"AAPL,{OTHER_UUID}"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert_error(cli(runner, "tickers", "import", path, "--json"), "AAPL")
    assert tickers_by_symbol(storage) == {"AAPL": TICKER_AAPL}


@JSON_OR_TEXT
@pytest.mark.parametrize(
    "text, line",
    [
        (f"AAPL,{TICKER_AAPL}\nMSFT,not-a-uuid\n", 2),
        (f"symbol,id\n# note\nAAPL,{TICKER_AAPL}\nBAD SYMBOL,{TICKER_MSFT}\n", 4),
        (f"AAPL,{TICKER_AAPL}\nAAPL,{TICKER_MSFT}\n", 2),
        (f"symbol,id\nAAPL\n,{TICKER_MSFT}\n", 3),
        (f'symbol,id,note\nAAPL,{TICKER_AAPL},"two\nlines"\nBAD SYMBOL\n', 4),
    ],
    ids=["bad-id", "bad-symbol", "same-symbol-two-ids", "empty-symbol", "after-a-multi-line-cell"],
)
@BACKEND_INDEPENDENT
def test_tickers_import_bad_line_names_it_and_imports_nothing(runner, storage, tmp_path, text, line, json_flag):
    assert_error(cli(runner, "tickers", "import", write(tmp_path, text), *json_flag), f"line {line}")
    assert tickers_by_symbol(storage) == {}


# botstate init-db


def test_init_db_json_on_a_new_database(runner, storage):
    """A fresh database reports every migration as just applied."""
    report = json_output(cli(runner, "init-db", "--json"))
    assert set(report) == {"database", "schema", "applied"}
    assert report["database"] == storage.location
    assert report["applied"] == storage.schema_version() and report["applied"]
    assert report["schema"] == report["applied"][-1]


def test_init_db_text_names_the_path_and_schema(runner, storage):
    output = text_output(cli(runner, "init-db"))
    assert storage.location in output
    assert storage.schema_version()[-1] in output


def test_init_db_on_an_up_to_date_database_applies_nothing(storage):
    again = create_app(settings_of(storage))
    try:
        report = json_output(cli(BotstateCliRunner(again), "init-db", "--json"))
    finally:
        again.extensions["botstate.storage"].close()
    assert report["applied"] == []
    assert report["schema"] == storage.schema_version()[-1]
    assert report["database"] == storage.location


# --help of every command


def leaf_commands(group, path=()):
    """(command path, command) for every command under a click group, depth first."""
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from leaf_commands(command, path + (name,))
        else:
            yield path + (name,), command


EXPECTED_COMMANDS = {
    ("bots", "create"),
    ("bots", "list"),
    ("bots", "rotate-key"),
    ("bots", "revoke-key"),
    ("bots", "keys"),
    ("bots", "add-key"),
    ("bots", "delete"),
    ("accounts", "add"),
    ("accounts", "import"),
    ("accounts", "list"),
    ("accounts", "delete"),
    ("tickers", "add"),
    ("tickers", "import"),
    ("tickers", "list"),
    ("tickers", "delete"),
    ("states", "export"),
    ("states", "import"),
    ("states", "show"),
    ("states", "history"),
    ("db", "backup"),
    ("db", "restore"),
    ("admin-keys", "create"),
    ("admin-keys", "list"),
    ("admin-keys", "revoke"),
    ("init-db",),
}


@BACKEND_INDEPENDENT
def test_every_documented_command_is_registered(app):
    assert {path for path, _ in leaf_commands(app.cli)} == EXPECTED_COMMANDS


@BACKEND_INDEPENDENT
def test_every_command_has_help_mentioning_json(app, runner):
    for path, command in leaf_commands(app.cli):
        result = cli(runner, *path, "--help")
        assert result.exit_code == 0, path
        summary = command.help.strip().splitlines()[0] if command.help else ""
        assert summary, path
        assert " ".join(summary.split()) in " ".join(result.stdout.split()), path  # help wraps lines
        assert "--json" in result.stdout, path


@pytest.mark.parametrize("group", ["bots", "accounts", "tickers", "states"])
@BACKEND_INDEPENDENT
def test_every_group_has_help_listing_its_commands(app, runner, group):
    result = cli(runner, group, "--help")
    assert result.exit_code == 0
    assert app.cli.commands[group].help in result.stdout
    for name in app.cli.commands[group].commands:
        assert name in result.stdout


# Errors are one line on stderr

ERROR_CASES = [
    pytest.param(["bots", "create", "my-bot"], None, id="bots-create-duplicate"),
    pytest.param(["bots", "create", "bad slug"], None, id="bots-create-invalid-slug"),
    pytest.param(["bots", "rotate-key", "nope"], None, id="bots-rotate-key-unknown"),
    pytest.param(["bots", "revoke-key", "nope"], None, id="bots-revoke-key-unknown"),
    pytest.param(["bots", "keys", "nope"], None, id="bots-keys-unknown"),
    pytest.param(["bots", "delete", "nope", "--yes"], None, id="bots-delete-unknown"),
    pytest.param(["bots", "delete", "my-bot"], None, id="bots-delete-without-yes"),
    pytest.param(["accounts", "add", "--id", ACCOUNT_0, "--name", "other"], None, id="accounts-add-duplicate"),
    pytest.param(["accounts", "add", "--id", "garbage"], None, id="accounts-add-invalid-id"),
    pytest.param(["accounts", "import", "FILE"], "not-a-uuid\n", id="accounts-import-bad-line"),
    pytest.param(["tickers", "add", "AAPL", "--id", OTHER_UUID], None, id="tickers-add-duplicate"),
    pytest.param(["bots", "add-key", "nope"], None, id="bots-add-key-unknown"),
    pytest.param(["bots", "revoke-key", "my-bot", "--key", "xyz"], None, id="bots-revoke-key-bad-fingerprint"),
    pytest.param(["bots", "revoke-key", "my-bot", "--key", "0" * 12], None, id="bots-revoke-key-no-such-key"),
    pytest.param(["accounts", "delete", OTHER_UUID, "--yes"], None, id="accounts-delete-unknown"),
    pytest.param(["accounts", "delete", ACCOUNT_0], None, id="accounts-delete-without-yes"),
    pytest.param(["tickers", "delete", "NOPE", "--yes"], None, id="tickers-delete-unknown"),
    pytest.param(["tickers", "delete", "AAPL"], None, id="tickers-delete-without-yes"),
    pytest.param(["admin-keys", "revoke", "nope"], None, id="admin-keys-revoke-unknown"),
    pytest.param(["admin-keys", "create", "bad\x01name"], None, id="admin-keys-create-invalid-name"),
    pytest.param(["tickers", "add", "A B"], None, id="tickers-add-invalid-symbol"),
    pytest.param(["tickers", "add", "NEW", "--id", "garbage"], None, id="tickers-add-invalid-id"),
    pytest.param(["tickers", "import", "FILE"], f"AAPL,{OTHER_UUID}\n", id="tickers-import-conflict"),
    pytest.param(["tickers", "import", "FILE"], "A B\n", id="tickers-import-bad-line"),
]


@JSON_OR_TEXT
@pytest.mark.parametrize("args, file_text", ERROR_CASES)
def test_errors_are_one_line_on_stderr(runner, tmp_path, bot, registered, args, file_text, json_flag):
    """Every refusal: non-zero exit, empty stdout, and exactly one `Error: ...` line on stderr."""
    if file_text is not None:
        args = [write(tmp_path, file_text) if arg == "FILE" else arg for arg in args]
    result = cli(runner, *args, *json_flag)
    assert result.exit_code != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr


@pytest.mark.parametrize("group", ("accounts", "tickers"))
@BACKEND_INDEPENDENT
def test_import_of_a_file_that_is_not_utf8_is_one_line(runner, tmp_path, group):
    # Regression: a UnicodeDecodeError traceback instead of an error line.
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"AAPL\n\xe9t\xe9\n")
    result = runner.invoke(args=[group, "import", str(path), "--json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"Error: {path} is not UTF-8 text (byte 5): save it as UTF-8"]


# botstate states show


@pytest.fixture
def shown(app, storage, bot):
    """Three states of my-bot: Alice's AAPL (twice written) and MSFT, and an unnamed account's AAPL."""
    storage.add_account(ACCOUNT_0, "Alice")
    storage.add_account(ACCOUNT_1, None)
    storage.add_ticker("AAPL", TICKER_AAPL)
    storage.add_ticker("MSFT", TICKER_MSFT)
    long_state = {"note": "x" * 100}
    items = [item(state={"v": 1}), item(state={"v": 2}), item(ACCOUNT_0, TICKER_MSFT, long_state), item(ACCOUNT_1)]
    assert post_states(app, "my-bot", bot["apiKey"], items).status_code == 200
    return long_state


def test_states_show_prints_a_table_by_symbol_and_name(runner, shown):
    lines = text_output(cli(runner, "states", "show", "my-bot")).splitlines()
    assert lines[0].split() == ["ACCOUNT", "TICKER", "VERSION", "UPDATED", "STATE"]
    rows = [re.split(r"\s{2,}", line) for line in lines[1:]]
    assert [row[:3] for row in rows] == [["Alice", "AAPL", "2"], ["Alice", "MSFT", "1"], [ACCOUNT_1, "AAPL", "1"]]
    assert {row[3] for row in rows} <= {"just now", "1s ago", "2s ago"}
    assert rows[0][4] == '{"v":2}'
    assert rows[1][4] == json.dumps(shown, separators=(",", ":"))[:59] + "…"


@pytest.mark.parametrize(
    "args,expected",
    (
        (["--ticker", "MSFT"], [("Alice", "MSFT")]),
        (["--ticker", TICKER_AAPL.upper()], [("Alice", "AAPL"), (ACCOUNT_1, "AAPL")]),
        (["--account", ACCOUNT_1], [(ACCOUNT_1, "AAPL")]),
        (["--account", ACCOUNT_0, "--ticker", "AAPL"], [("Alice", "AAPL")]),
    ),
    ids=("ticker by symbol", "ticker by id", "account", "both"),
)
def test_states_show_filters_by_account_and_ticker(runner, shown, args, expected):
    lines = text_output(cli(runner, "states", "show", "my-bot", *args)).splitlines()[1:]
    assert [tuple(re.split(r"\s{2,}", line)[:2]) for line in lines] == expected


def test_states_show_json_gives_each_row_as_the_api_does_with_names(runner, shown):
    rows = json_output(cli(runner, "states", "show", "my-bot", "--ticker", "MSFT", "--json"))
    assert [(r["accountName"], r["tickerSymbol"], r["state"], r["version"]) for r in rows] == [
        ("Alice", "MSFT", shown, 1)
    ]
    assert set(rows[0]) >= {"id", "botId", "userBrokerAccountId", "tickerId", "createdAt", "updatedAt"}


def test_states_show_says_when_more_rows_than_the_limit(runner, shown):
    result = cli(runner, "states", "show", "my-bot", "--limit", "2")
    assert len(text_output(result).splitlines()) == 3
    assert "(first 2 rows; --limit shows more)" in result.stderr


def test_states_show_is_bounded_by_its_limit_not_by_the_api_page_bytes(runner, storage, bot):
    # Review of issue 13: states show got 70 of 100 large states, cut by BOTSTATE_MAX_PAGE_BYTES, and said "first 100".
    accounts = [str(uuid.UUID(int=index + 1)) for index in range(100)]
    for account in accounts:
        storage.add_account(account, None)
    storage.add_ticker("AAPL", TICKER_AAPL)
    writes = [StateWrite(account, TICKER_AAPL, '{"p":"%s"}' % ("x" * 60_000)) for account in accounts]
    storage.write_states(Credentials(bot["id"], bot["keyHash"]), writes, max_state_bytes=65536)
    assert len(json_output(cli(runner, "states", "show", "my-bot", "--limit", "100", "--json"))) == 100


@JSON_OR_TEXT
@pytest.mark.parametrize(
    "args,fragment",
    (
        (["no-such-bot"], "Bot 'no-such-bot' not found"),
        (["my-bot", "--ticker", "NOPE"], "no ticker 'NOPE'"),
        (["my-bot", "--account", "alice"], "--account: 'alice' is not a UUID"),
    ),
    ids=("unknown bot", "unknown symbol", "account not a uuid"),
)
def test_states_show_errors_name_what_is_wrong(runner, shown, args, fragment, json_flag):
    assert_error(cli(runner, "states", "show", *args, *json_flag), fragment)


def test_states_show_with_nothing_stored_says_so(runner, bot):
    assert text_output(cli(runner, "states", "show", "my-bot")).strip() == "No states for bot my-bot yet."


@pytest.mark.parametrize(
    "seconds,shown_as",
    (
        (0, "just now"),
        (0.9, "just now"),
        (42, "42s ago"),
        (60, "1m ago"),
        (3599, "59m ago"),
        (7200, "2h ago"),
        (3 * 86400 + 5, "3d ago"),
    ),
)
def test_ages_are_in_the_largest_whole_unit(seconds, shown_as):
    from cli.states import age

    assert age("2026-01-01T00:00:00.000Z", 1767225600 + seconds) == shown_as


@pytest.mark.parametrize(
    "args, named",
    [
        (["admin-keys", "create", "\udcff"], "NAME"),
        (["admin-keys", "revoke", "\udcff"], "NAME"),
        (["bots", "keys", "\udcff"], "SLUG"),
        (["bots", "create", "ok", "--name", "a\udcff"], "--name"),
        (["tickers", "delete", "\udcff", "--yes"], "TICKER"),
        (["accounts", "add", "--name", "\udcff"], "--name"),
        (["states", "show", "my-bot", "--ticker", "\udcff"], "--ticker"),
    ],
    ids=[
        "admin-key-create",
        "admin-key-revoke",
        "bots-keys",
        "bots-create-name",
        "tickers-delete",
        "accounts-add",
        "states-show",
    ],
)
@BACKEND_INDEPENDENT
def test_an_argument_that_is_not_utf8_is_one_usage_error_naming_it(runner, storage, args, named):
    """Bytes a terminal sends that are not UTF-8 (held as lone surrogates) never reach the database."""
    before = database_bytes(storage)
    result = cli(runner, *args)
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert result.stderr.startswith(f"Error: {named} is not UTF-8 text.") and result.stderr.count("\n") == 1
    assert database_bytes(storage) == before
